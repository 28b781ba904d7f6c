package agents

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// loopDevice makes an image of 64 MiB formatted with mkfs and attaches
// it to a free loop device, detached at the end.
func loopDevice(t *testing.T, mkfs ...string) string {
	t.Helper()
	needRoot(t)
	needTool(t, "losetup", "mount")
	needTool(t, mkfs[0], map[string]string{"mkfs.ext4": "e2fsprogs", "mkfs.xfs": "xfsprogs"}[mkfs[0]])
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 320<<20); err != nil {
		t.Fatal(err)
	}
	sh(t, append(mkfs, img)...)
	dev := strings.TrimSpace(sh(t, "losetup", "-f", "--show", img))
	t.Cleanup(func() {
		// Our own mount, if a test failed with it mounted, then our loop.
		exec.Command("losetup", "-d", dev).Run()
	})
	return dev
}

func newFSAgent(t *testing.T, dev, dir string, extra map[string]any) (*fsAgent, *logBuffer) {
	t.Helper()
	a, lb := newAgent(t, "filesystem", map[string]any{"device": dev, "directory": dir, "fstype": "ext4"}, extra)
	fs := a.(*fsAgent)
	t.Cleanup(func() {
		syscall.Unmount(dir, syscall.MNT_DETACH) // only if the test failed mounted
	})
	return fs, lb
}

