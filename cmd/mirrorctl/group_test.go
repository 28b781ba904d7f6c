package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hamirror/hamirror/resources/node"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/*.json from the pair lab and the .golden renderings")

// TestGroupCommandsOnARealPair drives the group's operator commands
// against two real nodes (pairLab): status on the active and the standby
// node, maintenance, resource restart, cleanup, standby of the wrong
// node, and move both ways (by move, and by standby/unstandby).
func TestGroupCommandsOnARealPair(t *testing.T) {
	l := newPairLab(t)
	_, rawA := l.waitFor("a", "running the group with a clean volume", runsHere)
	_, rawB := l.waitFor("b", "standby with a's volume knowledge", func(st node.Status) bool {
		return st.Group.State.String() == "stopped" && st.Peer != nil && st.Peer.Confirmed
	})
	if *updateGolden {
		writeTestdata(t, "node-active.json", rawA)
		writeTestdata(t, "node-standby.json", rawB)
	}
	if _, err := os.Stat(l.marks["a"]); err != nil {
		t.Fatalf("the app resource does not run on a: %v", err)
	}

	out, err := l.ctlOn("a", "status")
	if err != nil {
		t.Fatalf("status on the active node: %v\n%s", err, out)
	}
	for _, want := range []string{"this node a is active", "group on a: running", "app       exec    running  0/3",
		"volume ", "state:clean", "leg0 iscsi://", "SAFE: two in-sync copies", "GROUP", "stopped"} {
		if !strings.Contains(out, want) {
			t.Errorf("status on a lacks %q:\n%s", want, out)
		}
	}
	out, err = l.ctlOn("b", "status")
	if err != nil {
		t.Fatalf("status on the standby node (the group runs on a): %v\n%s", err, out)
	}
	for _, want := range []string{"this node b is standby", "group on b: stopped", "the group runs on a",
		"volume: not served on b", "peer volume knowledge: from a", "received in this run"} {
		if !strings.Contains(out, want) {
			t.Errorf("status on b lacks %q:\n%s", want, out)
		}
	}
	if out, err := l.ctlOn("a", "status", "--json"); err != nil || !strings.Contains(out, `"group": {`) || !strings.Contains(out, `"volume": {`) {
		t.Errorf("status --json on a: %v\n%s", err, out)
	}

	// Maintenance: resources are left alone; a restart is refused.
	// Each command shows the group as it left it.
	if out := mustCtl(t, l, "a", "maintenance", "on"); !strings.Contains(out, "MAINTENANCE: monitors and actions are paused on a") {
		t.Fatalf("maintenance on does not show the group in maintenance:\n%s", out)
	}
	l.waitFor("a", "in maintenance", func(st node.Status) bool { return st.Group.Maintenance })
	if out, err := l.ctlOn("a", "resource", "restart", "app"); err == nil || !strings.Contains(out+err.Error(), "maintenance off") {
		t.Errorf("restart in maintenance: %v\n%s", err, out)
	}
	if out, err := l.ctlOn("a", "maintenance", "sideways"); err == nil {
		t.Errorf("maintenance sideways accepted:\n%s", out)
	}
	mustCtl(t, l, "a", "maintenance", "off")

	// A failure is counted and shown; cleanup forgets it.
	os.Remove(l.marks["a"])
	st, raw := l.waitFor("a", "restarted app after its failure", func(st node.Status) bool {
		return runsHere(st) && st.Group.Resources[2].Failures == 1
	})
	if *updateGolden {
		writeTestdata(t, "node-failure.json", raw)
	}
	if st.Group.Resources[2].LastError == "" {
		t.Errorf("app's failure has no last error: %+v", st.Group.Resources[2])
	}
	if out := mustCtl(t, l, "a", "status"); !strings.Contains(out, "1/3") {
		t.Errorf("status does not show the failure count:\n%s", out)
	}
	if out, err := l.ctlOn("a", "cleanup", "nosuch"); err == nil || !strings.Contains(err.Error(), `no resource "nosuch"`) {
		t.Errorf("cleanup of an unknown resource: %v\n%s", err, out)
	}
	if out := mustCtl(t, l, "a", "cleanup", "app"); !strings.Contains(out, "app       exec    running  0/3") {
		t.Errorf("cleanup app does not show the failure forgotten:\n%s", out)
	}

	// The legs through the node: fail one (status exits 2), add it back,
	// wait for the resync. On the standby node they say where to run them.
	if out := mustCtl(t, l, "a", "leg", "fail", "1"); !strings.Contains(out, "ONE COPY ONLY") {
		t.Errorf("leg fail 1:\n%s", out)
	}
	_, raw = l.waitFor("a", "degraded", func(st node.Status) bool { return st.Volume != nil && st.Volume.State == "degraded" })
	if *updateGolden {
		writeTestdata(t, "node-degraded.json", raw)
	}
	if out, err := l.ctlOn("a", "status"); err != exitCode(2) || !strings.Contains(out, "disk:failed") {
		t.Errorf("status of a degraded volume: exit %v, want 2\n%s", err, out)
	}
	if out, err := l.ctlOn("b", "leg", "add", "1"); err == nil || !strings.Contains(err.Error(), "does not run on b") {
		t.Errorf("leg add on the standby node: %v\n%s", err, out)
	}
	mustCtl(t, l, "a", "leg", "add", "1")
	if out := mustCtl(t, l, "a", "resync", "--wait"); !strings.Contains(out, "in sync") {
		t.Errorf("resync --wait:\n%s", out)
	}

	// A stop that fails blocks the group; cleanup unblocks it once the
	// cause is gone.
	stuck := l.marks["a"] + "-stuck"
	os.WriteFile(stuck, nil, 0o644)
	mustCtl(t, l, "a", "resource", "restart", "app")
	_, raw = l.waitFor("a", "blocked by the failed stop", func(st node.Status) bool { return st.Group.State.String() == "blocked" })
	if *updateGolden {
		writeTestdata(t, "node-blocked.json", raw)
	}
	if out, err := l.ctlOn("a", "status"); err != exitCode(2) || !strings.Contains(out, "BLOCKED") || !strings.Contains(out, "mirrorctl cleanup") {
		t.Errorf("status of a blocked group: exit %v, want 2\n%s", err, out)
	}
	os.Remove(stuck)
	mustCtl(t, l, "a", "cleanup")
	l.waitFor("a", "running again after the cleanup", func(st node.Status) bool {
		return runsHere(st) && st.Group.Resources[2].Failures == 0
	})

	// An operator's restart counts no failure.
	mustCtl(t, l, "a", "resource", "restart", "app")
	l.waitFor("a", "running again after the restart", runsHere)
	if st, _ := l.status("a"); st.Group.Resources[2].Failures != 0 {
		t.Errorf("an operator's restart counted %d failures", st.Group.Resources[2].Failures)
	}

	// standby of the other node is refused, naming where to run it.
	if out, err := l.ctlOn("a", "standby", "b"); err == nil || !strings.Contains(err.Error(), "run `mirrorctl standby` on b") {
		t.Errorf("standby b on a: %v\n%s", err, out)
	}
	if out, err := l.ctlOn("a", "standby", "zz"); err == nil || !strings.Contains(err.Error(), "not a node of cluster ctltest") {
		t.Errorf("standby zz: %v\n%s", err, out)
	}
	// move on the node that does not run the group says where to run it.
	if out, err := l.ctlOn("b", "move"); err == nil || !strings.Contains(err.Error(), "run the move on the node that runs it") {
		t.Errorf("move on the standby node: %v\n%s", err, out)
	}

	// move: a -> b.
	if out := mustCtl(t, l, "a", "move", "b"); !strings.Contains(out, "moving the group from a to b") {
		t.Errorf("move output:\n%s", out)
	}
	l.waitFor("b", "running the group after the move", runsHere)
	l.waitFor("a", "stopped after the move", func(st node.Status) bool { return st.Group.State.String() == "stopped" })
	if _, err := os.Stat(l.marks["a"]); err == nil {
		t.Error("the app still runs on a after the move")
	}

	// standby on b (the runner) moves it back to a; unstandby lets b run it again.
	mustCtl(t, l, "b", "standby", "b")
	l.waitFor("a", "running the group after b's standby", runsHere)
	if out := mustCtl(t, l, "b", "status"); !strings.Contains(out, "standby: b does not run the group (mirrorctl unstandby)") {
		t.Errorf("status of a node in standby:\n%s", out)
	}
	if out := mustCtl(t, l, "b", "unstandby"); strings.Contains(out, "standby: b does not run") {
		t.Errorf("unstandby shows b still in standby:\n%s", out)
	}
	l.waitFor("b", "out of standby", func(st node.Status) bool { return !st.Group.Standby && st.Group.Eligible })
}

// TestGroupCommandsNeedTheNode: against `mirrord volume` (no group), each
// group command says which daemon runs the group.
func TestGroupCommandsNeedTheNode(t *testing.T) {
	f := newFakeDaemon(t)
	f.statuses = []volumeStatus{st("clean", "in_sync", "in_sync")}
	for _, args := range [][]string{{"move"}, {"standby"}, {"maintenance", "on"}, {"resource", "restart", "x"}, {"cleanup"}, {"standby", "n1"}} {
		out, err := run(t, append([]string{"--control", f.addr}, args...)...)
		if err == nil || !strings.Contains(err.Error(), "mirrord --config FILE") {
			t.Errorf("%v against mirrord volume: %v\n%s", args, err, out)
		}
	}
}

func mustCtl(t *testing.T, l *pairLab, id string, args ...string) string {
	t.Helper()
	out, err := l.ctlOn(id, args...)
	if err != nil {
		t.Fatalf("mirrorctl %v on %s: %v\n%s", args, id, err, out)
	}
	return out
}

func writeTestdata(t *testing.T, name string, raw []byte) {
	t.Helper()
	b, err := indentJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}
