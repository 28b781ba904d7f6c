package main

import (
	"testing"
	"time"

	"github.com/hamirror/hamirror/resources/node"
	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

// Both nodes start together while one array is slow to accept its first
// login (here it comes up lateLogin after the nodes start): the preferred
// node's volume start waits, bounded, for that first login before it
// takes the leg for missing. It assembled without it, failed with "not
// provably the newest" and the group went to the peer.
func TestPairStartWaitsForTheArraysFirstLogin(t *testing.T) {
	const lateLogin = 8 * time.Second
	restarted := make(chan error, 1)
	l := newPairLabWith(t, func(_, b *iscsitarget.Array) {
		if err := b.Kill(); err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(lateLogin, func() { restarted <- b.Restart() })
	})
	st, _ := l.waitFor("a", "running the group or failed", func(st node.Status) bool {
		s := st.Group.State.String()
		return runsHere(st) || s == "failed" || s == "blocked" || volumeFailures(st) > 0
	})
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	if !runsHere(st) || volumeFailures(st) > 0 {
		out, _ := l.ctlOn("a", "status")
		t.Fatalf("the preferred node did not wait for array b's first login:\n%s", out)
	}
	if sb, _ := l.status("b"); sb.Group.State.String() != "stopped" {
		t.Errorf("b's group is %s, want stopped", sb.Group.State)
	}
}

// volumeFailures is the volume resource's failure count on a node.
func volumeFailures(st node.Status) int {
	for _, r := range st.Group.Resources {
		if r.Name == "volume" {
			return r.Failures
		}
	}
	return 0
}
