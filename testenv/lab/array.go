package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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

// Arrays is a tgtd in the lab's namespace serving one target per array
// (iqn.2026-01.lab:NAME, LUN 1 backed by a file in the lab folder).
type Arrays struct {
	Control int // tgtd -C value (control socket /var/run/tgtd/socket.N)
	Log     string
	cmd     *exec.Cmd
	exited  chan struct{}
	names   []string
}

// ArrayIQN is the target name of the array called name.
func ArrayIQN(name string) string { return "iqn.2026-01.lab:" + name }

// ArrayURL is the iscsi:// address of the array called name, as a node
// gives it to mirrord.
func ArrayURL(name string) string { return "iscsi://" + ArrayPortal + "/" + ArrayIQN(name) + "/1" }

// StartArrays starts tgtd on ArrayPortal inside the lab's namespace with
// one target per name, each backed by a new sparse file of size bytes in
// the lab folder. Stop it with Arrays.Stop (Lab.Close does not).
func (l *Lab) StartArrays(ctx context.Context, size int64, names ...string) (*Arrays, error) {
	for _, b := range []string{"tgtd", "tgtadm"} {
		if _, err := exec.LookPath(b); err != nil {
			return nil, fmt.Errorf("%s not installed: run make deps (apt package tgt)", b)
		}
	}
	a := &Arrays{Log: filepath.Join(l.cfg.Dir, "tgtd.log"), names: names}
	for range 50 {
		a.Control = 20000 + rand.IntN(12000)
		if _, err := os.Stat(fmt.Sprintf("/var/run/tgtd/socket.%d", a.Control)); errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	logf, err := os.Create(a.Log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	a.cmd = l.ClientCommand(context.Background(), "tgtd", "-f", "-C", strconv.Itoa(a.Control), "--iscsi", "portal="+ArrayPortal)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting tgtd in %s: %w", l.Netns(), err)
	}
	a.exited = make(chan struct{})
	go func() { a.cmd.Wait(); close(a.exited) }()
	if err := a.waitReady(ctx, l); err != nil {
		a.Stop()
		return nil, err
	}
	for i, name := range names {
		tid := strconv.Itoa(i + 1)
		backing := filepath.Join(l.cfg.Dir, "array-"+name+".img")
		if err := os.WriteFile(backing, nil, 0o600); err != nil {
			a.Stop()
			return nil, err
		}
		if err := os.Truncate(backing, size); err != nil {
			a.Stop()
			return nil, err
		}
		for _, args := range [][]string{
			{"--op", "new", "--mode", "target", "--tid", tid, "-T", ArrayIQN(name)},
			{"--op", "new", "--mode", "logicalunit", "--tid", tid, "--lun", "1", "-b", backing},
			{"--op", "bind", "--mode", "target", "--tid", tid, "-I", "ALL"},
		} {
			if err := a.adm(ctx, args...); err != nil {
				a.Stop()
				return nil, err
			}
		}
	}
	return a, nil
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
func (a *Arrays) waitReady(ctx context.Context, l *Lab) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-a.exited:
			b, _ := os.ReadFile(a.Log)
			return fmt.Errorf("tgtd exited at start: %s", b)
		default:
		}
		if a.adm(ctx, "--op", "show", "--mode", "system") == nil {
			if out, err := l.Client(ctx, "ss", "-Hltn", "sport = :3260"); err == nil && strings.Contains(out, ArrayPortal) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tgtd in %s not ready on %s within 15 s; see %s", l.Netns(), ArrayPortal, a.Log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop removes the targets and stops tgtd (killing it if it does not go).
func (a *Arrays) Stop() {
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
