package peers

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/hamirror/hamirror/testenv/halab"
)

// TestPacemakerFencesThenMovesTheGroupWithoutLosingCommits kills the node
// running the group (token 1000): the survivor loses the token, fences the
// dead node through fence_halab and the lab's power switch, then starts
// fs, vip and db in that order; the client is served again and every row
// it saw acknowledged is on the shared volume. The dead node then rejoins
// as a standby.
func TestPacemakerFencesThenMovesTheGroupWithoutLosingCommits(t *testing.T) {
	l := halab.ForTest(t, halab.Options{Name: "pm", Arrays: -1, Private: PacemakerPrivate(), Overlay: PacemakerOverlay()}, PacemakerAvailable)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p := &Pacemaker{Token: 1000}
	if err := p.Setup(ctx, l); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(ctx)
	res, err := halab.Campaign{Lab: l, System: p, Fault: halab.FaultKill, Runs: 1, GiveUp: time.Minute, Logf: t.Logf}.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Runs[0]
	if !r.Recovered || r.Victim != "n1" || r.Survivor != "n2" {
		t.Fatalf("run %+v: want n1 killed and the client served again by n2", r)
	}
	if len(r.Lost) != 0 || r.Committed == 0 {
		t.Fatalf("%d of %d acknowledged rows lost", len(r.Lost), r.Committed)
	}
	var names []string
	last := time.Duration(0)
	for _, ph := range r.Phases {
		names = append(names, ph.Name)
		if ph.At < last {
			t.Errorf("phase %s at %v comes before the previous one (%v)", ph.Name, ph.At, last)
		}
		last = ph.At
	}
	want := []string{"token lost", "membership without victim", "victim fenced", "fs started", "vip started", "db started"}
	if !slices.Equal(names, want) {
		t.Fatalf("phases %v, want %v", names, want)
	}
	fenced := false
	for _, ev := range l.PowerEvents() {
		fenced = fenced || (ev.Action == "off" && ev.Node == "n1" && ev.Err == nil)
	}
	if !fenced {
		t.Fatalf("power switch events %v: want n1 switched off by the fence agent", l.PowerEvents())
	}
	t.Logf("outage %v; phases %v", r.Outage.Duration, r.Phases)
}
