package iscsitarget

import (
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
