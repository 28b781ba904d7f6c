package halab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Command returns a command that runs name inside the node (all its
// namespaces), with the node's umask (022). Cancelling ctx kills the
// command inside the node too.
func (n *Node) Command(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	n.mu.Lock()
	pid := n.initPid
	n.mu.Unlock()
	if pid == 0 {
		return nil, fmt.Errorf("%s is down", n.ID)
	}
	// The shell sets the umask and becomes name (exec: the same PID).
	full := append([]string{"-t", strconv.Itoa(pid), "-n", "-m", "-i", "-u", "-p", "--wd=/", "--",
		"sh", "-c", "umask " + bootUmask + ` && exec "$0" "$@"`, name}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", full...)
	// Its own process group: a Ctrl-C at the terminal reaches the harness,
	// which cleans up in order, not every command at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killTree(cmd.Process.Pid) }
	cmd.WaitDelay = 5 * time.Second
	return cmd, nil
}

// Run runs a command inside the node and returns its combined output.
func (n *Node) Run(ctx context.Context, name string, args ...string) (string, error) {
	cmd, err := n.Command(ctx, name, args...)
	if err != nil {
		return "", err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %s: %w: %s", n.ID, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Sh runs a bash script inside the node.
func (n *Node) Sh(ctx context.Context, script string) (string, error) {
	return n.Run(ctx, "bash", "-c", script)
}

// Daemon is a long-running process started in a node. Its output goes to
// a log in the node's folder; the harness reaps it.
type Daemon struct {
	Name string
	Log  string
	node *Node
	cmd  *exec.Cmd
	done chan struct{}
	pid  int // host PID of the daemon itself (nsenter's child)
}

// StartDaemon starts name in the node, in the foreground (the daemon must
// not fork away; its flags say so), logging to log/NAME.log.
func (n *Node) StartDaemon(name string, args ...string) (*Daemon, error) {
	if len(args) == 0 {
		return nil, errors.New("halab: StartDaemon needs a command")
	}
	cmd, err := n.Command(context.Background(), args[0], args[1:]...)
	if err != nil {
		return nil, err
	}
	d := &Daemon{Name: name, Log: filepath.Join(n.dir, "log", name+".log"), node: n, cmd: cmd, done: make(chan struct{})}
	logf, err := os.OpenFile(d.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: starting %s: %w", n.ID, name, err)
	}
	go func() { cmd.Wait(); close(d.done) }()
	if d.pid, err = childOf(cmd.Process.Pid); err != nil {
		killTree(cmd.Process.Pid)
		<-d.done
		return nil, fmt.Errorf("%s: %s: %w", n.ID, name, err)
	}
	return d, nil
}

// Pid is the daemon's host PID.
func (d *Daemon) Pid() int { return d.pid }

// Done is closed once the daemon has exited (and been reaped).
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Signal sends sig to the daemon.
func (d *Daemon) Signal(sig syscall.Signal) error { return syscall.Kill(d.pid, sig) }

// Stop sends SIGTERM and waits up to grace, then SIGKILL.
func (d *Daemon) Stop(grace time.Duration) {
	d.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return
	case <-time.After(grace):
	}
	d.node.noteLoops()
	killTree(d.cmd.Process.Pid)
	<-d.done
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