func TestFilesystemLifecycle(t *testing.T) {
	for _, fstype := range []string{"ext4", "xfs"} {
		t.Run(fstype, func(t *testing.T) {
			mkfs := []string{"mkfs.ext4", "-q", "-F"}
			if fstype == "xfs" {
				mkfs = []string{"mkfs.xfs", "-q", "-f"}
			}
			dev := loopDevice(t, mkfs...)
			dir := filepath.Join(t.TempDir(), "mnt", "data") // created by Start
			a, _ := newFSAgent(t, dev, dir, map[string]any{"fstype": fstype, "options": "noatime"})
			ctx := ctxFor(t, 30*time.Second)

			if err := a.Stop(ctx); err != nil {
				t.Fatalf("Stop before any Start: %v", err)
			}
			mustNotRunning(t, a.Monitor(ctx))
			twice(t, "Start", func() error { return a.Start(ctx) })
			if err := a.Monitor(ctx); err != nil {
				t.Fatalf("Monitor after Start: %v", err)
			}
			mi, _ := readMountinfo("/proc/self/mountinfo")
			if e, ok := mountAt(mi, dir); !ok || e.fstype != fstype || !hasOption(e.options, "noatime") {
				t.Fatalf("mount at %s = %+v, want %s with noatime", dir, e, fstype)
			}
			if err := os.WriteFile(filepath.Join(dir, "kept"), []byte("yes"), 0o644); err != nil {
				t.Fatal(err)
			}
			twice(t, "Stop", func() error { return a.Stop(ctx) })
			mustNotRunning(t, a.Monitor(ctx))
			if _, err := os.Stat(filepath.Join(dir, "kept")); err == nil {
				t.Fatal("the file is still visible after Stop: not unmounted")
			}
			if err := a.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if b, err := os.ReadFile(filepath.Join(dir, "kept")); err != nil || string(b) != "yes" {
				t.Fatalf("after a second Start the file reads %q, %v", b, err)
			}
			if err := a.Stop(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Stop kills every kind of user of the mount, including one that
// ignores SIGTERM, and unmounts.
func TestFilesystemStopKillsHolders(t *testing.T) {
	dev := loopDevice(t, "mkfs.ext4", "-q", "-F")
	dir := t.TempDir()
	a, lb := newFSAgent(t, dev, dir, map[string]any{"kill_grace": "300ms"})
	ctx := ctxFor(t, 30*time.Second)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	sleepBin := filepath.Join(dir, "sleep")
	sh(t, "cp", "/bin/sleep", sleepBin)
	procs := map[string]*exec.Cmd{
		"cwd":          startProc(t, dir, "/bin/sleep", "300"),
		"fd":           startProc(t, "/", "/bin/sh", "-c", "exec 3<"+filepath.Join(dir, "f")+"; exec /bin/sleep 300"),
		"exe":          startProc(t, "/", sleepBin, "300"),
		"ignores TERM": startProc(t, dir, "/bin/sh", "-c", "trap '' TERM; while :; do /bin/sleep 0.05; done"),
	}
	time.Sleep(100 * time.Millisecond) // let the shells open and trap
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := findHolders("/proc", st.Sys().(*syscall.Stat_t).Dev, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for what, c := range procs {
		found := false
		for _, h := range hs {
			found = found || h.pid == c.Process.Pid
		}
		if !found {
			t.Errorf("findHolders missed the process holding by %s (pid %d): %v", what, c.Process.Pid, hs)
		}
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	mustNotRunning(t, a.Monitor(ctx))
	for what, c := range procs {
		waitFor(t, 5*time.Second, "the "+what+" holder to die", func() bool { return !alive(c.Process.Pid) })
	}
	if !strings.Contains(lb.String(), "signal=killed") {
		t.Errorf("the holder that ignores SIGTERM was not sent SIGKILL; log:\n%s", lb)
	}
}

// setExt4State rewrites the superblock state of an unmounted ext4.
func setExt4State(t *testing.T, dev string, state int) {
	t.Helper()
	sh(t, "debugfs", "-w", "-R", "ssv state "+strconv.Itoa(state), dev)
}

func ext4Clean(t *testing.T, dev string) bool {
	out := sh(t, "dumpe2fs", "-h", dev)
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, "Filesystem state:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "Filesystem state:")) == "clean"
		}
	}
	t.Fatalf("dumpe2fs printed no state:\n%s", out)
	return false
}

// fsck auto runs e2fsck on a file system the kernel cannot make
// consistent itself, and only then; never leaves it unchecked.
func TestFilesystemFsck(t *testing.T) {
	needTool(t, "debugfs", "e2fsprogs")
	for _, tc := range []struct {
		name      string
		fsck      string
		state     int
		wantFsck  bool
		wantClean bool
	}{
		{"auto, clean", "auto", 1, false, true},
		{"auto, not clean", "auto", 0, true, true},
		{"auto, errors", "auto", 3, true, true},
		{"never, not clean", "never", 0, false, false},
		{"always, clean", "always", 1, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := loopDevice(t, "mkfs.ext4", "-q", "-F")
			setExt4State(t, dev, tc.state)
			dir := t.TempDir()
			a, lb := newFSAgent(t, dev, dir, map[string]any{"fsck": tc.fsck})
			ctx := ctxFor(t, 60*time.Second)
			if err := a.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if err := a.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			ran := strings.Contains(lb.String(), "argv=\"[e2fsck")
			if ran != tc.wantFsck {
				t.Errorf("e2fsck ran = %v, want %v; log:\n%s", ran, tc.wantFsck, lb)
			}
			if c := ext4Clean(t, dev); c != tc.wantClean {
				t.Errorf("clean after Stop = %v, want %v", c, tc.wantClean)
			}
		})
	}
}

// A crash copy of a mounted ext4 ("clean, needs_recovery") mounts
// without fsck: the kernel replays the journal.
func TestFilesystemCrashImageMountsWithoutFsck(t *testing.T) {
	dev := loopDevice(t, "mkfs.ext4", "-q", "-F")
	dir := t.TempDir()
	a, _ := newFSAgent(t, dev, dir, nil)
	ctx := ctxFor(t, 30*time.Second)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("journaled"), 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, "sync", "-f", filepath.Join(dir, "f"))
	crash := filepath.Join(t.TempDir(), "crash.img")
	sh(t, "dd", "if="+dev, "of="+crash, "bs=1M", "status=none")
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	cdev := strings.TrimSpace(sh(t, "losetup", "-f", "--show", crash))
	t.Cleanup(func() { exec.Command("losetup", "-d", cdev).Run() })
	s, err := readExt4Super(cdev)
	if err != nil {
		t.Fatal(err)
	}
	if s.incompat&ext4IncompatRecov == 0 {
		t.Fatalf("the crash copy does not need recovery (incompat %#x): the test made no crash image", s.incompat)
	}
	cdir := t.TempDir()
	b, lb := newFSAgent(t, cdev, cdir, nil)
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(cdir, "f")); err != nil || string(got) != "journaled" {
		t.Errorf("after replay the file reads %q, %v", got, err)
	}
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(lb.String(), "e2fsck") {
		t.Errorf("e2fsck ran on an image the kernel replays itself:\n%s", lb)
	}
}

func TestFilesystemMonitorFailures(t *testing.T) {
	dev := loopDevice(t, "mkfs.ext4", "-q", "-F")
	dir := t.TempDir()
	a, _ := newFSAgent(t, dev, dir, nil)
	ctx := ctxFor(t, 30*time.Second)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Remounted read-only (what errors=remount-ro does): failed.
	sh(t, "mount", "-o", "remount,ro", dir)
	mustFailed(t, a.Monitor(ctx), "read-only")
	sh(t, "mount", "-o", "remount,rw", dir)
	if err := a.Monitor(ctx); err != nil {
		t.Fatal(err)
	}
	// Unmounted behind our back: not running.
	sh(t, "umount", dir)
	mustNotRunning(t, a.Monitor(ctx))
	// Another file system at the directory: failed, and Start refuses.
	sh(t, "mount", "-t", "tmpfs", "hamirror-agents-test", dir)
	t.Cleanup(func() { syscall.Unmount(dir, 0) })
	mustFailed(t, a.Monitor(ctx), "not "+dev)
	mustFailed(t, a.Start(ctx), "already mounted at")
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("Stop with a foreign mount at the directory: %v", err)
	}
	if _, ok := mountAt(mustMountinfo(t), dir); !ok {
		t.Fatal("Stop unmounted a file system that is not the resource's")
	}
}

func mustMountinfo(t *testing.T) []mountEntry {
	mi, err := readMountinfo("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return mi
}

// A copy of the mount in another mount namespace keeps the file system
// alive: Stop fails naming it, Start refuses the busy device.
func TestFilesystemMountedInAnotherNamespace(t *testing.T) {
	needTool(t, "unshare", "util-linux")
	dev := loopDevice(t, "mkfs.ext4", "-q", "-F")
	dir := t.TempDir()
	a, _ := newFSAgent(t, dev, dir, nil)
	ctx := ctxFor(t, 30*time.Second)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// A process in a private copy of our mount namespace (as a service
	// started with PrivateTmp would be), using no file in it.
	other := startProc(t, "/", "unshare", "-m", "--propagation", "private", "/bin/sleep", "300")
	waitFor(t, 5*time.Second, "the namespace", func() bool {
		a, _ := os.Readlink("/proc/" + strconv.Itoa(other.Process.Pid) + "/ns/mnt")
		b, _ := os.Readlink("/proc/self/ns/mnt")
		exe, _ := os.Readlink("/proc/" + strconv.Itoa(other.Process.Pid) + "/exe")
		return a != b && strings.HasSuffix(exe, "sleep")
	})
	sctx := ctxFor(t, 3*time.Second)
	err := a.Stop(sctx)
	mustFailed(t, err, "in use")
	if !strings.Contains(err.Error(), strconv.Itoa(other.Process.Pid)) {
		t.Errorf("the error does not name pid %d of the other namespace: %v", other.Process.Pid, err)
	}
	mustFailed(t, a.Start(ctx), "in use")
	syscall.Kill(other.Process.Pid, syscall.SIGKILL)
	waitFor(t, 5*time.Second, "the namespace to go", func() bool { return !alive(other.Process.Pid) })
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("Stop once the other namespace is gone: %v", err)
	}
}
