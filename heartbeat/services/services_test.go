package services

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/channel"
	"github.com/hamirror/hamirror/heartbeat/registry"
	"github.com/hamirror/hamirror/heartbeat/traffic"
)

// world is three nodes' services in one process over an in-memory
// network. Membership is scripted: a stand-in for heartbeat here, where
// the test decides who is dead; the netns test (cmd/mirrord) runs the real
// heartbeat between real processes.
type world struct {
	t     *testing.T
	net   *channel.MemNetwork
	cfg   heartbeat.Config
	dirs  map[heartbeat.NodeID]string
	svc   map[heartbeat.NodeID]*Services
	mu    sync.Mutex
	state map[heartbeat.NodeID]heartbeat.NodeState // as every node sees it
}

type membership struct {
	w    *world
	self heartbeat.NodeID
}

func (m membership) Status() heartbeat.Status {
	m.w.mu.Lock()
	defer m.w.mu.Unlock()
	st := heartbeat.Status{Self: m.self}
	for _, n := range m.w.cfg.Nodes {
		ns := heartbeat.NodeStatus{ID: n.ID, State: m.w.state[n.ID], Self: n.ID == m.self}
		if ns.Self {
			ns.State = heartbeat.NodeAlive
		}
		st.Nodes = append(st.Nodes, ns)
	}
	return st
}

type counting struct{ n int }

func (c *counting) Sample() ([]traffic.Counters, error) {
	c.n++
	return []traffic.Counters{{Name: "eth1", RxBytes: uint64(c.n)}}, nil
}

func newWorld(t *testing.T, failback bool) *world {
	w := &world{t: t, net: channel.NewMemNetwork(), dirs: map[heartbeat.NodeID]string{}, svc: map[heartbeat.NodeID]*Services{},
		state: map[heartbeat.NodeID]heartbeat.NodeState{}}
	w.cfg = heartbeat.DefaultConfig()
	w.cfg.Cluster, w.cfg.Preferred = "w", "n1"
	for i := 1; i <= 3; i++ {
		id := heartbeat.NodeID(fmt.Sprintf("n%d", i))
		w.cfg.Nodes = append(w.cfg.Nodes, heartbeat.Node{ID: id, Address: fmt.Sprintf("192.0.2.%d", i)})
		w.dirs[id] = t.TempDir()
		w.state[id] = heartbeat.NodeAlive
	}
	for _, n := range w.cfg.Nodes {
		w.start(n.ID, failback)
	}
	t.Cleanup(func() {
		for _, s := range w.svc {
			s.Stop()
		}
	})
	return w
}

func (w *world) start(id heartbeat.NodeID, failback bool) {
	c := w.cfg
	c.Self = id
	sc := DefaultConfig()
	sc.Dir, sc.LogTimeout, sc.SyncInterval, sc.TrafficInterval, sc.CoordinatorFailback = w.dirs[id], 500*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond, failback
	s, err := New(Options{Cluster: c, Key: []byte("key for the world test"), Config: sc, Membership: membership{w, id},
		Transport: w.net.Endpoint(id), Sampler: &counting{}, Logf: func(f string, a ...any) { w.t.Logf(string(id)+": "+f, a...) }})
	if err != nil {
		w.t.Fatal(err)
	}
	s.Start(context.Background())
	w.svc[id] = s
}

func (w *world) kill(id heartbeat.NodeID) {
	w.svc[id].Stop()
	delete(w.svc, id)
	w.net.Isolate(id, true, []heartbeat.NodeID{"n1", "n2", "n3"})
	w.mu.Lock()
	w.state[id] = heartbeat.NodeDead
	w.mu.Unlock()
}

func (w *world) revive(id heartbeat.NodeID, failback bool) {
	w.net.Isolate(id, false, []heartbeat.NodeID{"n1", "n2", "n3"})
	w.mu.Lock()
	w.state[id] = heartbeat.NodeAlive
	w.mu.Unlock()
	w.start(id, failback)
}

