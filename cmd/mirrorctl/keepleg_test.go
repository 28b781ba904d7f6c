package main

import (
	"strings"
	"testing"

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

	out := mustCtl(t, l, "a", "volume", "keep-leg", "0")
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
