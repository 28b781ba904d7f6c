package fence_test

import (
	"errors"
	"testing"

	"github.com/hamirror/hamirror/resources"
	"github.com/hamirror/hamirror/resources/fence"
)

// The new owner's clean stop must not un-fence the old owner. node2 took
// over from a frozen node1 (its key preempted) and later stops cleanly.
// Had node2 released its reservation, nobody would hold one, and the
// unregistered node1, waking up, could write: no reservation, no
// conflict. node2 keeps it while node1's key is not registered; node1
// rejoins (Register) and starts with a clean Acquire, which succeeds with
// node2's WE-RO reservation still in place (every registrant may write
// under it), and node1 writes.
func TestCleanStopAfterTakeoverKeepsTheOldOwnerFenced(t *testing.T) {
	l := newLab(t)
	n1, n2 := l.nodes["node1"], l.nodes["node2"]
	mustOK(t, "node1 register")(n1.fence.Register(ctx(t)))
	mustOK(t, "node2 register")(n2.fence.Register(ctx(t)))
	mustOK(t, "node1 acquire")(n1.fence.Acquire(ctx(t)))
	for _, a := range l.arrays {
		l.mustWrite(n1, "vol", a.Name, 0x71)
	}

	// node1 freezes; node2 takes over and then stops cleanly (the group
	// moves away, an operator stops it): its Stop runs Release.
	mustOK(t, "node2 takeover")(n2.fence.Takeover(ctx(t), n1.key))
	if err := n2.fence.Stop(ctx(t)); err != nil {
		t.Fatalf("node2's clean stop: %v", err)
	}

	// The frozen node1 wakes and writes, before any check of its own:
	// every write gets the reservation conflict and nothing lands.
	for _, a := range l.arrays {
		l.mustBeFencedOff(n1, "vol", a.Name, 0x72)
		l.mustBeFencedOff(n1, "hb", a.Name, 0x73)
	}
	r := mustOK(t, "node2 release again (reports what it keeps)")(n2.fence.Release(ctx(t)))
	for _, ar := range r.Arrays {
		if !ar.Holder {
			t.Fatalf("%s: node2's release dropped the reservation while node1 is fenced off:\n%s", ar.Array, r)
		}
	}

	// node1 is restarted: its clean rejoin registers, and the group
	// starts it with a clean hand-over.
	mustOK(t, "node1 rejoin")(n1.fence.Register(ctx(t)))
	r = mustOK(t, "node1 acquire with node2's reservation kept")(n1.fence.Acquire(ctx(t)))
	for _, ar := range r.Arrays {
		if ar.Err != nil || !ar.Registered {
			t.Fatalf("%s: node1's acquire: %+v", ar.Array, ar)
		}
	}
	for _, a := range l.arrays {
		l.mustWrite(n1, "vol", a.Name, 0x74)
		l.mustWrite(n1, "hb", a.Name, 0x75)
		l.mustWrite(n2, "hb", a.Name, 0x76) // node2, the standby now, beats on
	}
	if err := n1.fence.Monitor(ctx(t)); err != nil {
		t.Fatalf("node1's monitor after its acquire: %v", err)
	}
	if err := n2.fence.Monitor(ctx(t)); !errors.Is(err, resources.ErrNotRunning) {
		t.Fatalf("node2's monitor as the standby: %v, want ErrNotRunning", err)
	}

	// node1's own clean stop holds nothing: a no-op, node2 keeps the
	// reservation and both stay registered.
	r = mustOK(t, "node1 release (not the holder)")(n1.fence.Release(ctx(t)))
	for _, a := range l.arrays {
		res, err := n1.vol[a.Name].ReadReservation()
		if err != nil || !res.Held || res.Key != n2.key {
			t.Fatalf("%s after node1's release: %+v %v, want node2's reservation kept", a.Name, res, err)
		}
		l.mustWrite(n1, "hb", a.Name, 0x77)
	}

	// node2 dies later; node1 takes over: node2's reservation moves to it.
	n1.fence.SetStart(fence.StartTakeover)
	if err := n1.fence.Start(ctx(t)); err != nil {
		t.Fatalf("node1's takeover: %v", err)
	}
	for _, a := range l.arrays {
		if res, err := n1.vol[a.Name].ReadReservation(); err != nil || res.Key != n1.key {
			t.Fatalf("%s after node1's takeover: %+v %v", a.Name, res, err)
		}
		l.mustBeFencedOff(n2, "vol", a.Name, 0x78)
		l.mustWrite(n1, "vol", a.Name, 0x79)
	}
}
