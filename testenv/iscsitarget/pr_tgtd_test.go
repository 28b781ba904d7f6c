package iscsitarget

import (
	"errors"
	"slices"
	"testing"

	"github.com/hamirror/hamirror/iscsi"
)

// Two nodes fence each other with SCSI-3 persistent reservations the way
// hamirror's fence resource does: register a key per node, hold Write
// Exclusive – Registrants Only, PREEMPT the peer.
func TestTgtdPersistentReservations(t *testing.T) {
	td, _ := newTgtd(t, 8<<20, "")
	node1 := openDisk(t, legURL(td), iscsi.Config{InitiatorName: "iqn.2026-01.org.hamirror.test:node1"})
	node2 := openDisk(t, legURL(td), iscsi.Config{InitiatorName: "iqn.2026-01.org.hamirror.test:node2"})
	const key1, key2 = 0x1111, 0x2222
	const werO = iscsi.WriteExclusiveRegistrantsOnly
	block := pattern(3, 4096)
	write := func(d *iscsi.Disk) error { return d.WriteAt(block, 0, false) }

	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	must("node1 register", node1.Register(0, key1))
	must("node2 register", node2.Register(0, key2))
	_, keys, err := node2.ReadKeys()
	must("read keys", err)
	slices.Sort(keys)
	if !slices.Equal(keys, []uint64{key1, key2}) {
		t.Fatalf("registered keys %x, want [%x %x]", keys, key1, key2)
	}
	must("node1 reserve WE-RO", node1.Reserve(key1, werO))
	r, err := node2.ReadReservation()
	must("read reservation", err)
	if !r.Held || r.Key != key1 || r.Type != werO {
		t.Fatalf("reservation %+v, want key %x type WE-RO", r, key1)
	}
	// Registrants only: both registered nodes may write.
	must("node1 write as holder", write(node1))
	must("node2 write as registrant", write(node2))

	// node2 takes over and fences node1.
	uaBefore := node1.Stats().UnitAttentions
	must("node2 preempt node1", node2.Preempt(key2, key1, werO))
	r, err = node1.ReadReservation()
	must("read reservation after preempt", err)
	// node1 first gets UNIT ATTENTION 2A/05 (registrations preempted),
	// which the initiator absorbs and retries.
	if st := node1.Stats(); st.UnitAttentions == uaBefore || st.LastUnitAttention>>8 != 0x2a {
		t.Fatalf("node1 absorbed no reservation UNIT ATTENTION after being preempted: %+v", st)
	}
	if r.Key != key2 || r.Type != werO {
		t.Fatalf("reservation after preempt %+v, want key %x", r, key2)
	}
	err = write(node1)
	if !errors.Is(err, iscsi.ErrReservationConflict) {
		t.Fatalf("fenced node1's write: %v, want ErrReservationConflict", err)
	}
	t.Logf("fenced write: %v", err)
	// Reads are still allowed (write exclusive), and node2 writes on.
	must("fenced node1 read", node1.ReadAt(make([]byte, 4096), 0))
	must("node2 write as holder", write(node2))
	// Re-registering is allowed, and makes node1 a registrant again.
	must("node1 re-register", node1.Register(0, key1))
	must("node1 write as registrant again", write(node1))

	// PREEMPT AND ABORT fences node1 again; its writes conflict. tgtd
	// 1.0.85 answers it with ILLEGAL REQUEST 24/00 (not implemented); the
	// request itself differs from PREEMPT only in the service action,
	// which the unit tests check.
	if err := node2.PreemptAndAbort(key2, key1, werO); errors.Is(err, iscsi.ErrIllegalRequest) {
		t.Logf("tgtd does not implement PREEMPT AND ABORT (%v); using PREEMPT", err)
		must("node2 preempt", node2.Preempt(key2, key1, werO))
	} else {
		must("node2 preempt and abort", err)
	}
	if err := write(node1); !errors.Is(err, iscsi.ErrReservationConflict) {
		t.Fatalf("node1 write after preempt-and-abort: %v, want ErrReservationConflict", err)
	}

	// Releasing raises UNIT ATTENTION 2A/04 on the other registrants,
	// which the initiator absorbs.
	must("node1 register again", node1.Register(0, key1))
	must("node2 release", node2.Release(key2, werO))
	r, err = node1.ReadReservation()
	must("read reservation after release", err)
	if r.Held {
		t.Fatalf("reservation still held after release: %+v", r)
	}
	must("node1 write with no reservation", write(node1))
	must("node1 reserve", node1.Reserve(key1, werO))
	must("node2 clear", node2.Clear(key2))
	_, keys, err = node1.ReadKeys()
	must("read keys after clear", err)
	if len(keys) != 0 {
		t.Fatalf("keys after CLEAR: %x", keys)
	}
	must("node1 write after clear", write(node1))
}
