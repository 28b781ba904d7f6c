package halab

import (
	"context"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNodeIgnoresTheHarnessUmask builds a lab while the harness's umask is
// 0177, as a test binary's was once two in-process nodes had listened on
// their sockets at once: the nodes' processes still start with 022, their
// /run/postgresql belongs to postgres with mode 755, and PostgreSQL starts
// there (it could not open its lock file in a folder of mode 600).
func TestNodeIgnoresTheHarnessUmask(t *testing.T) {
	if err := PGAvailable(); err != nil {
		t.Fatalf("the failover lab cannot run here: %v", err)
	}
	old := syscall.Umask(0o177)
	t.Cleanup(func() { syscall.Umask(old) }) // after the lab's Close
	l := ForTest(t, Options{Name: "um", Arrays: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, n := range l.Nodes() {
		out, err := n.Sh(ctx, "umask; stat -c %U:%a /run/postgresql")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Fields(out); !slices.Equal(got, []string{"0022", "postgres:755"}) {
			t.Errorf("%s: umask and /run/postgresql %q, want 0022 and postgres:755", n.ID, got)
		}
	}
	dir := filepath.Join(l.Dir, "pg")
	if err := InitDB(ctx, dir); err != nil {
		t.Fatal(err)
	}
	d, err := l.Node("n1").StartPostgres(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	d.Stop(30 * time.Second)
}

// TestNodeLoopDevicesGoWithTheNode: a loop device a node attached (on a
// file of its own /run, an ext4 on it mounted there, as hamirror's volume
// on its nbdfuse file) goes when the node crashes, as at a reboot, and
// when the lab closes, also one whose file's mount was lazily unmounted
// after the daemon that attached it was killed; the other node's loop
// device and one the lab made on a file both nodes see stay until then.
func TestNodeLoopDevicesGoWithTheNode(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "truncate"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed: run make deps", tool)
		}
	}
	l := ForTest(t, Options{Name: "lo", Arrays: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n1, n2 := l.Node("n1"), l.Node("n2")
	attach := func(n *Node, dir string) Loop {
		t.Helper()
		out, err := n.Sh(ctx, "set -e; mkdir -p "+dir+"; truncate -s 16M "+dir+"/disk.img\n"+
			"d=$(losetup -f --show "+dir+"/disk.img); mkfs.ext4 -q $d; mkdir -p "+dir+"/m; mount $d "+dir+"/m; echo $d")
		if err != nil {
			t.Fatal(err)
		}
		return findLoop(t, n, strings.TrimSpace(out))
	}
	lun, err := l.LoopDevice("lun", 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n1.Sh(ctx, "set -e; mkfs.ext4 -q "+lun+"; mkdir -p /run/lun; mount "+lun+" /run/lun"); err != nil {
		t.Fatal(err)
	}
	lunSeq, err := diskSeq(filepath.Base(lun))
	if err != nil {
		t.Fatal(err)
	}
	shared := Loop{Dev: lun, Seq: lunSeq}
	first, second := attach(n1, "/run/a"), attach(n2, "/run/a")
	if got, err := n1.Loops(); err != nil || !slices.Equal(got, []Loop{first}) {
		t.Fatalf("n1's loop devices: %v (%v), want %v alone (not n2's %v, not the lab's %v)", got, err, first, second, shared)
	}

	if err := n1.Crash(); err != nil {
		t.Fatal(err)
	}
	if err := n1.WaitDown(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, first)
	for _, l := range []Loop{second, shared} {
		if !l.Attached() {
			t.Errorf("%v, not n1's, went with n1", l)
		}
	}

	// A daemon that attached one is killed; something then unmounts the
	// file's folder lazily (as hamirror's next mirrord does to a killed
	// one's FUSE mount): the loop device no longer shows as the node's.
	if err := n1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := n1.StartDaemon("holder", "bash", "-c", "set -e; trap '' TERM; mkdir -p /run/f; mount -t tmpfs tmpfs /run/f\n"+
		"truncate -s 16M /run/f/disk.img; losetup -f --show /run/f/disk.img; exec sleep 1000")
	if err != nil {
		t.Fatal(err)
	}
	var killed Loop
	deadline := time.Now().Add(30 * time.Second)
	for killed.Dev == "" {
		if got, _ := n1.Loops(); len(got) == 1 {
			killed = got[0]
		} else if time.Now().After(deadline) {
			t.Fatalf("the daemon's loop device did not show up: %v", got)
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	d.Stop(100 * time.Millisecond)
	if _, err := n1.Sh(ctx, "umount -l /run/f"); err != nil {
		t.Fatal(err)
	}
	if got, _ := n1.Loops(); len(got) != 0 {
		t.Fatalf("n1 still shows %v after the lazy unmount; the test no longer shows what it means to", got)
	}
	if err := n2.Freeze(); err != nil {
		t.Fatal(err)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, l := range []Loop{killed, second, shared} {
		if l.Attached() {
			t.Errorf("%v is still attached after the lab's Close", l)
		}
	}
}

// findLoop returns node n's loop device dev as Loops lists it.
func findLoop(t *testing.T, n *Node, dev string) Loop {
	t.Helper()
	loops, err := n.Loops()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range loops {
		if l.Dev == dev {
			return l
		}
	}
	t.Fatalf("%s attached %s, but its loop devices are %v", n.ID, dev, loops)
	return Loop{}
}

// waitGone fails t unless l is detached within 10 s (the kernel lets go
// of a dead node's filesystems a moment after its processes are gone).
func waitGone(t *testing.T, l Loop) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.Attached() {
		if time.Now().After(deadline) {
			out, _ := exec.Command("losetup", "-l", l.Dev).CombinedOutput()
			t.Fatalf("%v is still attached 10s after its node went down: %s", l, strings.TrimSpace(string(out)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The mount a path is under, by the kernel's mountinfo lines.
func TestMountOf(t *testing.T) {
	ms := parseMountinfo(`21 1 0:19 / / rw - ext4 /dev/root rw
30 21 0:40 / /run rw - tmpfs tmpfs rw
31 30 0:41 / /run/hamirror/fuse-x/mnt rw - fuse nbdfuse rw
32 30 0:42 / /run/with\040space rw - tmpfs tmpfs rw
33 30 0:43 / /run rw - tmpfs tmpfs rw
`)
	for path, want := range map[string]string{
		"/run/hamirror/fuse-x/mnt/volume": "0:41",
		"/run/hamirror/fuse-x/mntvolume":  "0:43",
		"/run/with space/disk.img":        "0:42",
		"/run/disk.img":                   "0:43", // the later of two mounts on /run
		"/volume":                         "0:19",
	} {
		if got := mountOf(ms, path); got != want {
			t.Errorf("mountOf(%s) = %s, want %s", path, got, want)
		}
	}
}
