package iscsitarget

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Tgtd is a real tgtd (from the tgt package) on loopback with its own
// control port (-C) and portal, so several run side by side and beside any
// other test. Its configuration is recorded so Restart after Kill brings
// back the same targets, LUNs, accounts and ACLs.
type Tgtd struct {
	Portal  string // "127.0.0.1:PORT"
	Control int    // tgtd -C value
	Log     string // path of tgtd's output

	netns  string
	dial   func(addr string, timeout time.Duration) (net.Conn, error)
	mu     sync.Mutex
	cmd    *exec.Cmd
	script [][]string // tgtadm argument lists replayed on Restart
	exited chan struct{}
}

// TgtdAvailable returns an error naming what is missing to run tgtd.
func TgtdAvailable() error {
	for _, b := range []string{"tgtd", "tgtadm"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s not installed: run make deps (apt package tgt)", b)
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("tgtd needs root")
	}
	return nil
}

// freePort returns a currently unused TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartTgtd starts a tgtd with a fresh portal and control port; logDir
// receives its log.
func StartTgtd(logDir string) (*Tgtd, error) { return StartTgtdWith(logDir, TgtdOptions{}) }

// TgtdOptions place a tgtd elsewhere than a free port on 127.0.0.1.
type TgtdOptions struct {
	Portal string // "IP:PORT"; empty: a free port on 127.0.0.1
	Netns  string // a named network namespace (ip netns) to run tgtd in; empty: this one
	// Dial reaches Portal to check that tgtd listens; needed with Netns,
	// whose addresses this process cannot reach. Default net.DialTimeout.
	Dial func(addr string, timeout time.Duration) (net.Conn, error)
}

