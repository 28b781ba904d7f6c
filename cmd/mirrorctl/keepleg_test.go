package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/resources/node"
	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

// The cluster's forcing command: both nodes start while array b is gone
// for good. Leg 0 alone is not provably the newest, so the volume's start
// fails on each node in turn and the refusal names mirrorctl volume
// keep-leg (the only way to force was to stop the cluster and run
// mirrord volume --keep-leg by hand). keep-leg is refused while a peer
// could start the group without it or runs it; on a node where the group
// runs nowhere it starts the group once on leg 0, degraded.
func TestPairKeepLegForcesALoneLeg(t *testing.T) {
	l := newPairLabWith(t, func(_, b *iscsitarget.Array) {
		if err := b.Kill(); err != nil {
			t.Fatal(err)
		}
	})
	failed := func(st node.Status) bool { return st.Group.State.String() == "failed" }
	st, _ := l.waitFor("a", "failed (leg 0 alone, not provably the newest)", failed)
	l.waitFor("b", "failed too", failed)
	if !strings.Contains(st.Group.Reason, "not provably the newest") || !strings.Contains(st.Group.Reason, "mirrorctl volume keep-leg") {
		t.Fatalf("the refusal does not name the cluster's way to force: %s", st.Group.Reason)
	}
	if out, err := l.ctlOn("a", "volume", "keep-leg", "2"); err == nil {
		t.Errorf("keep-leg 2 accepted:\n%s", out)
	}

	out := keepLeg(t, l, "a", "0")
	if !strings.Contains(out, "keeps leg 0's data") {
		t.Errorf("keep-leg output:\n%s", out)
	}
	st, _ = l.waitFor("a", "running the group on leg 0 alone", func(st node.Status) bool {
		return st.Group.State.String() == "running" && st.Volume != nil && st.Volume.State == "degraded"
	})
	if out, err := l.ctlOn("b", "volume", "keep-leg", "0"); err == nil || !strings.Contains(err.Error(), "on a: it must run nowhere") {
		t.Errorf("keep-leg on b while the group runs on a: %v\n%s", err, out)
	}
	if out, err := l.ctlOn("a", "log"); err != nil || !strings.Contains(out, "keep_leg") {
		t.Errorf("the forced start is not in the management log: %v\n%s", err, out)
	}
}

// A blank replacement LUN at leg 1's URL (the cluster file names it on
// both nodes): the start refuses the blank leg and names keep-leg; keep-leg
// 0 starts on leg 0, and leg add 1 copies everything onto the new LUN.
func TestPairKeepLegThenABlankLegIsRebuilt(t *testing.T) {
	l := newPairLabWith(t, func(_, b *iscsitarget.Array) {
		if err := b.Kill(); err != nil {
			t.Fatal(err)
		}
		blank(t, b.Img)
		if err := b.Restart(); err != nil {
			t.Fatal(err)
		}
	})
	failed := func(st node.Status) bool { return st.Group.State.String() == "failed" }
	st, _ := l.waitFor("a", "failed (leg 1 blank)", failed)
	l.waitFor("b", "failed too", failed)
	if !strings.Contains(st.Group.Reason, "mirrorctl volume keep-leg") {
		t.Fatalf("the refusal of a blank leg does not name the cluster's way to force: %s", st.Group.Reason)
	}
	keepLeg(t, l, "a", "0")
	l.waitFor("a", "running the group on leg 0", func(st node.Status) bool {
		return st.Group.State.String() == "running" && st.Volume != nil && st.Volume.State != ""
	})
	if st, _ := l.status("a"); st.Volume.State == "degraded" {
		mustCtl(t, l, "a", "leg", "add", "1")
	}
	if out := mustCtl(t, l, "a", "resync", "--wait"); !strings.Contains(out, "in sync") {
		t.Errorf("resync --wait:\n%s", out)
	}
	l.waitFor("a", "running with both legs in sync", runsHere)
}

// blank zeroes a LUN's backing file: a new, empty LUN.
func blank(t *testing.T, img string) {
	t.Helper()
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, fi.Size()); err != nil {
		t.Fatal(err)
	}
}

// keepLeg runs mirrorctl volume keep-leg on node id, again while it is
// refused because node id still sees the peer's group stopping (the
// peer's failed state reaches it a heartbeat later).
func keepLeg(t *testing.T, l *pairLab, id, slot string) string {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, err := l.ctlOn(id, "volume", "keep-leg", slot)
		if err == nil {
			return out
		}
		if !strings.Contains(err.Error(), "stopping on") || time.Now().After(end) {
			t.Fatalf("mirrorctl volume keep-leg %s on %s: %v\n%s", slot, id, err, out)
		}
	}
}
