package fence_test

import (
	"errors"
	"testing"

	"github.com/hamirror/hamirror/iscsi"
)

// A fenced node's zeroing (the engine's Zero for NBD TRIM and
// WRITE_ZEROES, and the resync of zero ranges) must get the reservation
// conflict like its writes and erase nothing of the new owner's. On thin
// tgtd LUNs Zero with unmap would pick UNMAP, which tgtd 1.0.85 executes
// for anyone: its command table gives UNMAP and WRITE SAME no
// reservation check.
func TestFencedNodeCannotZero(t *testing.T) {
	l := startArrays(t)
	for _, a := range l.arrays {
		if err := a.Adm("--op", "update", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "--params", "thin_provisioning=1"); err != nil {
			t.Fatal(err)
		}
	}
	l.addNodes(false)
	n1, n2 := l.nodes["node1"], l.nodes["node2"]
	mustOK(t, "node1 register")(n1.fence.Register(ctx(t)))
	mustOK(t, "node2 register")(n2.fence.Register(ctx(t)))
	mustOK(t, "node1 acquire")(n1.fence.Acquire(ctx(t)))
	mustOK(t, "node2 takeover")(n2.fence.Takeover(ctx(t), n1.key))
	for _, a := range l.arrays {
		l.mustWrite(n2, "vol", a.Name, 0x61) // the new owner's data at node2's block
		d := n1.vol[a.Name]
		for _, unmap := range []bool{false, true} {
			err := d.Zero(l.offset(n2, "vol"), 4096, unmap)
			t.Logf("%s: node1 zeroes node2's block by %v (unmap %v): %v", a.Name, d.ZeroMethod(unmap), unmap, err)
			if got := l.onArray(n2, "vol", a.Name); got != 0x61 {
				t.Fatalf("%s: a fenced node's Zero (unmap %v, by %v) erased the new owner's data (err %v)", a.Name, unmap, d.ZeroMethod(unmap), err)
			}
			if !errors.Is(err, iscsi.ErrReservationConflict) {
				t.Fatalf("%s: a fenced node's Zero (unmap %v): %v, want iscsi.ErrReservationConflict", a.Name, unmap, err)
			}
		}
	}
}
