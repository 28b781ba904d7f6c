package thindisk

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// Disk is one thin disk; Dir is a folder on it.
type Disk struct {
	Dir  string
	pool string // the tmpfs holding the image, seen from the test
}

const script = `set -e
mount -t tmpfs -o size=8m hamirror-thindisk "$1/pool"
truncate -s 64M "$1/pool/disk.img"
mkfs.ext2 -q -F "$1/pool/disk.img" >/dev/null
mount -o loop "$1/pool/disk.img" "$1/fs"
mkdir "$1/fs/dir"
echo ready
exec sleep 100000
`

// New builds the disk; it is torn down at the end of the test (close
// every file on it first: t.Cleanup runs last-in first-out).
func New(t testing.TB) *Disk {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("thindisk needs root (loop device, mounts)")
	}
	for _, tool := range []string{"unshare", "losetup", "mkfs.ext2", "truncate"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("thindisk needs %s: run make deps", tool)
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Fatalf("thindisk needs loop devices: %v", err)
	}
	base := t.TempDir()
	for _, d := range []string{"pool", "fs"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "thindisk", base)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait() // the namespace goes with it: the mounts and the loop device (autoclear)
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("thindisk: setting up: %q %v", line, err)
	}
	root := filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "root")
	d := &Disk{Dir: filepath.Join(root, base, "fs", "dir"), pool: filepath.Join(root, base, "pool")}
	t.Cleanup(func() { os.Remove(filepath.Join(d.pool, "filler")) }) // let the last writes back out
	return d
}

// Fill uses up the pool: what is written to the disk from now on is
// accepted into the page cache, but its fsync fails.
func (d *Disk) Fill(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(d.pool, "filler"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}

// Free gives the pool its space back.
func (d *Disk) Free(t testing.TB) {
	t.Helper()
	if err := os.Remove(filepath.Join(d.pool, "filler")); err != nil {
		t.Fatal(err)
	}
}
