package peers

import (
	"context"
	"testing"
	"time"

	"github.com/hamirror/hamirror/testenv/halab"
)

// TestKeepalivedMovesTheVIPAndLosesTheDeadNodesCommits kills the master
// twice (so both nodes take over once): the VIP moves within a second with
// advert_int 0.01, the client is served again, and the rows the dead node
// acknowledged are missing on the survivor's own database, which is what a
// VIP alone gives.
func TestKeepalivedMovesTheVIPAndLosesTheDeadNodesCommits(t *testing.T) {
	l := halab.ForTest(t, halab.Options{Name: "ka", Arrays: -1}, KeepalivedAvailable)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k := &Keepalived{AdvertInt: "0.01"}
	if err := k.Setup(ctx, l); err != nil {
		t.Fatal(err)
	}
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer k.Stop(ctx)
	res, err := halab.Campaign{Lab: l, System: k, Fault: halab.FaultKill, Runs: 2, GiveUp: 20 * time.Second, Logf: t.Logf}.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	victims := map[string]bool{}
	for i, r := range res.Runs {
		victims[r.Victim] = true
		if !r.Recovered {
			t.Fatalf("run %d: the client was not served again", i+1)
		}
		if r.VIP == 0 || r.VIP > r.Outage.FaultToService {
			t.Fatalf("run %d: VIP on %s after %v, client served after %v: the VIP must move first", i+1, r.Survivor, r.VIP, r.Outage.FaultToService)
		}
		if len(r.Lost) == 0 || len(r.Lost) >= r.Committed {
			t.Fatalf("run %d: %d of %d acknowledged rows lost; want those of the dead node only", i+1, len(r.Lost), r.Committed)
		}
	}
	if len(victims) != 2 {
		t.Fatalf("victims %v: the recovered node did not become the standby that takes over next", victims)
	}
}
