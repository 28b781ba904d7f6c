package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/mirror"
	"github.com/hamirror/hamirror/resources"
	"github.com/hamirror/hamirror/resources/fence"
	"github.com/hamirror/hamirror/resources/node"
)

// A frozen active node (SIGSTOP, a VM pause) is declared dead; the peer
// fences it and assembles the volume, whose first act is to write its own
// MMP block. When the old node runs again, its MMP tick reads that block
// back before it writes anything: another writer took the volume after
// this node's silence. That is a fence in effect: the node stops every
// resource at once and reports fenced (it ended "blocked on volume", as
// the volume's stop failed with "another writer took the volume", and
// cleanup then did not register its key again). The documented way back
// (docs/OPERATIONS.md, "fenced node") is mirrorctl cleanup: the node
// registers its key again and may run the group again.
//
// In-process nodes cannot be frozen: the test plays the peer's takeover
// itself, with b's key on sessions of its own, while node b stays a
// standby.
func TestPairOtherWriterAfterSilenceIsFenced(t *testing.T) {
	l := newPairLab(t)
	l.waitFor("a", "running the group with a clean volume", runsHere)
	l.waitFor("b", "standby", func(st node.Status) bool { return st.Group.State.String() == "stopped" })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keyA, keyB := fence.DeriveKey("ctltest", "a"), fence.DeriveKey("ctltest", "b")
	var legs [2]mirror.Leg
	var arrs []fence.Array
	for i, spec := range l.legs {
		d, err := iscsi.OpenLeg(ctx, spec, iscsi.Config{InitiatorName: "iqn.2026-01.org.hamirror.test:ctl-b-takeover", Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		legs[i] = d
		arrs = append(arrs, fence.Array{Name: []string{"array-a", "array-b"}[i], Volume: d})
	}
	f, err := fence.New(fence.Config{Key: keyB, Peers: []uint64{keyA}, Arrays: arrs})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Register(ctx); err != nil {
		t.Fatal(err)
	}
	// The peer's assembly after its fence: its MMP block lands first here
	// (a is not preempted yet), as it did while a was frozen.
	vol, err := mirror.Assemble(legs, mirror.Options{NodeID: "b", MMP: mirror.MMPOptions{Interval: 200 * time.Millisecond, Fenced: true}})
	if err != nil {
		t.Fatalf("the peer's assembly: %v", err)
	}
	if _, err := f.Takeover(ctx, keyA); err != nil {
		t.Fatalf("the peer's fence: %v", err)
	}

	st, _ := l.waitFor("a", "fenced or blocked", func(st node.Status) bool {
		s := st.Group.State.String()
		return s == "fenced" || s == "blocked"
	})
	if s := st.Group.State.String(); s != "fenced" {
		t.Fatalf("another writer took the volume after a's silence: a's group is %s (%s), want fenced", s, st.Group.Reason)
	}
	l.waitFor("a", "every resource stopped", func(st node.Status) bool {
		for _, r := range st.Group.Resources {
			if r.State.String() != "stopped" {
				return false
			}
		}
		return true
	})
	if _, err := os.Stat(l.marks["a"]); err == nil {
		t.Error("the app still runs on the fenced node a")
	}
	if out, _ := l.ctlOn("a", "status"); !strings.Contains(out, "FENCED") {
		t.Errorf("status on the fenced node does not say so:\n%s", out)
	}

	// The way back: the other writer goes away cleanly; b, a live standby
	// that sees a fenced (stopped), runs the group; the operator runs
	// cleanup on a, which registers its key again: a move brings the group
	// back to a, whose volume then writes on both arrays.
	if err := vol.Close(); err != nil {
		t.Fatalf("closing the peer's volume: %v", err)
	}
	l.waitFor("b", "running the group after a was fenced", runsHere)
	mustCtl(t, l, "a", "cleanup")
	l.waitFor("a", "eligible again after the cleanup", func(st node.Status) bool {
		return st.Group.State.String() == "stopped" && st.Group.Eligible
	})
	// b learns it from a's next beat: a move asked before that is refused
	// ("a is fenced and not eligible"), as it should be.
	l.waitFor("b", "a's beats saying it is eligible again", func(st node.Status) bool {
		for _, ns := range st.Cluster.Nodes {
			if a, err := resources.UnmarshalAppState(ns.App); ns.ID == "a" && err == nil {
				return a.Eligible && a.State == resources.GroupStopped
			}
		}
		return false
	})
	mustCtl(t, l, "b", "move", "a")
	l.waitFor("a", "running the group again after the cleanup and the move", runsHere)
}
