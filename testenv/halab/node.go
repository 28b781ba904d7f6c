package halab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Node is one server of the lab: its own network namespace, and while it
// is up a process tree in its own mount, IPC, UTS and PID namespaces whose
// PID 1 is a small reaper. Every process started through the node runs in
// all of them, so a crash (SIGKILL of that PID 1) kills every one of them
// at once, as pulling the power would.
type Node struct {
	ID     string // "n1" or "n2"
	Index  int    // 1 or 2
	Serial string // the device of its end of the serial line (a pty)
	lab    *Lab
	dir    string

	mu      sync.Mutex
	init    *exec.Cmd     // nsenter → unshare; its child is the node's PID 1
	initPid int           // host PID of the node's PID 1
	pidNS   string        // "pid:[inode]" of the node's PID namespace
	exited  chan struct{} // closed when the node's process tree is gone
	dying   chan struct{} // after a crash, until waited for
	filled  bool
	// loops are the loop devices found on the node's own filesystems
	// before its processes (or a daemon of it) were killed, until they
	// are seen gone (see loops.go).
	loops []Loop
}

func (l *Lab) newNode(i int, serial string) (*Node, error) {
	n := &Node{ID: fmt.Sprintf("n%d", i), Index: i, Serial: serial, lab: l, dir: filepath.Join(l.Dir, fmt.Sprintf("n%d", i))}
	if err := os.MkdirAll(filepath.Join(n.dir, "log"), 0o755); err != nil {
		return nil, err
	}
	return n, nil
}

// Addr returns the node's address on the public network.
func (n *Node) Addr() string { return fmt.Sprintf("10.20.0.%d", n.Index) }

// PrivateAddr returns the node's address on private link k (1 or 2).
func (n *Node) PrivateAddr(k int) string { return fmt.Sprintf("10.2%d.0.%d", k, n.Index) }

// Netns returns the node's network namespace name.
func (n *Node) Netns() string { return n.lab.ns(n.ID) }

// Dir returns the node's folder on the host (its logs and private copies).
func (n *Node) Dir() string { return n.dir }

// Path returns the host path of the node's own copy of a Private or
// Overlay directory p (e.g. Path("/etc/corosync")).
func (n *Node) Path(p string) string { return filepath.Join(n.dir, "root", p) }

// Up reports whether the node runs.
func (n *Node) Up() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.init != nil
}

// Start boots the node: its cables are plugged in, then its namespaces are
// made and its private directories mounted. A node that is up is left as
// it is.
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.init != nil {
		return nil
	}
	if err := n.waitDownLocked(); err != nil {
		return err
	}
	if err := n.resetNetwork(); err != nil {
		return err
	}
	if err := n.lab.setLinks(n.ID, false); err != nil {
		return err
	}
	if !n.filled {
		if err := n.fillPrivate(); err != nil {
			return err
		}
		n.filled = true
	}
	script, err := n.initScript()
	if err != nil {
		return err
	}
	cmd := exec.Command("nsenter", "--net=/var/run/netns/"+n.Netns(),
		"unshare", "--mount", "--ipc", "--uts", "--pid", "--fork", "--mount-proc", "--propagation", "private",
		"bash", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(n.dir, "log", "init.log")) // this boot's only
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: starting its namespaces: %w", n.ID, err)
	}
	exited := make(chan struct{})
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("unexpected %q", line)
		}
		ready <- err
	}()
	go func() { cmd.Wait(); close(exited) }()
	fail := func(err error) error {
		cmd.Process.Kill()
		<-exited
		b, _ := os.ReadFile(logf.Name())
		return fmt.Errorf("%s: booting: %w (init log: %s)", n.ID, err, strings.TrimSpace(string(b)))
	}
	select {
	case err := <-ready:
		if err != nil {
			return fail(err)
		}
	case <-time.After(20 * time.Second):
		return fail(errors.New("no ready within 20s"))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	pid, err := childOf(cmd.Process.Pid)
	if err != nil {
		return fail(err)
	}
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		return fail(err)
	}
	n.init, n.initPid, n.pidNS, n.exited = cmd, pid, ns, exited
	n.lab.serial.Powered(n.Index-1, true)
	n.lab.opt.Logf("%s: up (PID 1 is host pid %d)", n.ID, pid)
	return nil
}

