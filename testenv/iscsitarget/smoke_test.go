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
