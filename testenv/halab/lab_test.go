package halab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

// leftovers lists what a closed lab left behind: namespaces, processes in
// its namespaces or from its folder, loop devices on its files, its folder.
func leftovers(l *Lab, pids []int) []string {
	var left []string
	ents, _ := os.ReadDir("/var/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), l.prefix) {
			left = append(left, "netns "+e.Name())
		}
	}
	for _, p := range pids {
		if err := syscall.Kill(p, 0); err == nil || !errors.Is(err, syscall.ESRCH) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
			left = append(left, fmt.Sprintf("process %d %q", p, strings.ReplaceAll(string(b), "\x00", " ")))
		}
	}
	for _, dir := range []string{l.Dir, l.lunDir} {
		if out, err := exec.Command("losetup", "-l", "-n", "-O", "NAME,BACK-FILE").Output(); err == nil {
			for _, line := range strings.Split(string(out), "\n") {
				if strings.Contains(line, dir) {
					left = append(left, "loop "+line)
				}
			}
		}
		if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil && strings.Contains(string(b), dir) {
			left = append(left, "a mount under "+dir)
		}
		if _, err := os.Stat(dir); err == nil {
			left = append(left, "folder "+dir)
		}
	}
	for _, k := range children() {
		left = append(left, "child process "+k)
	}
	return left
}

