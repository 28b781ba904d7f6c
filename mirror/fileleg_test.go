package mirror

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestFileLegAlignedAndUnalignedIO(t *testing.T) {
	p := tempLegFile(t, t.TempDir(), "leg", 4<<20)
	l, err := OpenLeg(p, LegOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fl := l.(*fileLeg)
	if fl.direct == nil {
		t.Log("file system refuses O_DIRECT: buffered I/O only")
	}
	cases := []struct {
		name   string
		off, n int64
		shift  int // misalign the caller's buffer
	}{
		{"aligned", 8192, 8192, 0},
		{"unaligned buffer", 16384, 4096, 3},
		{"unaligned offset", 4096*10 + 512, 1024, 0},
		{"odd length", 100_000, 777, 1},
		{"large unaligned buffer", 1 << 20, 9 << 20 / 8, 5},
	}
	for i, c := range cases {
		buf := make([]byte, c.n+int64(c.shift))[c.shift:]
		for j := range buf {
			buf[j] = byte(i*31 + j)
		}
		if err := l.WriteAt(buf, c.off, i%2 == 0); err != nil {
			t.Fatalf("%s: write: %v", c.name, err)
		}
		got := make([]byte, c.n+1)[1:]
		if err := l.ReadAt(got, c.off); err != nil {
			t.Fatalf("%s: read: %v", c.name, err)
		}
		if !bytes.Equal(got, buf) {
			t.Fatalf("%s: read back differs", c.name)
		}
	}
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(p)
	if raw[16384] != byte(1*31) {
		t.Fatal("data not in the file")
	}
	if err := l.WriteAt(make([]byte, 10), l.Size()-5, false); err == nil {
		t.Fatal("write past the end accepted")
	}
}

func TestFileLegZero(t *testing.T) {
	p := tempLegFile(t, t.TempDir(), "leg", 4<<20)
	l := openTestLeg(t, p)
	defer l.Close()
	ones := bytes.Repeat([]byte{1}, 1<<20)
	if err := l.WriteAt(ones, 0, false); err != nil {
		t.Fatal(err)
	}
	for _, unmap := range []bool{false, true} {
		if err := l.WriteAt(ones, 0, false); err != nil {
			t.Fatal(err)
		}
		if err := l.Zero(4096, 65536, unmap); err != nil {
			t.Fatalf("zero (unmap=%v): %v", unmap, err)
		}
		got := make([]byte, 1<<20)
		if err := l.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if got[4095] != 1 || got[4096] != 0 || got[4096+65535] != 0 || got[4096+65536] != 1 {
			t.Fatalf("zero (unmap=%v) changed the wrong bytes", unmap)
		}
	}
}

func TestOpenLegRefusals(t *testing.T) {
	if _, err := OpenLeg("nfs://host/export/leg", LegOptions{}); err == nil || !strings.Contains(err.Error(), "nfs://") {
		t.Fatalf("unknown URL leg: %v", err)
	}
	if _, err := OpenLeg(t.TempDir(), LegOptions{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "not a regular file or block device") {
		t.Fatalf("directory leg: %v", err)
	}
	if _, err := OpenLeg(filepath.Join(t.TempDir(), "missing"), LegOptions{}); err == nil {
		t.Fatal("missing file accepted")
	}
	p := tempLegFile(t, t.TempDir(), "ro", 1<<20)
	l, err := OpenLeg(p, LegOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.WriteAt(make([]byte, 4096), 0, false); err == nil {
		t.Fatal("read-only leg accepted a write")
	}
}

// TestBlockDeviceLeg runs a volume on two loop devices (real block devices).
func TestBlockDeviceLeg(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for losetup")
	}
	losetup, err := exec.LookPath("losetup")
	if err != nil {
		t.Skip("losetup not installed (util-linux)")
	}
	dir := t.TempDir()
	var devs [2]string
	for i := range 2 {
		f := tempLegFile(t, dir, []string{"a", "b"}[i], 32<<20)
		out, err := exec.Command(losetup, "--find", "--show", f).CombinedOutput()
		if err != nil {
			t.Skipf("no loop device available (%v: %s)", err, out)
		}
		devs[i] = strings.TrimSpace(string(out))
		t.Cleanup(func() { exec.Command(losetup, "-d", devs[i]).Run() })
	}
	legs := [2]Leg{openTestLeg(t, devs[0]), openTestLeg(t, devs[1])}
	if legs[0].Size() != 32<<20 {
		t.Fatalf("block device size %d", legs[0].Size())
	}
	if _, err := OpenLeg(devs[0], LegOptions{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second read-write open of a claimed device: %v, want in use", err)
	}
	if ro, err := OpenLeg(devs[0], LegOptions{ReadOnly: true}); err != nil {
		t.Fatalf("read-only open beside the claim (examine): %v", err)
	} else {
		ro.Close()
	}
	if _, err := Create(legs, CreateOptions{ChunkSize: 64 << 10, NodeID: "test-node"}); err != nil {
		t.Fatal(err)
	}
	v, err := Assemble(legs, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("blockdev"), 512*3)
	if err := v.WriteAt(data, 65536, true); err != nil {
		t.Fatal(err)
	}
	if err := v.Zero(1<<20, 1<<20, true); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		l := openTestLeg(t, d)
		got := make([]byte, len(data))
		if err := l.ReadAt(got, 65536); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: data not on the device (%v)", d, err)
		}
		info, err := Examine(l)
		l.Close()
		if err != nil || !info.Clean {
			t.Fatalf("%s: examine %v %v", d, info, err)
		}
	}
}
