package registry

import (
	"context"
	"testing"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/channel"
)

// trio runs three registries over an in-memory channel network.
type trio map[heartbeat.NodeID]*Registry

func newTrio(t *testing.T, net *channel.MemNetwork) trio {
	tr := trio{}
	for _, id := range three {
		tr.start(t, net, id, 1)
	}
	return tr
}

func (tr trio) start(t *testing.T, net *channel.MemNetwork, id heartbeat.NodeID, run uint64) {
	ch := channel.New(channel.Config{Cluster: "c", Self: id, Key: []byte("a registry test key, 16+"), Nodes: three}, net.Endpoint(id))
	r, err := New(Options{Config: Config{Self: id, Nodes: three, Preferred: "n1", Addresses: addrs, RejoinHold: time.Minute},
		Dir: t.TempDir(), Net: ch, Run: run, Timeout: time.Second,
		View: func() map[heartbeat.NodeID]heartbeat.NodeState {
			return map[heartbeat.NodeID]heartbeat.NodeState{"n1": alive, "n2": alive, "n3": alive}
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ch.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	r.SetCaughtUp()
	tr[id] = r
}

// TestReportAboutAnEarlierRunIsStale: n2's send to n3 fails while n3 is
// down; before n2's report reaches the coordinator, n3 restarts and
// registers its new run. The report is about the run that is gone: it
// must not hold the restarted n3 Failed (the services lab's "n1 back as
// coordinator" flake: the restarted n1 was held Failed for 30 s).
func TestReportAboutAnEarlierRunIsStale(t *testing.T) {
	net := channel.NewMemNetwork()
	tr := newTrio(t, net)
	ctx := context.Background()
	tr["n1"].step(ctx) // builds the table (n1 -> n2 -> n3 -> n1) and sends it
	for _, id := range three {
		if err := tr[id].Register(ctx); err != nil {
			t.Fatal(err)
		}
	}
	tr["n1"].step(ctx) // every node has n3's run 1
	if r3, _ := tr["n2"].Table().Row("n3"); r3.Run != 1 {
		t.Fatalf("n2's table has n3's run %d", r3.Run)
	}
	tr.start(t, net, "n3", 2) // n3 restarts and catches up
	tr["n3"].PullTables(ctx)
	if err := tr["n3"].Register(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tr["n2"].ReportTargetFailed(ctx, "n3"); err != nil { // n2 still knows run 1
		t.Fatal(err)
	}
	if r3, _ := tr["n1"].Table().Row("n3"); r3.State != heartbeat.Normal {
		t.Fatalf("the restarted n3 (run 2) is %s on a report about its run 1", r3.State)
	}
}
