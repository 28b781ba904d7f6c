package iscsitarget

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hamirror/hamirror/iscsi"
)

// BenchmarkTgtdRead4K measures 4 KiB random reads at QD32 against a tgtd
// LUN in /dev/shm (for profiling; make bench has the comparison).
func BenchmarkTgtdRead4K(b *testing.B) {
	if err := TgtdAvailable(); err != nil {
		b.Skip(err)
	}
	dir, _ := os.MkdirTemp("/dev/shm", "hamirror-benchtest-")
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "lun.img")
	os.WriteFile(img, nil, 0o644)
	os.Truncate(img, 256<<20)
	td, err := StartTgtd(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer td.Stop()
	td.AddTarget(1, testIQN, []string{img}, "")
	d, err := iscsi.OpenLeg(b.Context(), legURL(td), iscsi.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	var n atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			buf := make([]byte, 4096)
			for n.Add(1) <= int64(b.N) {
				if err := d.ReadAt(buf, r.Int64N(65536)*4096); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
