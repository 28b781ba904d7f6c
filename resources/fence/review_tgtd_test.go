package fence_test

import (
	"errors"
	"testing"

	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/resources/fence"
)

// An array restart (tgtd keeps reservations in memory) empties its
// registrations. If the active node checks first, it registers and
// reserves again; the standby then finds its key gone and the reservation
// held by another, which must not read as "fenced": nobody preempted it.
func TestArrayRestartDoesNotFenceTheStandby(t *testing.T) {
	l := newLab(t)
	n1, n2 := l.nodes["node1"], l.nodes["node2"]
	a := l.arrays[0]
	mustOK(t, "node1 register")(n1.fence.Register(ctx(t)))
	mustOK(t, "node2 register")(n2.fence.Register(ctx(t)))
	mustOK(t, "node1 acquire")(n1.fence.Acquire(ctx(t)))
	for range 3 { // the monitors run a while
		mustOK(t, "node1 check")(n1.fence.Check(ctx(t)))
		mustOK(t, "node2 check")(n2.fence.Check(ctx(t)))
	}

	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := a.Restart(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*labNode{n1, n2} {
		for _, d := range []*iscsi.Disk{n.vol[a.Name], n.hb[a.Name]} {
			waitFor(t, d.Name()+" reconnects", d.Connected)
		}
	}
	mustOK(t, "node1 (active) check after the restart")(n1.fence.Check(ctx(t)))
	r, err := n2.fence.Check(ctx(t))
	if errors.Is(err, fence.ErrFenced) || n2.fence.Fenced() {
		t.Fatalf("the standby was declared fenced after an array restart (nobody preempted it): %v\n%s", err, r)
	}
	if err != nil {
		t.Fatalf("node2 check after the restart: %v\n%s", err, r)
	}
	l.mustWrite(n2, "hb", a.Name, 0x41)
	l.mustWrite(n1, "vol", a.Name, 0x42)
}

// The old owner started while array B was down, so it never joined B. It
// froze while active; node2 took over (preempting it on A, reserving B).
// When it wakes, its monitor must find it fenced and leave B alone: it
// must not register there, or its disk-heartbeat (and any) writes land on
// B after the takeover.
func TestFencedNodeDoesNotJoinAnArrayItNeverJoined(t *testing.T) {
	l := newLab(t)
	n1, n2 := l.nodes["node1"], l.nodes["node2"]
	a, b := l.arrays[0], l.arrays[1]
	mustOK(t, "node2 register")(n2.fence.Register(ctx(t)))
	if err := b.Pause(); err != nil {
		t.Fatal(err)
	}
	r := mustOK(t, "node1 register with B down")(n1.fence.Register(ctx(t)))
	if len(r.Unreachable()) != 1 {
		t.Fatalf("node1 register: unreachable %v, want B", r.Unreachable())
	}
	mustOK(t, "node1 acquire with B down")(n1.fence.Acquire(ctx(t)))
	if err := b.Resume(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*labNode{n1, n2} {
		for _, d := range []*iscsi.Disk{n.vol[b.Name], n.hb[b.Name]} {
			waitFor(t, d.Name()+" reconnects", d.Connected)
		}
	}
	// node1 freezes; node2 takes over on both arrays.
	r = mustOK(t, "node2 takeover")(n2.fence.Takeover(ctx(t), n1.key))
	if len(r.Fenced()) != 2 {
		t.Fatalf("takeover fenced %v", r.Fenced())
	}
	l.mustBeFencedOff(n1, "hb", b.Name, 0x51)
	// node1 wakes; its monitor runs.
	if _, err := n1.fence.Check(ctx(t)); !errors.Is(err, fence.ErrFenced) {
		t.Fatalf("node1 check after the takeover: %v, want ErrFenced", err)
	}
	l.mustBeFencedOff(n1, "hb", a.Name, 0x52)
	l.mustBeFencedOff(n1, "hb", b.Name, 0x53)
	l.mustBeFencedOff(n1, "vol", b.Name, 0x54)
}
