package iscsitarget

import (
	"slices"
	"testing"

	"github.com/hamirror/hamirror/iscsi"
)

func TestTgtdSmoke(t *testing.T) {
	td, img := newTgtd(t, 64<<20, "")
	d := openDisk(t, legURL(td), iscsi.Config{})
	t.Logf("info %+v cap %+v limits %+v", d.Info(), d.Capacity(), d.Limits())
	if d.Size() != 64<<20 {
		t.Fatalf("size %d", d.Size())
	}
	w := pattern(1, 1<<20)
	if err := d.WriteAt(w, 4096, false); err != nil {
		t.Fatal(err)
	}
	r := make([]byte, len(w))
	if err := d.ReadAt(r, 4096); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "read back", r, w)
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "file", fileAt(t, img, 4096, len(w)), w)
}

// Nexuses shows one entry per session; a second login with the same ISID
// reinstates the session (the list changes), one with its own ISID joins.
func TestTgtdNexuses(t *testing.T) {
	td, _ := newTgtd(t, 4<<20, "")
	nexuses := func() []string {
		t.Helper()
		ids, err := td.Nexuses(1)
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	first := openDisk(t, legURL(td), iscsi.Config{})
	before := nexuses()
	if len(before) != 1 {
		t.Fatalf("one session, nexuses %v", before)
	}
	other := openDisk(t, legURL(td), iscsi.Config{ISID: [6]byte{0x80, 0, 0, 0, 0, 9}})
	if got := nexuses(); len(got) != 2 || (got[0] != before[0] && got[1] != before[0]) {
		t.Fatalf("second ISID: nexuses %v, want %v plus one", got, before)
	}
	other.Close()
	if got := nexuses(); len(got) != 1 || got[0] != before[0] {
		t.Fatalf("after logout: nexuses %v, want %v", got, before)
	}
	same := openDisk(t, legURL(td), iscsi.Config{})
	defer same.Close()
	if got := nexuses(); len(got) != 1 || got[0] == before[0] {
		t.Fatalf("same ISID: nexuses %v, want one replacing %v", got, before)
	}
	_ = first
}

// One node opens a session per purpose to the same LUN (the daemon's
// volume and disk heartbeat, a mirrorctl command, a read-only examine):
// package iscsi gives each its own ISID, so each login joins as its own
// I_T nexus and none drops another; all keep working.
func TestTgtdSessionsOfEveryPurposeCoexist(t *testing.T) {
	td, img := newTgtd(t, 4<<20, "")
	const node = "iqn.2026-01.org.hamirror.test:node1"
	purposes := []iscsi.Purpose{iscsi.PurposeVolume, iscsi.PurposeDiskHeartbeat, iscsi.PurposeTool, iscsi.PurposeReadOnly}
	var disks []*iscsi.Disk
	var seen []string
	for _, p := range purposes {
		disks = append(disks, openDisk(t, legURL(td), iscsi.Config{InitiatorName: node, Purpose: p}))
		got, err := td.Nexuses(1)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range seen {
			if !slices.Contains(got, s) {
				t.Fatalf("logging in for %s dropped an earlier session: nexuses %v, had %v", p, got, seen)
			}
		}
		if len(got) != len(seen)+1 {
			t.Fatalf("after the %s login: nexuses %v, want %d", p, got, len(seen)+1)
		}
		seen = got
	}
	for i, d := range disks[:3] { // the read-only one is refused locally
		block := pattern(uint64(i+1), 4096)
		off := int64(i) * 4096
		if err := d.WriteAt(block, off, true); err != nil {
			t.Fatalf("%s session write: %v", purposes[i], err)
		}
		mustEqual(t, purposes[i].String()+" write on the array", fileAt(t, img, off, 4096), block)
	}
	for i, d := range disks {
		if err := d.ReadAt(make([]byte, 4096), 0); err != nil {
			t.Fatalf("%s session read: %v", purposes[i], err)
		}
		if st := d.Stats(); st.Reconnects != 0 {
			t.Fatalf("%s session was dropped and reconnected %d times", purposes[i], st.Reconnects)
		}
	}
}
