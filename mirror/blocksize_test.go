package mirror

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/hamirror/hamirror/mirror/legtest"
)

// A volume over a 4096-byte-sector leg and a 512-byte one exports 4096
// and refuses 512-byte I/O itself (EINVAL): no leg sees it, none fails.
func TestMixedBlockSizesExportTheLarger(t *testing.T) {
	a := legtest.NewSectorLeg(legtest.NewMemLeg("a4k", 16<<20), 4096)
	b := legtest.NewMemLeg("b512", 16<<20)
	if _, err := Create([2]Leg{a, b}, CreateOptions{ChunkSize: 64 << 10, NodeID: "n"}); err != nil {
		t.Fatal(err)
	}
	v, err := Assemble([2]Leg{a, b}, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if v.BlockSize() != 4096 {
		t.Fatalf("BlockSize %d over a 4096-byte leg, want 4096", v.BlockSize())
	}
	p := make([]byte, 512)
	for _, io := range []struct {
		name string
		err  error
	}{
		{"read 512 at 512", v.ReadAt(p, 512)},
		{"read 512 at 0", v.ReadAt(p, 0)},
		{"write 512 at 4096", v.WriteAt(p, 4096, false)},
		{"zero 512 at 8192", v.Zero(8192, 512, false)},
		{"read 4096 at 512", v.ReadAt(make([]byte, 4096), 512)},
	} {
		if !errors.Is(io.err, ErrMisaligned) || !errors.Is(io.err, syscall.EINVAL) {
			t.Errorf("%s: %v, want ErrMisaligned (EINVAL)", io.name, io.err)
		}
	}
	// Every such request again through the started API (NBD's path).
	done := make(chan error, 2)
	v.StartWriteAt(p, 512, false, func(err error, _, _ bool) { done <- err })
	v.StartReadAt(p, 512, func(_ []byte, err error, _, _ bool) { done <- err })
	for range 2 {
		if err := <-done; !errors.Is(err, syscall.EINVAL) {
			t.Errorf("started misaligned I/O: %v, want EINVAL", err)
		}
	}
	data := bytes.Repeat([]byte{0x5a}, 8192)
	if err := v.WriteAt(data, 4096, true); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := v.ReadAt(got, 4096); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("aligned I/O: %v", err)
	}
	if st := v.Status(); st.State != "clean" || st.Legs[0].State != "in_sync" || st.Legs[1].State != "in_sync" {
		t.Fatalf("a refused request touched the legs: %+v", st)
	}
}

// A running 512-byte volume refuses a 4096-byte replacement leg with a
// message saying what to do; one started with BlockSize 4096 takes it.
func TestAddLegWithLargerBlocks(t *testing.T) {
	for _, want := range []int{0, 4096} {
		a, b := legtest.NewMemLeg("a", 16<<20), legtest.NewMemLeg("b", 16<<20)
		if _, err := Create([2]Leg{a, b}, CreateOptions{ChunkSize: 64 << 10, NodeID: "n"}); err != nil {
			t.Fatal(err)
		}
		opts := testOptions(t)
		opts.BlockSize = want
		opts.KeepLeg = 0 // leg 1 is to be replaced: the operator keeps leg 0
		v, err := Assemble([2]Leg{a, nil}, opts)
		if err != nil {
			t.Fatal(err)
		}
		if v.BlockSize() != max(want, 512) {
			t.Fatalf("BlockSize %d with Options.BlockSize %d", v.BlockSize(), want)
		}
		if err := v.WriteAt(bytes.Repeat([]byte{7}, 4096), 0, false); err != nil {
			t.Fatal(err)
		}
		repl := legtest.NewSectorLeg(legtest.NewMemLeg("c4k", 16<<20), 4096)
		err = v.AddLeg(1, repl)
		if want == 0 {
			if !errors.Is(err, ErrBlockSize) || !strings.Contains(err.Error(), "--block-size 4096") {
				t.Fatalf("adding a 4096-byte leg to a 512-byte volume: %v, want ErrBlockSize naming --block-size 4096", err)
			}
		} else {
			if err != nil {
				t.Fatalf("adding a 4096-byte leg to a 4096-byte volume: %v", err)
			}
			waitInSync(t, v)
			got := make([]byte, 4096)
			if err := repl.ReadAt(got, 0); err != nil || got[0] != 7 {
				t.Fatalf("replacement not resynced: %v %v", err, got[:4])
			}
		}
		v.Close()
	}
	a, b := legtest.NewMemLeg("a", 16<<20), legtest.NewMemLeg("b", 16<<20)
	if _, err := Create([2]Leg{a, b}, CreateOptions{ChunkSize: 64 << 10, NodeID: "n"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Assemble([2]Leg{a, b}, Options{KeepLeg: -1, BlockSize: 3000}); err == nil || !strings.Contains(err.Error(), "BlockSize 3000") {
		t.Fatalf("Options.BlockSize 3000: %v", err)
	}
}

// Legs with blocks larger than the metadata's 4096 are refused at create.
func TestCreateRefusesHugeBlocks(t *testing.T) {
	a := legtest.NewSectorLeg(legtest.NewMemLeg("a8k", 16<<20), 8192)
	_, err := Create([2]Leg{a, legtest.NewMemLeg("b", 16<<20)}, CreateOptions{})
	if !errors.Is(err, ErrBlockSize) || !strings.Contains(err.Error(), "8192") {
		t.Fatalf("create over an 8192-byte-sector leg: %v", err)
	}
}

// A block device leg reports its logical sector size (a loop device with
// 4096-byte sectors, a real block device).
func TestBlockDeviceLegBlockSize(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: needs root for losetup")
	}
	losetup, err := exec.LookPath("losetup")
	if err != nil {
		t.Skip("SKIPPED LOUDLY: losetup not installed (util-linux)")
	}
	f := tempLegFile(t, t.TempDir(), "a", 8<<20)
	out, err := exec.Command(losetup, "--find", "--show", "--sector-size", "4096", f).CombinedOutput()
	if err != nil {
		t.Skipf("SKIPPED LOUDLY: no loop device with 4096-byte sectors (%v: %s)", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command(losetup, "-d", dev).Run() })
	l := openTestLeg(t, dev)
	defer l.Close()
	if got := legBlockSize(l); got != 4096 {
		t.Fatalf("loop device with 4096-byte sectors reports %d", got)
	}
	fl := openTestLeg(t, f)
	defer fl.Close()
	if got := legBlockSize(fl); got != 512 {
		t.Fatalf("regular file reports %d", got)
	}
}