// StartTgtdWith starts a tgtd as o says, with its own control port.
func StartTgtdWith(logDir string, o TgtdOptions) (*Tgtd, error) {
	if err := TgtdAvailable(); err != nil {
		return nil, err
	}
	t := &Tgtd{Portal: o.Portal, netns: o.Netns, dial: o.Dial}
	if t.Portal == "" {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		t.Portal = fmt.Sprintf("127.0.0.1:%d", port)
	}
	if t.dial == nil {
		t.dial = func(addr string, timeout time.Duration) (net.Conn, error) {
			return net.DialTimeout("tcp", addr, timeout)
		}
	}
	t.Log = filepath.Join(logDir, "tgtd-"+strings.NewReplacer(":", "-", "[", "", "]", "").Replace(t.Portal)+".log")
	for range 20 {
		t.Control = 20000 + rand.IntN(12000)
		if _, err := os.Stat(fmt.Sprintf("/var/run/tgtd/socket.%d", t.Control)); errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	if err := t.start(); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *Tgtd) start() error {
	logf, err := os.OpenFile(t.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{"tgtd", "-f", "-C", strconv.Itoa(t.Control), "--iscsi", "portal=" + t.Portal}
	if t.netns != "" {
		args = append([]string{"ip", "netns", "exec", t.netns}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...) // ip netns exec execs tgtd: same pid
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting tgtd: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.mu.Lock()
	t.cmd, t.exited = cmd, exited
	t.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := t.adm("--op", "show", "--mode", "system"); err == nil {
			break
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(t.Log)
			return fmt.Errorf("tgtd exited at start: %s", b)
		default:
		}
		if time.Now().After(deadline) {
			t.Kill()
			return fmt.Errorf("tgtd did not answer tgtadm within 10s; see %s", t.Log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Wait for the portal too.
	for {
		c, err := t.dial(t.Portal, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tgtd portal %s not listening: %w", t.Portal, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// adm runs tgtadm against this tgtd.
func (t *Tgtd) adm(args ...string) (string, error) {
	full := append([]string{"-C", strconv.Itoa(t.Control), "--lld", "iscsi"}, args...)
	out, err := exec.Command("tgtadm", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("tgtadm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Adm runs tgtadm and records the call for Restart.
func (t *Tgtd) Adm(args ...string) error {
	if _, err := t.adm(args...); err != nil {
		return err
	}
	t.mu.Lock()
	t.script = append(t.script, args)
	t.mu.Unlock()
	return nil
}

// AddTarget creates target tid named iqn with one LUN (number 1) per
// backing file, open to every initiator. Extra tgtadm --params for the LUNs
// (e.g. "thin_provisioning=1") may be given.
func (t *Tgtd) AddTarget(tid int, iqn string, backing []string, lunParams string) error {
	luns := make([]LUN, len(backing))
	for i, b := range backing {
		luns[i] = LUN{Backing: b, Params: lunParams}
	}
	return t.AddTargetLUNs(tid, iqn, luns)
}

// LUN is one logical unit of AddTargetLUNs.
type LUN struct {
	Backing   string // backing file
	BlockSize int    // logical block size (tgtadm --blocksize); 0: 512
	Params    string // extra tgtadm --params, e.g. "thin_provisioning=1"
}

// AddTargetLUNs creates target tid named iqn with the LUNs numbered from
// 1, open to every initiator.
func (t *Tgtd) AddTargetLUNs(tid int, iqn string, luns []LUN) error {
	id := strconv.Itoa(tid)
	if err := t.Adm("--op", "new", "--mode", "target", "--tid", id, "-T", iqn); err != nil {
		return err
	}
	for i, l := range luns {
		lun := strconv.Itoa(i + 1)
		args := []string{"--op", "new", "--mode", "logicalunit", "--tid", id, "--lun", lun, "-b", l.Backing}
		if l.BlockSize != 0 {
			args = append(args, "--blocksize", strconv.Itoa(l.BlockSize))
		}
		if err := t.Adm(args...); err != nil {
			return err
		}
		if l.Params != "" {
			if err := t.Adm("--op", "update", "--mode", "logicalunit", "--tid", id, "--lun", lun, "--params", l.Params); err != nil {
				return err
			}
		}
	}
	return t.Adm("--op", "bind", "--mode", "target", "--tid", id, "-I", "ALL")
}

// AddAccount creates a CHAP account and binds it to tid; outgoing makes it
// the target's own credential for mutual CHAP.
func (t *Tgtd) AddAccount(tid int, user, secret string, outgoing bool) error {
	if err := t.Adm("--op", "new", "--mode", "account", "--user", user, "--password", secret); err != nil {
		return err
	}
	args := []string{"--op", "bind", "--mode", "account", "--tid", strconv.Itoa(tid), "--user", user}
	if outgoing {
		args = append(args, "--outgoing")
	}
	return t.Adm(args...)
}

// SetParam sets a target parameter (e.g. "MaxRecvDataSegmentLength=8192").
func (t *Tgtd) SetParam(tid int, name, value string) error {
	return t.Adm("--op", "update", "--mode", "target", "--tid", strconv.Itoa(tid), "-n", name, "-v", value)
}

func (t *Tgtd) signal(sig syscall.Signal) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cmd == nil || t.cmd.Process == nil {
		return errors.New("tgtd not running")
	}
	return t.cmd.Process.Signal(sig)
}

// Pid is tgtd's process ID (0 when not running).
func (t *Tgtd) Pid() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cmd == nil || t.cmd.Process == nil {
		return 0
	}
	return t.cmd.Process.Pid
}

// Pause stops tgtd with SIGSTOP: connections stay open but nothing answers.
func (t *Tgtd) Pause() error { return t.signal(syscall.SIGSTOP) }

// Resume continues a paused tgtd.
func (t *Tgtd) Resume() error { return t.signal(syscall.SIGCONT) }

// Kill kills tgtd with SIGKILL and waits for it: connections are reset and
// new ones refused.
func (t *Tgtd) Kill() error {
	err := t.signal(syscall.SIGKILL)
	t.mu.Lock()
	exited := t.exited
	t.mu.Unlock()
	if exited != nil {
		<-exited
	}
	return err
}

// Restart starts tgtd again after Kill on the same portal and replays the
// recorded configuration.
func (t *Tgtd) Restart() error {
	if err := t.start(); err != nil {
		return err
	}
	t.mu.Lock()
	script := t.script
	t.mu.Unlock()
	for _, args := range script {
		if _, err := t.adm(args...); err != nil {
			return err
		}
	}
	return nil
}

// Stop stops tgtd. tgtd ignores SIGTERM (it takes signals through a
// signalfd), and its state is only the recorded script, so SIGKILL is the
// clean way out.
func (t *Tgtd) Stop() error {
	t.Resume()
	return t.Kill()
}

// Nexuses lists the I_T nexus identifiers tgtd shows for target tid: one
// per logged-in session, derived from the initiator's ISID and the TSIH
// the target assigned, so a session that is dropped or reinstated shows
// up as a changed list.
func (t *Tgtd) Nexuses(tid int) ([]string, error) {
	out, err := t.adm("--op", "show", "--mode", "target")
	if err != nil {
		return nil, err
	}
	var ids []string
	in := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.TrimSpace(line)
		if strings.HasPrefix(line, "Target ") {
			in = strings.HasPrefix(line, fmt.Sprintf("Target %d:", tid))
		}
		if id, ok := strings.CutPrefix(f, "I_T nexus: "); ok && in {
			ids = append(ids, id)
		}
	}
	return ids, nil
}
