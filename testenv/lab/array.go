package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ArrayPortal is where Lab.StartArrays' tgtd listens: the namespace side
// of the iSCSI network, reachable from every node's iscsi NIC.
var ArrayPortal = ClientAddr(NetISCSI) + ":3260"

// ArrayPortalPort is the portal on the namespace side of the iSCSI network
// at another TCP port, for a second tgtd (Lab.StartArraysOn).
func ArrayPortalPort(port int) string { return ClientAddr(NetISCSI) + ":" + strconv.Itoa(port) }

// Arrays is a tgtd in the lab's namespace serving one target per array
// (iqn.2026-01.lab:NAME, LUN 1 backed by a file in the lab folder).
type Arrays struct {
	Portal  string // host:port tgtd listens on
	Control int    // tgtd -C value (control socket /var/run/tgtd/socket.N)
	Log     string
	lab     *Lab
	cmd     *exec.Cmd
	exited  chan struct{}
	names   []string
}

// ArrayIQN is the target name of the array called name.
func ArrayIQN(name string) string { return "iqn.2026-01.lab:" + name }

// ArrayURL is the iscsi:// address of the array called name served by
// Lab.StartArrays (on ArrayPortal), as a node gives it to mirrord.
func ArrayURL(name string) string { return "iscsi://" + ArrayPortal + "/" + ArrayIQN(name) + "/1" }

// URL is the iscsi:// address of the array called name on this tgtd.
func (a *Arrays) URL(name string) string {
	return "iscsi://" + a.Portal + "/" + ArrayIQN(name) + "/1"
}

// Backing is the host file holding the array called name's LUN.
func (a *Arrays) Backing(name string) string {
	return filepath.Join(a.lab.cfg.Dir, "array-"+name+".img")
}

// StartArrays starts tgtd on ArrayPortal inside the lab's namespace with
// one target per name, each backed by a new sparse file of size bytes in
// the lab folder. Stop it with Arrays.Stop (Lab.Close does not).
func (l *Lab) StartArrays(ctx context.Context, size int64, names ...string) (*Arrays, error) {
	return l.StartArraysOn(ctx, ArrayPortal, size, names...)
}

// StartArraysOn is StartArrays with tgtd listening on portal (an address
// of the namespace, e.g. ArrayPortalPort(3261)): one tgtd per array lets
// a test crash one array alone (Kill, Restart).
func (l *Lab) StartArraysOn(ctx context.Context, portal string, size int64, names ...string) (*Arrays, error) {
	for _, b := range []string{"tgtd", "tgtadm"} {
		if _, err := exec.LookPath(b); err != nil {
			return nil, fmt.Errorf("%s not installed: run make deps (apt package tgt)", b)
		}
	}
	a := &Arrays{Portal: portal, lab: l, names: names}
	for _, name := range names {
		backing := a.Backing(name)
		if err := os.WriteFile(backing, nil, 0o600); err != nil {
			return nil, err
		}
		if err := os.Truncate(backing, size); err != nil {
			return nil, err
		}
	}
	if err := a.start(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// start runs tgtd and configures a target per array over the existing
// backing files.
func (a *Arrays) start(ctx context.Context) error {
	_, port, err := net.SplitHostPort(a.Portal)
	if err != nil {
		return fmt.Errorf("array portal %q: %w", a.Portal, err)
	}
	for range 50 {
		a.Control = 20000 + rand.IntN(12000)
		if _, err := os.Stat(fmt.Sprintf("/var/run/tgtd/socket.%d", a.Control)); errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	a.Log = filepath.Join(a.lab.cfg.Dir, "tgtd-"+port+".log")
	logf, err := os.OpenFile(a.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	a.cmd = a.lab.ClientCommand(context.Background(), "tgtd", "-f", "-C", strconv.Itoa(a.Control), "--iscsi", "portal="+a.Portal)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		return fmt.Errorf("starting tgtd in %s: %w", a.lab.Netns(), err)
	}
	a.exited = make(chan struct{})
	go func() { a.cmd.Wait(); close(a.exited) }()
	if err := a.waitReady(ctx, port); err != nil {
		a.Stop()
		return err
	}
	for i, name := range a.names {
		tid := strconv.Itoa(i + 1)
		for _, args := range [][]string{
			{"--op", "new", "--mode", "target", "--tid", tid, "-T", ArrayIQN(name)},
			{"--op", "new", "--mode", "logicalunit", "--tid", tid, "--lun", "1", "-b", a.Backing(name)},
			{"--op", "bind", "--mode", "target", "--tid", tid, "-I", "ALL"},
		} {
			if err := a.adm(ctx, args...); err != nil {
				a.Stop()
				return err
			}
		}
	}
	return nil
}

func (a *Arrays) adm(ctx context.Context, args ...string) error {
	full := append([]string{"-C", strconv.Itoa(a.Control), "--lld", "iscsi"}, args...)
	out, err := exec.CommandContext(ctx, "tgtadm", full...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("tgtadm %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// waitReady waits until tgtd answers tgtadm and its portal accepts
// connections inside the namespace.
func (a *Arrays) waitReady(ctx context.Context, port string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-a.exited:
			b, _ := os.ReadFile(a.Log)
			return fmt.Errorf("tgtd exited at start: %s", b)
		default:
		}
		if a.adm(ctx, "--op", "show", "--mode", "system") == nil {
			if out, err := a.lab.Client(ctx, "ss", "-Hltn", "sport = :"+port); err == nil && strings.Contains(out, a.Portal) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tgtd in %s not ready on %s within 15 s; see %s", a.lab.Netns(), a.Portal, a.Log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill crashes the arrays: SIGKILL to tgtd (its connections are reset,
// new ones refused), and waits for it to die. The backing files keep
// what tgtd wrote; Restart brings the arrays back over them.
func (a *Arrays) Kill() {
	syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
	<-a.exited
}

// Pause hangs the arrays: SIGSTOP to tgtd. Its connections stay open and
// the kernel still accepts new ones, but nothing is answered (a hung
// array, the case a leg timeout exists for). Resume undoes it.
func (a *Arrays) Pause() error { return syscall.Kill(-a.cmd.Process.Pid, syscall.SIGSTOP) }

// Resume continues the arrays after Pause.
func (a *Arrays) Resume() error { return syscall.Kill(-a.cmd.Process.Pid, syscall.SIGCONT) }

// Restart starts a new tgtd serving the same arrays over the same backing
// files, after Kill.
func (a *Arrays) Restart(ctx context.Context) error {
	select {
	case <-a.exited:
	default:
		return errors.New("restart arrays: tgtd still runs (Kill it first)")
	}
	os.Remove(fmt.Sprintf("/var/run/tgtd/socket.%d", a.Control))
	os.Remove(fmt.Sprintf("/var/run/tgtd/socket.%d.lock", a.Control))
	return a.start(ctx)
}

// Stop removes the targets and stops tgtd (killing it if it does not go).
func (a *Arrays) Stop() {
	select {
	case <-a.exited:
		return
	default:
	}
	a.Resume() // a paused tgtd cannot stop
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range a.names {
		_ = a.adm(ctx, "--op", "delete", "--mode", "target", "--tid", strconv.Itoa(i+1), "--force")
	}
	_ = a.adm(ctx, "--op", "delete", "--mode", "system")
	select {
	case <-a.exited:
	case <-time.After(5 * time.Second):
		syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		<-a.exited
	}
}
