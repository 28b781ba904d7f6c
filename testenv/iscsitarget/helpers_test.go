package iscsitarget

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hamirror/hamirror/iscsi"
)

const testIQN = "iqn.2026-01.org.hamirror.test:disk"

// newTgtd starts a tgtd with target 1 (testIQN) holding one LUN backed by a
// sparse file of size bytes; it is stopped when the test ends.
func newTgtd(t *testing.T, size int64, lunParams string) (*Tgtd, string) {
	t.Helper()
	if err := TgtdAvailable(); err != nil {
		t.Skipf("tgtd tests skipped: %v", err)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "lun1.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	td, err := StartTgtd(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		td.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(td.Log); err == nil && len(b) > 0 {
				t.Logf("tgtd log (tail):\n%s", tail(b, 2000))
			}
		}
	})
	if err := td.AddTarget(1, testIQN, []string{img}, lunParams); err != nil {
		t.Fatal(err)
	}
	return td, img
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
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
