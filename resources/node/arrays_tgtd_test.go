package node

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/resources/fence"
	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

// openTestArrays opens node self's sessions to the legs (in the
// background, as New does) and its fence agent, with its own initiator
// name so that two nodes of one test process keep their sessions apart.
func openTestArrays(t *testing.T, self heartbeat.NodeID, legs [2]string, keys map[heartbeat.NodeID]uint64) *arrays {
	t.Helper()
	c := &Config{Volume: &VolumeConfig{Legs: legs, IOTimeout: 2 * time.Second}}
	c.Heartbeat.Self = self
	c.ISCSI.InitiatorName = "iqn.2026-01.org.hamirror.test:" + string(self)
	as, err := openArrays(c, keys, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(as.close)
	return as
}

// An array that was down during the takeover's fence (its leg left out
// of the assembly) comes back: the engine opens its leg by spec to re-add
// it. The node fences that array first and then lends the session; it
// refused it for good before (the leg never rejoined: case 6 of the
// failover proof). The old owner's writes there are refused afterwards.
func TestArraysLegMissingAtTakeoverJoinsOnceFenced(t *testing.T) {
	dir := t.TempDir()
	a := iscsitarget.StartArray(t, dir, "array-a", 64<<20)
	b := iscsitarget.StartArray(t, dir, "array-b", 64<<20)
	legs := [2]string{a.URL, b.URL}
	keys := map[heartbeat.NodeID]uint64{"n1": fence.DeriveKey("arrays-test", "n1"), "n2": fence.DeriveKey("arrays-test", "n2")}
	n1 := openTestArrays(t, "n1", legs, keys)
	n2 := openTestArrays(t, "n2", legs, keys)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, as := range []*arrays{n1, n2} {
		for _, arr := range as.list {
			if err := arr.vol.WaitReady(ctx); err != nil {
				t.Fatal(err)
			}
		}
		as.register(ctx)
	}
	if err := n1.acquire(ctx); err != nil { // n1 runs the group
		t.Fatal(err)
	}

	// n1 dies with array b down; n2 takes over on array a alone.
	if err := b.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := n2.takeover(ctx, []uint64{keys["n1"]}); err != nil {
		t.Fatal(err)
	}
	if _, err := n2.openLeg(a.URL); err != nil {
		t.Fatalf("leg on the fenced array a: %v", err)
	}
	if _, err := n2.openLeg(b.URL); err == nil {
		t.Fatal("the leg on the dead array b was lent, unfenced")
	}

	// Array b returns (with no reservation state: tgtd keeps it in memory).
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	for _, as := range []*arrays{n1, n2} {
		for d := as.list[1].vol; !d.Connected(); time.Sleep(20 * time.Millisecond) {
			if ctx.Err() != nil {
				t.Fatal("the sessions to array b did not reconnect")
			}
		}
	}
	// n1's session to b restores nothing (the generation went back); it
	// registers again, as a frozen old owner that re-registers would.
	if _, err := n1.fence.Register(ctx); err != nil {
		t.Logf("n1 register: %v", err)
	}
	leg, err := n2.openLeg(b.URL)
	if err != nil {
		t.Fatalf("array b answers again, but its leg is refused: %v", err)
	}
	if err := n2.beforeReAdd(1, leg); err != nil {
		t.Fatalf("BeforeReAdd of array b's leg: %v", err)
	}
	buf := make([]byte, 4096)
	if err := leg.WriteAt(buf, 0, true); err != nil {
		t.Fatalf("n2 writes on array b after fencing it: %v", err)
	}
	err = n1.list[1].vol.WriteAt(buf, 0, true)
	if err == nil || !strings.Contains(err.Error(), "RESERVATION CONFLICT") {
		t.Fatalf("n1 (fenced) writes on array b after it returned: %v, want RESERVATION CONFLICT", err)
	}
}
