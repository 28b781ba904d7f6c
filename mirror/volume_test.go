package mirror

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

func TestWriteReadBothLegs(t *testing.T) {
	v, paths := fileVolume(t, 64<<20, 64<<10)
	r := rand.New(rand.NewPCG(1, 2))
	data := randBytes(r, 3*4096+512)
	if err := v.WriteAt(data, 100_000*4096%v.Size(), false); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := v.ReadAt(got, 100_000*4096%v.Size()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("read back differs from what was written")
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(data[:4096], 0, true); err != nil {
		t.Fatal(err)
	}
	if st := v.Status(); st.State != "clean" || st.Legs[0].State != "in_sync" || st.Legs[1].State != "in_sync" {
		t.Fatalf("status %+v, want clean with both legs in sync", st)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if !legsIdentical(t, paths, v.Size()) {
		t.Fatal("legs differ after writes")
	}
	for _, p := range paths {
		l := openTestLeg(t, p)
		info, err := Examine(l)
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !info.Clean || info.BitmapDirtyChunks != 0 {
			t.Fatalf("%s after close: clean=%v dirty=%d, want clean with an empty bitmap", p, info.Clean, info.BitmapDirtyChunks)
		}
	}
}

func TestOutOfRangeIO(t *testing.T) {
	v, _ := fileVolume(t, 16<<20, 64<<10)
	defer v.Close()
	if err := v.WriteAt(make([]byte, 4096), v.Size()-1024, false); !errors.Is(err, ErrRange) {
		t.Fatalf("write past the end: %v, want ErrRange", err)
	}
	if err := v.ReadAt(make([]byte, 4096), -4096); !errors.Is(err, ErrRange) {
		t.Fatalf("read before the start: %v, want ErrRange", err)
	}
}

func TestFailAddResyncVerify(t *testing.T) {
	v, paths := fileVolume(t, 32<<20, 64<<10)
	r := rand.New(rand.NewPCG(3, 4))
	if err := v.FailLeg(1); err != nil {
		t.Fatal(err)
	}
	if st := v.Status(); st.State != "degraded" || st.Legs[1].State != "failed" {
		t.Fatalf("after FailLeg(1): %+v", st)
	}
	for i := 0; i < 50; i++ {
		off := int64(r.IntN(int(v.Size()/4096))) * 4096
		if err := v.WriteAt(randBytes(r, 4096), off, false); err != nil {
			t.Fatal(err)
		}
	}
	if legsIdentical(t, paths, v.Size()) {
		t.Fatal("legs identical although leg 1 was failed during the writes")
	}
	if err := v.AddLeg(1, nil); err != nil {
		t.Fatal(err)
	}
	waitInSync(t, v)
	rep, err := v.Verify(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mismatches != 0 || rep.Checked != v.Size() {
		t.Fatalf("verify after resync: %+v", rep)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if !legsIdentical(t, paths, v.Size()) {
		t.Fatal("legs differ after resync")
	}
}
