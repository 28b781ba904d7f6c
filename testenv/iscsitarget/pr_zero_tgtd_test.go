package iscsitarget

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/hamirror/hamirror/iscsi"
)

// A node fenced off a LUN (not registered under another node's Write
// Exclusive – Registrants Only reservation) must not be able to zero the
// LUN either: the engine zeroes through Disk.Zero (NBD TRIM and
// WRITE_ZEROES, resync of zero ranges), which picks UNMAP or WRITE SAME
// where the LUN advertises them, as a thin tgtd LUN does. tgtd 1.0.85's
// command table gives WRITE SAME(10/16) and UNMAP no reservation conflict
// bits, so it executes them for anyone.
func TestTgtdFencedNodeCannotZero(t *testing.T) {
	td, img := newTgtd(t, 8<<20, "thin_provisioning=1")
	owner := openDisk(t, legURL(td), iscsi.Config{InitiatorName: "iqn.2026-01.org.hamirror.test:node2"})
	fenced := openDisk(t, legURL(td), iscsi.Config{InitiatorName: "iqn.2026-01.org.hamirror.test:node1"})
	const key = 0x2222
	if err := owner.Register(0, key); err != nil {
		t.Fatal(err)
	}
	if err := owner.Reserve(key, iscsi.WriteExclusiveRegistrantsOnly); err != nil {
		t.Fatal(err)
	}
	data := pattern(7, 64<<10)
	if err := owner.WriteAt(data, 0, true); err != nil {
		t.Fatal(err)
	}
	if err := fenced.WriteAt(pattern(8, 4096), 0, true); !errors.Is(err, iscsi.ErrReservationConflict) {
		t.Fatalf("the fenced node's write: %v, want ErrReservationConflict", err)
	}
	for _, unmap := range []bool{false, true} {
		m := fenced.ZeroMethod(unmap)
		err := fenced.Zero(0, 64<<10, unmap)
		b, rerr := os.ReadFile(img)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if !bytes.Equal(b[:len(data)], data) {
			t.Fatalf("the fenced node's Zero by %v (unmap %v) erased the owner's data (err %v)", m, unmap, err)
		}
		if !errors.Is(err, iscsi.ErrReservationConflict) {
			t.Fatalf("the fenced node's Zero by %v: %v, want ErrReservationConflict", m, err)
		}
	}
	// The default (auto) recognises tgtd by its INQUIRY; an operator who
	// trusts the array (never) gets the UNMAP the thin LUN advertises.
	if inq := fenced.Info(); inq.Vendor != "IET" || inq.Product != "VIRTUAL-DISK" {
		t.Fatalf("tgtd's standard INQUIRY: vendor %q product %q; the ZeroWritingAuto detection expects IET VIRTUAL-DISK", inq.Vendor, inq.Product)
	}
	trusting := openDisk(t, legURL(td), iscsi.Config{InitiatorName: "iqn.2026-01.org.hamirror.test:node3", ZeroByWriting: iscsi.ZeroWritingNever})
	if m := trusting.ZeroMethod(true); m != iscsi.ZeroUnmap {
		t.Fatalf("ZeroWritingNever on a thin tgtd LUN: %v, want UNMAP", m)
	}
}
