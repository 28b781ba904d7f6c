package registry

import (
	"testing"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

var (
	three = []heartbeat.NodeID{"n1", "n2", "n3"}
	addrs = map[heartbeat.NodeID][]string{"n1": {"10.0.1.1"}, "n2": {"10.0.1.2"}, "n3": {"10.0.1.3"}}
	t0    = time.Unix(1000, 0)
)

type view = map[heartbeat.NodeID]heartbeat.NodeState

const (
	alive   = heartbeat.NodeAlive
	dead    = heartbeat.NodeDead
	unknown = heartbeat.NodeUnknown
)

func machine(self heartbeat.NodeID, failback bool, saved Table) *Machine {
	m := NewMachine(Config{Self: self, Nodes: three, Preferred: "n1", Addresses: addrs, Failback: failback}, saved)
	m.SetCaughtUp(true)
	return m
}

func step(m *Machine, v view) Ready {
	m.SetView(v)
	m.Tick(t0)
	return m.Ready()
}

func targets(t Table) map[heartbeat.NodeID]heartbeat.NodeID {
	out := map[heartbeat.NodeID]heartbeat.NodeID{}
	for _, n := range t.Nodes {
		out[n.ID] = n.BackupTarget
	}
	return out
}

func TestBuildWaitsForUnknownAndFirstRankBuilds(t *testing.T) {
	m1 := machine("n1", false, Table{})
	if rd := step(m1, view{"n2": unknown, "n3": alive}); rd.Changed {
		t.Fatal("built while a node's fate is unknown")
	}
	m2 := machine("n2", false, Table{})
	if rd := step(m2, view{"n1": alive, "n3": alive}); rd.Changed {
		t.Fatal("n2 built although n1 ranks first")
	}
	rd := step(m1, view{"n2": alive, "n3": alive})
	tb := m1.Table()
	if !rd.Changed || tb.Coordinator != "n1" || tb.Term != 1 || tb.Version != 1 {
		t.Fatalf("table %+v", tb)
	}
	if tg := targets(tb); tg["n1"] != "n2" || tg["n2"] != "n3" || tg["n3"] != "n1" {
		t.Fatalf("ring %v", tg)
	}
	if !m2.Receive(tb) || m2.Receive(tb) {
		t.Fatal("Receive does not take exactly the newer table")
	}
}

func TestNotCaughtUpDecidesNothing(t *testing.T) {
	m := NewMachine(Config{Self: "n1", Nodes: three, Preferred: "n1", Addresses: addrs}, Table{})
	if rd := step(m, view{"n2": alive, "n3": alive}); rd.Changed {
		t.Fatal("a node that has not caught up built a table")
	}
}

func TestTargetFailedReassignsToTheTargetsTarget(t *testing.T) {
	m := machine("n1", false, Table{})
	m.cfg.RejoinHold = time.Minute
	step(m, view{"n2": alive, "n3": alive})
	m.Register(Registration{ID: "n3", Run: 7}, t0)
	// n1 -> n2 -> n3 -> n1; n2 reports n3 failed.
	if err := m.TargetFailed("n2", "n3", 0, t0); err != nil {
		t.Fatal(err)
	}
	tb := m.Table()
	r3, _ := tb.Row("n3")
	if r3.State != heartbeat.Failed || targets(tb)["n2"] != "n1" || targets(tb)["n3"] != "n1" {
		t.Fatalf("after the report: %+v", tb.Nodes)
	}
	if r2, _ := tb.Row("n2"); r2.BackupAddr != "10.0.1.1" {
		t.Errorf("backup target IP %q", r2.BackupAddr)
	}
	// n3 stays Failed while alive until it registers again, and not
	// within the hold while it runs the same run.
	step(m, view{"n2": alive, "n3": alive})
	m.Register(Registration{ID: "n3", Run: 7}, t0.Add(30*time.Second))
	if r3, _ := m.Table().Row("n3"); r3.State != heartbeat.Failed {
		t.Fatal("a reported target came back within the hold")
	}
	if err := m.Register(Registration{ID: "n3", Run: 7, Storage: Storage{Location: "/var/lib/hamirror", Free: 5}}, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	tb = m.Table()
	if r3, _ := tb.Row("n3"); r3.State != heartbeat.Normal || r3.Storage.Free != 5 || targets(tb)["n2"] != "n3" {
		t.Fatalf("after the hold: %+v", tb.Nodes)
	}
	// Reported again; n3 restarts (a new run) within the hold: Normal at once.
	m.TargetFailed("n2", "n3", 0, t0.Add(61*time.Second))
	m.Register(Registration{ID: "n3", Run: 8}, t0.Add(62*time.Second))
	if r3, _ := m.Table().Row("n3"); r3.State != heartbeat.Normal {
		t.Fatal("a restarted node waited for the hold")
	}
	// Reported, then dead: no hold after its restart either.
	m.TargetFailed("n2", "n3", 0, t0.Add(63*time.Second))
	step(m, view{"n2": alive, "n3": dead})
	m.SetView(view{"n2": alive, "n3": alive})
	m.Register(Registration{ID: "n3", Run: 8}, t0.Add(64*time.Second))
	if r3, _ := m.Table().Row("n3"); r3.State != heartbeat.Normal {
		t.Fatal("a reported node that died waited for the hold")
	}
	// A stale report (the table moved on) changes nothing.
	v := m.Table().Version
	m.TargetFailed("n2", "n1", 0, t0)
	if m.Table().Version != v {
		t.Error("a stale report changed the table")
	}
}

func TestDeadNodeFailedAndCoordinatorTakeOverThenHandback(t *testing.T) {
	for _, failback := range []bool{false, true} {
		m1 := machine("n1", failback, Table{})
		step(m1, view{"n2": alive, "n3": alive})
		tb := m1.Table()
		m2 := machine("n2", failback, tb)
		m3 := machine("n3", failback, tb)
		// n1 dies: n2 ranks first among the live nodes and takes over.
		if rd := step(m3, view{"n1": dead, "n2": alive}); rd.Changed {
			t.Fatal("n3 took over although n2 ranks first")
		}
		rd := step(m2, view{"n1": dead, "n3": alive})
		tb2 := m2.Table()
		r1, _ := tb2.Row("n1")
		if !rd.Changed || tb2.Coordinator != "n2" || tb2.Term != 2 || r1.State != heartbeat.Failed || targets(tb2)["n3"] != "n2" {
			t.Fatalf("take-over: %+v", tb2)
		}
		// n1 returns with its old table: it learns the new one first.
		back := NewMachine(Config{Self: "n1", Nodes: three, Preferred: "n1", Addresses: addrs, Failback: failback}, tb)
		if rd := step(back, view{"n2": alive, "n3": alive}); rd.Changed || rd.Handback {
			t.Fatal("a node that has not caught up acted")
		}
		back.Receive(tb2)
		back.SetCaughtUp(true)
		step(m2, view{"n1": alive, "n3": alive})
		if r1, _ := m2.Table().Row("n1"); r1.State != heartbeat.Failed {
			t.Fatal("n1 is Normal again before it registered")
		}
		if err := m2.Register(Registration{ID: "n1"}, t0); err != nil {
			t.Fatal(err)
		}
		back.Receive(m2.Table())
		rd = step(back, view{"n2": alive, "n3": alive})
		if rd.Handback != failback {
			t.Fatalf("failback %v: handback request %v", failback, rd.Handback)
		}
		if back.IsCoordinator() {
			t.Fatal("the returning node took the role without a handback")
		}
		if failback {
			if err := m2.Handback("n1"); err != nil {
				t.Fatal(err)
			}
			back.Receive(m2.Table())
			if !back.IsCoordinator() || back.Table().Term != 3 {
				t.Fatalf("after handback: %+v", back.Table())
			}
		}
	}
}

func TestRemoveReassignsAndRefusesRegistration(t *testing.T) {
	m := machine("n1", false, Table{})
	step(m, view{"n2": alive, "n3": alive})
	if err := m.Remove("n3"); err != nil {
		t.Fatal(err)
	}
	tb := m.Table()
	if _, ok := tb.Row("n3"); ok || len(tb.Nodes) != 2 {
		t.Fatalf("n3 still in the table: %+v", tb.Nodes)
	}
	if tg := targets(tb); tg["n2"] != "n1" || tg["n1"] != "n2" {
		t.Fatalf("targets after removal %v", tg)
	}
	if rm, ok := tb.IsRemoved("n3"); !ok || rm.BackupTarget != "n1" {
		t.Fatalf("removed list %+v", tb.Removed)
	}
	if err := m.Register(Registration{ID: "n3"}, t0); err == nil {
		t.Error("a removed node registered")
	}
	if err := m.Remove("n1"); err == nil {
		t.Error("the coordinator removed itself")
	}
	step(m, view{"n2": alive, "n3": dead})
	if len(m.Table().Nodes) != 2 {
		t.Error("a removed node came back into the table")
	}
}

func TestRemoveFailedNodesTargetMovesTheirData(t *testing.T) {
	m := machine("n1", false, Table{})
	step(m, view{"n2": alive, "n3": alive})
	step(m, view{"n2": alive, "n3": dead}) // n3 Failed; its data stays on n1 (its target)
	if r3, _ := m.Table().Row("n3"); r3.State != heartbeat.Failed || r3.BackupTarget != "n1" {
		t.Fatalf("n3 %+v", r3)
	}
	if err := m.Remove("n2"); err != nil {
		t.Fatal(err)
	}
	tb := m.Table()
	if targets(tb)["n1"] != "" || targets(tb)["n3"] != "n1" {
		t.Fatalf("targets %v", targets(tb))
	}
}

func TestSplitTablesConverge(t *testing.T) {
	a := Table{Term: 2, Version: 5, Coordinator: "n2"}
	b := Table{Term: 2, Version: 5, Coordinator: "n3"}
	m := machine("n1", false, Table{})
	if !a.Newer(b, m.Before) || b.Newer(a, m.Before) {
		t.Fatal("equal term and version: the first-ranked coordinator must win")
	}
	if !(Table{Term: 3, Version: 1}).Newer(a, m.Before) {
		t.Fatal("a newer term must win over a higher version")
	}
}

// TestFailedReporterIsNotActedOn: n1 cannot send to n2, so n2 is Failed;
// n2's own sends fail too (its links are the suspect: a cut on n2's side
// heals a moment later and its queued report arrives). Its report must
// not mark its healthy target n3 Failed for the whole hold.
func TestFailedReporterIsNotActedOn(t *testing.T) {
	m := machine("n1", false, Table{})
	m.cfg.RejoinHold = time.Minute
	step(m, view{"n2": alive, "n3": alive})
	if err := m.TargetFailed("n1", "n2", 0, t0); err != nil {
		t.Fatal(err)
	}
	if err := m.TargetFailed("n2", "n3", 0, t0); err != nil {
		t.Fatal(err)
	}
	if r3, _ := m.Table().Row("n3"); r3.State != heartbeat.Normal {
		t.Fatalf("n3 marked %s on the report of n2, itself Failed", r3.State)
	}
}
