package traffic

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/channel"
	"github.com/hamirror/hamirror/heartbeat/registry"
)

// fakeSampler counts up, so samples differ.
type fakeSampler struct {
	mu sync.Mutex
	n  uint64
}

func (f *fakeSampler) Sample() ([]Counters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	return []Counters{{Name: "eth1", RxBytes: 1000 * f.n, TxPackets: f.n}, {Name: "eth2", RxDropped: f.n}}, nil
}

type trio struct {
	t       *testing.T
	net     *channel.MemNetwork
	svc     map[heartbeat.NodeID]*Service
	dirs    map[heartbeat.NodeID]string
	mu      sync.Mutex
	table   registry.Table
	reports []string
}

var ids = []heartbeat.NodeID{"n1", "n2", "n3"}

func ring() registry.Table {
	h := heartbeat.BuildTable(ids, map[heartbeat.NodeID][]string{"n1": {"a1"}, "n2": {"a2"}, "n3": {"a3"}}, "n1", 1)
	t := registry.Table{Term: 1, Version: 1, Coordinator: "n1"}
	for _, r := range h.Rows {
		t.Nodes = append(t.Nodes, registry.Node{Row: r})
	}
	return t
}

func newTrio(t *testing.T) *trio {
	tr := &trio{t: t, net: channel.NewMemNetwork(), svc: map[heartbeat.NodeID]*Service{}, dirs: map[heartbeat.NodeID]string{}, table: ring()}
	for _, id := range ids {
		tr.dirs[id] = t.TempDir()
		tr.start(id)
	}
	return tr
}

func (tr *trio) start(id heartbeat.NodeID) {
	ch := channel.New(channel.Config{Cluster: "c", Self: id, Key: []byte("a test key, 16+ bytes"), Nodes: ids, CallTimeout: time.Second}, tr.net.Endpoint(id))
	s, err := New(Options{Self: id, Dir: tr.dirs[id], Net: ch, Sampler: &fakeSampler{}, Timeout: time.Second,
		Table: func() registry.Table { tr.mu.Lock(); defer tr.mu.Unlock(); return tr.table.Clone() },
		ReportFailed: func(_ context.Context, target heartbeat.NodeID) error {
			tr.mu.Lock()
			tr.reports = append(tr.reports, fmt.Sprintf("%s:%s", id, target))
			tr.mu.Unlock()
			return nil
		}})
	if err != nil {
		tr.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ch.Serve(ctx); close(done) }()
	tr.t.Cleanup(func() { cancel(); <-done })
	tr.svc[id] = s
}

func (tr *trio) sample(id heartbeat.NodeID, n int) {
	for range n {
		if _, err := tr.svc[id].SampleNow(); err != nil {
			tr.t.Fatal(err)
		}
	}
}

func (tr *trio) setTable(f func(*registry.Table)) {
	tr.mu.Lock()
	f(&tr.table)
	tr.table.Version++
	tr.mu.Unlock()
}

func TestStreamsToTargetAndQueryFollowsState(t *testing.T) {
	tr := newTrio(t)
	ctx := context.Background()
	tr.sample("n2", 5)
	tr.svc["n2"].Push(ctx) // n2 backs up to n3
	if h := tr.svc["n3"].Held()["n2"]; h != 5 {
		t.Fatalf("n3 holds %d of n2's samples, want 5", h)
	}
	a, err := tr.svc["n1"].Query(ctx, "n2", time.Time{}, 0)
	if err != nil || a.State != "Normal" || a.Source != "n2" || len(a.Samples) != 5 || a.Samples[4].Ifaces[0].RxBytes != 5000 {
		t.Fatalf("query while Normal: %+v %v", a, err)
	}
	// n2 dies; the coordinator marks it Failed: n3 answers for it.
	tr.net.Isolate("n2", true, ids)
	tr.setTable(func(t *registry.Table) { t.Fail("n2") })
	a, err = tr.svc["n1"].Query(ctx, "n2", time.Time{}, 0)
	if err != nil || a.State != "Failed" || a.Source != "n3" || len(a.Samples) != 5 {
		t.Fatalf("query while Failed: %+v %v", a, err)
	}
	a, _ = tr.svc["n1"].Query(ctx, "n2", time.Time{}, 2)
	if len(a.Samples) != 2 || a.Samples[1].Seq != 5 {
		t.Errorf("limit keeps the newest: %+v", a.Samples)
	}
}

func TestNormalButSilentNodeAnsweredByBackup(t *testing.T) {
	tr := newTrio(t)
	ctx := context.Background()
	tr.sample("n2", 2)
	tr.svc["n2"].Push(ctx)
	tr.net.Isolate("n2", true, ids)
	a, err := tr.svc["n1"].Query(ctx, "n2", time.Time{}, 0)
	if err != nil || a.State != "Normal" || a.Source != "n3" || a.Note == "" || len(a.Samples) != 2 {
		t.Fatalf("%+v %v", a, err)
	}
}