func (w *world) eventually(what string, ok func() bool) {
	w.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			w.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (w *world) table(id heartbeat.NodeID) registry.Table { return w.svc[id].Registry().Table() }

func TestCoordinatorHandOverCatchUpAndFailback(t *testing.T) {
	w := newWorld(t, true)
	w.eventually("n1 builds the table and everyone registers", func() bool {
		for _, id := range []heartbeat.NodeID{"n1", "n2", "n3"} {
			tb := w.table(id)
			if tb.Coordinator != "n1" {
				return false
			}
			for _, n := range tb.Nodes {
				if n.Registered.IsZero() || n.Storage.Location == "" {
					return false
				}
			}
		}
		return true
	})
	w.kill("n1")
	w.eventually("n2 takes over and marks n1 Failed", func() bool {
		tb := w.table("n3")
		r1, _ := tb.Row("n1")
		r3, _ := tb.Row("n3")
		return tb.Coordinator == "n2" && r1.State == heartbeat.Failed && r3.BackupTarget == "n2"
	})
	w.svc["n2"].Log().Info("test", "while n1 was away")
	w.revive("n1", true)
	w.eventually("n1 catches up, is Normal and takes the role back", func() bool {
		tb := w.table("n3")
		r1, _ := tb.Row("n1")
		return w.svc["n1"].CaughtUp() && tb.Coordinator == "n1" && r1.State == heartbeat.Normal && tb.Term == 3
	})
	es, _ := w.svc["n1"].Log().Entries()
	found := false
	for _, e := range es {
		found = found || e.Message == "while n1 was away"
	}
	if !found {
		t.Fatal("the returning coordinator did not catch up on the log")
	}
}

func TestRemoveNodeReSendsSoTwoCopiesAgain(t *testing.T) {
	w := newWorld(t, false)
	w.eventually("table", func() bool { return w.table("n3").Version > 0 && w.table("n3").Coordinator == "n1" })
	w.eventually("n2's samples on n3", func() bool { return w.svc["n3"].Traffic().Held()["n2"] > 2 })
	h := w.svc["n2"].Handlers()["node-remove"]
	if _, err := h([]byte(`{"id":"n3"}`)); err != nil {
		t.Fatal(err)
	}
	w.eventually("n2 backs up to n1 and n1 holds all of n2's data", func() bool {
		r2, _ := w.table("n2").Row("n2")
		held := w.svc["n1"].Traffic().Held()["n2"]
		own := w.svc["n2"].Traffic().Held()["n2"]
		return r2.BackupTarget == "n1" && held > 0 && held+2 >= own
	})
	if _, err := w.svc["n2"].Handlers()["traffic"]([]byte(`{"node":"n3"}`)); err != nil {
		t.Errorf("traffic of the removed node: %v", err)
	}
	res, err := w.svc["n1"].Handlers()["log"]([]byte(`{}`))
	if err != nil || !strings.Contains(fmt.Sprint(res), "removed for good") {
		t.Errorf("the removal is not in n1's management log: %v", err)
	}
}

// TestFailedSendReportedAndReassigned: n2 cannot reach its backup target
// n3 (that one link is cut; membership still sees everyone alive), so it
// reports n3 to the coordinator (R9), which marks n3 Failed, gives n2 n3's
// own target n1 and sends the table to every node; n2 re-sends all its
// data to n1.
func TestFailedSendReportedAndReassigned(t *testing.T) {
	w := newWorld(t, false)
	w.eventually("n3 holds n2's samples", func() bool { return w.svc["n3"].Traffic().Held()["n2"] > 2 })
	w.net.Cut("n2", "n3", true)
	w.eventually("n3 Failed on every node, n2 backing up to n1", func() bool {
		for _, id := range []heartbeat.NodeID{"n1", "n2", "n3"} {
			tb := w.table(id)
			r3, _ := tb.Row("n3")
			r2, _ := tb.Row("n2")
			if r3.State != heartbeat.Failed || r2.BackupTarget != "n1" {
				return false
			}
		}
		return true
	})
	w.eventually("n1 holds every sample of n2", func() bool {
		return w.svc["n1"].Traffic().Held()["n2"]+2 >= w.svc["n2"].Traffic().Held()["n2"]
	})
	es, _ := w.svc["n3"].Log().Entries()
	found := false
	for _, e := range es {
		found = found || strings.Contains(e.Message, "n2 reports its backup target n3 failed")
	}
	if !found {
		t.Error("the re-assignment is not in the management log")
	}
	time.Sleep(time.Second)
	if r3, _ := w.table("n1").Row("n3"); r3.State != heartbeat.Failed {
		t.Error("n3 came back within the rejoin hold although n2 still cannot reach it")
	}
}
