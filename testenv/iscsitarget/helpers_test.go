package iscsitarget

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/hamirror/hamirror/iscsi"
)

const testIQN = "iqn.2026-01.org.hamirror.test:disk"

// newTgtd starts a tgtd with target 1 (testIQN) holding one LUN backed by a
// sparse file of size bytes, with extra tgtadm LUN params if given; it is
// stopped when the test ends.
func newTgtd(t *testing.T, size int64, lunParams string) (*Tgtd, string) {
	t.Helper()
	a := StartArray(t, t.TempDir(), "disk", size)
	if lunParams != "" {
		if err := a.Adm("--op", "update", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "--params", lunParams); err != nil {
			t.Fatal(err)
		}
	}
	return a.Tgtd, a.Img
}

func legURL(td *Tgtd) string { return fmt.Sprintf("iscsi://%s/%s/1", td.Portal, testIQN) }

func openDisk(t *testing.T, url string, cfg iscsi.Config) *iscsi.Disk {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := iscsi.OpenLeg(ctx, url, cfg)
	if err != nil {
		t.Fatalf("OpenLeg %s: %v", url, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func pattern(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// fileAt reads the backing file directly: what the array really stored.
func fileAt(t *testing.T, img string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func mustEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: data differs at byte %d (len %d vs %d)", what, i, len(got), len(want))
	}
}
