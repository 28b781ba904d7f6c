package volume

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// loopOver attaches a loop device over a new 1 MiB file (detached at the
// test's end if still attached).
func loopOver(t *testing.T, name string) (dev, file string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("loop devices need root")
	}
	file = filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(file, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", file).CombinedOutput()
	if err != nil {
		t.Fatalf("no loop device here: %v: %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if back, ok := loopBackFile(dev); ok && back == file {
			exec.Command("losetup", "-d", dev).Run()
		}
	})
	return dev, file
}

// stoppedFuse is a fuseAttach over loop device dev whose nbdfuse has
// already exited (the FUSE mount point is a plain folder).
func stoppedFuse(t *testing.T, dev string) *fuseAttach {
	f := &fuseAttach{dir: t.TempDir(), loop: dev, done: make(chan error, 1), log: slog.New(slog.DiscardHandler)}
	f.back, _ = loopBackFile(dev)
	f.done <- nil
	return f
}

// A stop detaches the volume's loop device; a loop device detached
// already (loop devices are the host's: a clean-up elsewhere may do it)
// makes the stop succeed, not block the group; and a number reused since
// for another file is left alone.
func TestFuseDetachIsIdempotentAndDetachesOnlyItsOwnLoop(t *testing.T) {
	dev, file := loopOver(t, "export")
	if err := stoppedFuse(t, dev).detach(); err != nil {
		t.Fatalf("detach: %v", err)
	}
	if back, ok := loopBackFile(dev); ok {
		t.Fatalf("%s still serves %s after the stop", dev, back)
	}

	dev, _ = loopOver(t, "export2")
	f := stoppedFuse(t, dev)
	if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
		t.Fatalf("losetup -d: %v: %s", err, out)
	}
	if err := f.detach(); err != nil {
		t.Fatalf("detach of a loop device detached already: %v (the group would block)", err)
	}

	dev, file = loopOver(t, "export3")
	f = stoppedFuse(t, dev)
	f.back = "/somewhere/else/volume" // what it served when the volume attached it
	if err := f.detach(); err != nil {
		t.Fatalf("detach: %v", err)
	}
	if back, ok := loopBackFile(dev); !ok || back != file {
		t.Fatalf("the stop detached %s, which serves another file now (%q, %v)", dev, back, ok)
	}
}