// TestLab brings the topology up and checks what the failover tests rely
// on: nodes isolated in their own namespaces, both reaching both arrays, a
// serial line that can be cut, a client loop through a VIP moved by hand
// that measures the outage and finds lost commits, crash and freeze of a
// node, and a Close that leaves nothing behind.
func TestLab(t *testing.T) {
	// The LUN files in a folder of their own (the bench's tmpfs), in a
	// folder of the lab's there, gone at Close like the rest.
	luns := t.TempDir()
	l := ForTest(t, Options{Name: "t", Private: []string{"/etc/keepalived"}, LUNDir: luns}, iscsitarget.TgtdAvailable, PGAvailable)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	n1, n2 := l.Node("n1"), l.Node("n2")
	for _, a := range l.Arrays() {
		if filepath.Dir(filepath.Dir(a.Backing)) != luns || strings.HasPrefix(a.Backing, l.Dir) {
			t.Fatalf("array %s's LUN file %s is not in a folder of the lab's in LUNDir %s", a.Name, a.Backing, luns)
		}
	}

	// Each node has its own hostname, PID and mount namespace.
	for _, n := range l.Nodes() {
		out, err := n.Sh(ctx, "hostname; cat /proc/1/comm; ls /proc | grep -c '^[0-9]'")
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(out)
		if len(f) != 3 || f[0] != n.ID || f[1] != "bash" || len(f[2]) > 1 {
			t.Fatalf("%s: hostname, PID 1, process count = %q; want %s, bash, a handful", n.ID, out, n.ID)
		}
	}
	mnt := filepath.Join(l.Dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := n1.Sh(ctx, "mount -t tmpfs tmpfs "+mnt+" && touch "+mnt+"/only-n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "only-n1")); err == nil {
		t.Fatal("a mount made in n1 shows on the host")
	}
	if out, err := n2.Sh(ctx, "ls "+mnt); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("a mount made in n1 shows in n2: %q %v", out, err)
	}
	// The private folder is the node's own.
	if err := os.WriteFile(filepath.Join(n1.Path("/etc/keepalived"), "mine"), []byte("n1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _ := n2.Sh(ctx, "ls /etc/keepalived"); strings.Contains(out, "mine") {
		t.Fatal("n1's private /etc/keepalived shows in n2")
	}
	if out, err := n1.Sh(ctx, "cat /etc/keepalived/mine"); err != nil || out != "n1" {
		t.Fatalf("n1 does not see its own /etc/keepalived: %q %v", out, err)
	}

	// Both nodes reach both arrays; a killed array refuses, a restarted one answers.
	for _, n := range l.Nodes() {
		for _, a := range l.Arrays() {
			c, err := DialIn(ctx, n.Netns(), a.Portal, time.Second)
			if err != nil {
				t.Fatalf("%s cannot reach array %s at %s: %v", n.ID, a.Name, a.Portal, err)
			}
			c.Close()
		}
	}
	a := l.Arrays()[0]
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	if c, err := DialIn(ctx, n1.Netns(), a.Portal, 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("a killed array still accepts connections")
	}
	if err := a.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := l.CutLink("n1", LinkISCSI, true); err != nil {
		t.Fatal(err)
	}
	if c, err := DialIn(ctx, n1.Netns(), a.Portal, 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("n1 reaches the array with its iSCSI cable cut")
	}
	l.CutLink("n1", LinkISCSI, false)

	// The serial line carries bytes between the nodes' ends, not when cut.
	checkSerial(t, n1.Serial, n2.Serial, true)
	l.CutSerial(true)
	checkSerial(t, n1.Serial, n2.Serial, false)
	l.CutSerial(false)

	// PostgreSQL on both nodes, independent, and the VIP on n1 by hand.
	var pgs []*Daemon
	for _, n := range l.Nodes() {
		dir := filepath.Join(n.Dir(), "pgdata")
		if err := InitDB(ctx, dir); err != nil {
			t.Fatal(err)
		}
		d, err := n.StartPostgres(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		pgs = append(pgs, d)
		if err := l.CreateLedger(ctx, net.JoinHostPort(n.Addr(), "5432")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n1.Run(ctx, "ip", "addr", "add", VIP+"/24", "dev", PublicNIC); err != nil {
		t.Fatal(err)
	}
	c := l.StartClient(ClientOptions{})
	defer c.Stop()
	if err := c.WaitCommits(ctx, 20, time.Now(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	before := c.Committed()
	pids := append(n1.Pids(), n2.Pids()...)
	for _, a := range l.Arrays() {
		pids = append(pids, a.Pid())
	}

	// Crash n1: every process of it dies and is reaped; the VIP moves to
	// n2 by hand.
	n1pids := n1.Pids()
	fault := time.Now()
	if err := n1.Crash(); err != nil {
		t.Fatal(err)
	}
	applied := time.Now()
	if err := n1.WaitDown(); err != nil {
		t.Fatal(err)
	}
	if len(n1pids) < 3 {
		t.Fatalf("n1 ran %v before the crash; want PID 1, postgres and its workers", n1pids)
	}
	for _, p := range n1pids {
		if err := syscall.Kill(p, 0); !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("process %d of n1 is still there after the crash (kill 0: %v)", p, err)
		}
	}
	select {
	case <-pgs[0].Done():
	case <-time.After(5 * time.Second):
		t.Fatal("n1's postgres daemon was not reaped after the crash")
	}
	time.Sleep(300 * time.Millisecond) // an outage the client must see
	if _, err := n2.Run(ctx, "ip", "addr", "add", VIP+"/24", "dev", PublicNIC); err != nil {
		t.Fatal(err)
	}
	// What a gratuitous ARP from n2 would do.
	if err := run("ip", "-n", l.Netns("client"), "neigh", "flush", "dev", PublicNIC); err != nil {
		t.Fatal(err)
	}
	o, err := c.WaitOutage(ctx, fault, applied, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if o.Duration < 300*time.Millisecond || o.Failures == 0 {
		t.Fatalf("outage %v with %d failures; the VIP was away at least 300ms", o.Duration, o.Failures)
	}
	t.Logf("outage with the VIP moved by hand: %v (%d failed attempts)", o.Duration, o.Failures)

	// n2's database is another one: every commit made on n1 is missing.
	missing, err := l.Missing(ctx, net.JoinHostPort(VIP, "5432"), before)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) != len(before) {
		t.Fatalf("%d of %d commits made on n1 missing on n2's independent database; want all", len(missing), len(before))
	}

	// Freeze n2's postgres: the client fails; thawed, it commits again.
	if err := n2.Freeze(pgs[1].Pid()); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	if err := c.wait(ctx, 10*time.Second, func(as []Attempt) bool {
		return len(as) > 0 && as[len(as)-1].Err != nil && as[len(as)-1].End.After(frozen)
	}); err != nil {
		t.Fatalf("a frozen postgres kept committing: %v", err)
	}
	if err := n2.Thaw(pgs[1].Pid()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitOutage(ctx, frozen, frozen, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	c.Stop()

	// n1 boots again with its cables plugged in, and without the VIP it
	// held when it crashed.
	if err := n1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if has, err := l.HasAddr("n1", VIP); err != nil || has {
		t.Fatalf("n1 holds the VIP again after a reboot (%v)", err)
	}
	if cn, err := DialIn(ctx, n1.Netns(), net.JoinHostPort(n2.Addr(), "5432"), time.Second); err != nil {
		t.Fatalf("n1 does not reach n2 after booting again: %v", err)
	} else {
		cn.Close()
	}
	pids = append(pids, n1.Pids()...)
	if dev, err := l.LoopDevice("lun", 8<<20); err != nil {
		t.Fatal(err)
	} else if out, err := exec.Command("losetup", "-n", "-O", "BACK-FILE", dev).Output(); err != nil || !strings.HasPrefix(strings.TrimSpace(string(out)), luns+"/") {
		t.Fatalf("loop device %s is backed by %q (%v), not a file in LUNDir %s", dev, out, err, luns)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(l, pids); len(left) > 0 {
		t.Fatalf("Close left behind: %s", strings.Join(left, "; "))
	}
}

// checkSerial writes on one end and reads on the other.
func checkSerial(t *testing.T, from, to string, want bool) {
	t.Helper()
	w, err := os.OpenFile(from, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := os.OpenFile(to, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, f := range []*os.File{w, r} {
		if err := exec.Command("stty", "-F", f.Name(), "raw", "-echo").Run(); err != nil {
			t.Fatal(err)
		}
	}
	msg := fmt.Sprintf("ping-%d\n", time.Now().UnixNano())
	if _, err := w.WriteString(msg); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 64)
		n, _ := r.Read(b)
		got <- string(b[:n])
	}()
	select {
	case s := <-got:
		if !want {
			t.Fatalf("serial line cut, but %q arrived", s)
		}
		if s != msg {
			t.Fatalf("serial line carried %q, want %q", s, msg)
		}
	case <-time.After(500 * time.Millisecond):
		if want {
			t.Fatal("nothing arrived over the serial line")
		}
		r.Close() // ends the reader goroutine
	}
}

// TestNewCleansUpAfterAFailedStep makes New fail once the networks and
// arrays exist (a node cannot boot: its overlay folder does not exist on
// the host) and checks that nothing of the lab is left.
func TestNewCleansUpAfterAFailedStep(t *testing.T) {
	for _, need := range []func() error{Available, iscsitarget.TgtdAvailable} {
		if err := need(); err != nil {
			t.Fatalf("the failover lab cannot run here: %v", err)
		}
	}
	_, err := New(context.Background(), Options{Name: "fail", Overlay: []string{"/nonexistent-halab-folder"}, Logf: t.Logf})
	if err == nil {
		t.Fatal("New booted a node with an overlay of a folder that does not exist")
	}
	if !strings.Contains(err.Error(), "booting") {
		t.Fatalf("New failed before booting a node (%v): the test must fail after arrays and networks exist", err)
	}
	prefix := fmt.Sprintf("halab-fail-%d-", os.Getpid())
	ents, _ := os.ReadDir("/var/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
	if dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*")); len(dirs) > 0 {
		t.Errorf("folders left behind: %v", dirs)
	}
	if kids := children(); len(kids) > 0 {
		t.Errorf("processes this test started are left: %v", kids)
	}
}

// children lists this process's children (tgtd, node PID 1s, nsenter),
// other developers' processes aside.
func children() []string {
	var kids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var p int
		if _, err := fmt.Sscan(e.Name(), &p); err != nil || ppid(p) != os.Getpid() {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		kids = append(kids, fmt.Sprintf("%d %s", p, strings.TrimSpace(string(b))))
	}
	return kids
}