// resetNetwork gives the node's interfaces back their own addresses only
// and empties its neighbour cache, as a reboot does: what a dead node's
// daemons added (a VIP) does not outlive the node's processes otherwise,
// since its network namespace does.
func (n *Node) resetNetwork() error {
	var b strings.Builder
	for nic, addr := range nodeNICs(n.Index) {
		fmt.Fprintf(&b, "addr flush dev %s\naddr add %s dev %s\n", nic, addr, nic)
	}
	b.WriteString("neigh flush all\n")
	cmd := exec.Command("ip", "-n", n.Netns(), "-batch", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: resetting its network: %w: %s", n.ID, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// bootUmask is the umask of every process of a node, as after a boot:
// not the harness's, which any goroutine of it may have changed.
const bootUmask = "022"

// initScript is the node's boot: private /run and /dev/shm (with
// PostgreSQL's socket folder, owned by user postgres where that user
// exists), the private and overlay directories, then a PID 1 that reaps
// every orphan. A step that fails fails the boot, its reason in init.log.
func (n *Node) initScript() (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "set -e\numask %s\nhostname %s\n", bootUmask, n.ID)
	b.WriteString("mount -t tmpfs -o mode=0755 tmpfs /run\nmkdir -p /run/lock /run/postgresql\n")
	if _, err := user.Lookup("postgres"); err == nil {
		b.WriteString(`chown postgres:postgres /run/postgresql || { echo "halab: cannot give /run/postgresql to user postgres: PostgreSQL could not make its lock file there" >&2; exit 1; }` + "\n")
		b.WriteString(`[ "$(stat -c %U:%a /run/postgresql)" = postgres:755 ] || { echo "halab: /run/postgresql is $(stat -c %U:%a /run/postgresql), want postgres:755" >&2; exit 1; }` + "\n")
	}
	b.WriteString("mount -t tmpfs -o mode=1777 tmpfs /dev/shm\n")
	for _, p := range n.lab.opt.Private {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		fmt.Fprintf(&b, "mount --bind %s %s\n", shellQuote(n.Path(p)), shellQuote(p))
	}
	for _, p := range n.lab.opt.Overlay {
		fmt.Fprintf(&b, "mount -t overlay overlay -o ro,lowerdir=%s:%s %s\n", n.Path(p), p, shellQuote(p))
	}
	b.WriteString("echo ready\nexec bash -c 'exec >/dev/null 2>&1; while :; do sleep 1000000 & wait; done'\n")
	return b.String(), nil
}

// fillPrivate gives the node its own copy of every Private directory and
// an (empty unless filled by the caller) folder for every Overlay one.
func (n *Node) fillPrivate() error {
	for _, p := range n.lab.opt.Private {
		if _, err := os.Stat(p); err != nil {
			n.lab.opt.Logf("%s: %s not on this host: not made private", n.ID, p)
			continue
		}
		dst := n.Path(p)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if _, err := os.Stat(dst); err == nil {
			continue
		}
		if err := run("cp", "-a", p, dst); err != nil {
			return err
		}
	}
	for _, p := range n.lab.opt.Overlay {
		if err := os.MkdirAll(n.Path(p), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// Crash is a power cut: every cable is pulled at the switch, then every
// process of the node gets SIGKILL at once (its PID 1 dies, and the kernel
// kills the rest of its PID namespace, stopped processes included). It
// returns once the signal is sent: nothing of the node runs user code any
// more; WaitDown waits until the kernel has torn its processes down. A node
// that is down is left as it is.
func (n *Node) Crash() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.init == nil {
		return nil
	}
	// Cables first, so that nothing the dying processes' sockets send
	// (FIN, RST) gets out: a server losing power sends nothing.
	err := n.lab.setLinks(n.ID, true)
	err = errors.Join(err, n.killLocked())
	n.lab.opt.Logf("%s: crashed", n.ID)
	return err
}

// WaitDown waits until the processes of a crashed node are gone.
func (n *Node) WaitDown() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.waitDownLocked()
}

func (n *Node) waitDownLocked() error {
	if n.dying == nil {
		return nil
	}
	select {
	case <-n.dying:
		n.dying = nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s: its processes did not die within 30s of SIGKILL", n.ID)
	}
	// Its loop devices were marked to go when their last user (the dead
	// node's filesystems) let go; Close checks that they went.
	n.loops, _ = releaseAll(n.loops, 0)
	return nil
}

// Loops returns the loop devices attached on the node's own filesystems
// (a file on its private /run, the volume's FUSE file): those the node
// attached. Loop devices are the host's; the node's crash marks these to
// be detached as its reboot would, and WaitDown returns once its
// processes, the last users of them, are gone.
func (n *Node) Loops() ([]Loop, error) {
	n.mu.Lock()
	pid := n.initPid
	n.mu.Unlock()
	if pid == 0 {
		return nil, fmt.Errorf("%s is down", n.ID)
	}
	return loopsOf(pid)
}

// loopsGone waits up to wait for the loop devices of the node, which is
// down, to be gone, and says which are not.
func (n *Node) loopsGone(wait time.Duration) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	left, err := releaseAll(n.loops, wait)
	n.loops = left
	if len(left) > 0 {
		err = errors.Join(err, fmt.Errorf("%s: its loop devices %v are still attached %v after it went down (busy: see losetup -a, and mounts of them)", n.ID, left, wait))
	}
	return err
}

// noteLoopsLocked adds the node's loop devices to n.loops.
func (n *Node) noteLoopsLocked() {
	if n.initPid == 0 {
		return
	}
	found, err := loopsOf(n.initPid)
	if err != nil {
		n.lab.opt.Logf("%s: looking for its loop devices: %v", n.ID, err)
	}
	for _, l := range found {
		if !slices.Contains(n.loops, l) {
			n.loops = append(n.loops, l)
		}
	}
}

// noteLoops records the node's loop devices before one of its daemons is
// killed: a successor may lazily unmount the dead one's FUSE mount, after
// which its loop device no longer shows as the node's.
func (n *Node) noteLoops() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.noteLoopsLocked()
}

// halt kills the node's processes without touching its cables, and waits
// for them (Close).
func (n *Node) halt() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.init != nil {
		if err := n.killLocked(); err != nil {
			return err
		}
	}
	return n.waitDownLocked()
}

func (n *Node) killLocked() error {
	n.lab.serial.Powered(n.Index-1, false)
	// Its loop devices, found while its mounts are there to tell them,
	// go when the kernel has torn its filesystems down, as at a reboot.
	n.noteLoopsLocked()
	for _, l := range n.loops {
		if err := l.release(); err != nil {
			n.lab.opt.Logf("%s: %v", n.ID, err)
		}
	}
	pids := pidsIn(n.pidNS)
	err := syscall.Kill(n.initPid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		err = nil
	}
	// The node's processes now die, stopped or not. A stopped nsenter
	// outside the node (see continueAll) would never reap its child, and
	// a node whose zombie is not reaped cannot finish dying.
	continueParents(pids)
	n.init, n.initPid, n.dying = nil, 0, n.exited
	return err
}
