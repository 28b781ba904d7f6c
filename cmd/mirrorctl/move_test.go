package main

import (
	"testing"
	"time"

	"github.com/hamirror/hamirror/resources/node"
)

// A move lands on its target when the target is healthy, every time:
// back and forth, the group must end running on the target and stay
// there (it bounced back once in two tries: the target, proposed active
// while the old node still published its group, yielded to it, and the
// old node, the only candidate left, took the group back).
func TestPairMoveLandsOnTheTarget(t *testing.T) {
	l := newPairLab(t)
	l.waitFor("a", "running the group with a clean volume", runsHere)
	from, to := "a", "b"
	for i := range 6 {
		l.waitFor(to, "standby with the peer's knowledge", func(st node.Status) bool {
			return st.Group.State.String() == "stopped" && st.Group.Eligible && st.Peer != nil && st.Peer.Confirmed
		})
		mustCtl(t, l, from, "move", to)
		l.waitFor(to, "running the group after the move", runsHere)
		for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			if st, _ := l.status(to); !runsHere(st) {
				out, _ := l.ctlOn(to, "status")
				t.Fatalf("move %d (%s -> %s): the group left %s again:\n%s", i+1, from, to, to, out)
			}
		}
		from, to = to, from
	}
}