func TestFailedTargetReportedAndNewTargetGetsEverything(t *testing.T) {
	tr := newTrio(t)
	ctx := context.Background()
	tr.sample("n1", 3)
	tr.svc["n1"].Push(ctx) // n1 -> n2
	tr.net.Isolate("n2", true, ids)
	tr.sample("n1", 2)
	tr.svc["n1"].Push(ctx)
	tr.svc["n1"].Push(ctx)
	if len(tr.reports) != 1 || tr.reports[0] != "n1:n2" {
		t.Fatalf("reports %v, want one n1:n2", tr.reports)
	}
	tr.setTable(func(t *registry.Table) { t.Fail("n2") }) // as the coordinator does: n1 -> n3
	tr.svc["n1"].Push(ctx)
	if h := tr.svc["n3"].Held()["n1"]; h != 5 {
		t.Fatalf("new target n3 holds %d of n1's samples, want all 5", h)
	}
}

func TestHandOffFailedNodesDataWhenItsTargetMoves(t *testing.T) {
	tr := newTrio(t)
	ctx := context.Background()
	tr.sample("n3", 4)
	tr.svc["n3"].Push(ctx) // n3 -> n1
	tr.net.Isolate("n3", true, ids)
	tr.setTable(func(t *registry.Table) { t.Fail("n3") })
	tr.setTable(func(t *registry.Table) { t.Remove("n1") }) // n1 leaves for good; n3's data must move
	if r, _ := tr.table.Row("n3"); r.BackupTarget != "n2" {
		t.Fatalf("n3's target after removal: %+v", r)
	}
	tr.svc["n1"].Push(ctx)
	if h := tr.svc["n2"].Held()["n3"]; h != 4 {
		t.Fatalf("n2 holds %d of failed n3's samples, want 4", h)
	}
	a, err := tr.svc["n2"].Query(ctx, "n3", time.Time{}, 0)
	if err != nil || a.Source != "n2" || a.State != "Failed" {
		t.Fatalf("%+v %v", a, err)
	}
	a, err = tr.svc["n2"].Query(ctx, "n1", time.Time{}, 0)
	if err != nil || a.State != "Removed" || a.Source != "n2" {
		t.Fatalf("removed node's data: %+v %v", a, err)
	}
}

func TestCatchUpPullsWhatTheReturningNodeMissed(t *testing.T) {
	tr := newTrio(t)
	ctx := context.Background()
	tr.sample("n1", 2)
	tr.svc["n1"].Push(ctx)
	tr.sample("n1", 3) // n2 was away for these
	if err := tr.svc["n2"].CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if h := tr.svc["n2"].Held()["n1"]; h != 5 {
		t.Fatalf("after catch-up n2 holds %d, want 5", h)
	}
}

func TestTornTailCutAndSequenceGoesOn(t *testing.T) {
	tr := newTrio(t)
	tr.sample("n1", 3)
	path := filepath.Join(tr.dirs["n1"], "n1.dat")
	b, _ := os.ReadFile(path)
	rec, _ := AppendRecord(nil, Sample{Node: "n1", Seq: 4, Time: time.Now(), Ifaces: []Counters{{Name: "eth1"}}})
	os.WriteFile(path, append(b, rec[:len(rec)-1]...), 0o640)
	tr.start("n1")
	if fi, _ := os.Stat(path); fi.Size() != int64(len(b)) {
		t.Fatalf("torn tail not cut: %d bytes, want %d", fi.Size(), len(b))
	}
	s, err := tr.svc["n1"].SampleNow()
	if err != nil || s.Seq != 4 {
		t.Fatalf("next sample %d %v", s.Seq, err)
	}
}

// TestFailedNodeDoesNotReportItsTarget: n2 sees itself Failed (another
// node could not reach it: its own links are the suspect) and cannot send
// to n3 either, as while its cable is pulled. It must not report n3: the
// report, delivered once n2's link heals, would hold the healthy n3
// Failed (the services lab's "n1 sees n3 Failed" flake).
func TestFailedNodeDoesNotReportItsTarget(t *testing.T) {
	tr := newTrio(t)
	ctx := context.Background()
	tr.setTable(func(t *registry.Table) { t.Fail("n2") }) // n1 reported n2; n2 keeps its target n3
	tr.net.Isolate("n2", true, ids)
	tr.sample("n2", 2)
	tr.svc["n2"].Push(ctx)
	tr.svc["n2"].Push(ctx)
	if len(tr.reports) != 0 {
		t.Fatalf("a Failed node reported its target: %v", tr.reports)
	}
}
