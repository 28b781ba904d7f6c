package agents

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// basePath is the PATH every command gets: mirrord's own environment
// (systemd's, a shell's) is not passed on, so a command behaves the same
// whoever started the daemon.
const basePath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// account is a local user commands run as (only when mirrord is root).
type account struct {
	name   string
	uid    uint32
	gid    uint32
	groups []uint32
	home   string
}

// lookupAccount resolves a user name from the local user database.
func lookupAccount(name string) (*account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("no local user %q (create it, or name another): %w", name, err)
	}
	a := &account{name: u.Username, home: u.HomeDir}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("user %q has a non-numeric uid or gid: %w", name, err)
	}
	a.uid, a.gid = uint32(uid), uint32(gid)
	gids, err := u.GroupIds()
	if err == nil {
		for _, g := range gids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				a.groups = append(a.groups, uint32(n))
			}
		}
	}
	return a, nil
}

// command is one program run by an agent.
type command struct {
	argv []string
	env  []string // on top of basePath (and HOME/USER/LOGNAME for as)
	as   *account // nil: as mirrord itself
	dir  string
}

// result is how a command ended.
type result struct {
	code   int    // exit status (0..255)
	output []byte // the last outputLimit bytes of stdout and stderr, interleaved
}

const (
	outputLimit = 16 << 10
	// pipeGrace bounds the wait for the output pipe after the command
	// exited: a start script that leaves a daemon holding the pipe must
	// not hold the agent until the daemon dies.
	pipeGrace = 250 * time.Millisecond
)

// tail keeps the last outputLimit bytes written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - outputLimit; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tail) bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.buf)
}

// run runs c in its own process group with stdin on /dev/null. When ctx
// ends first, the whole group gets SIGKILL (children a script started
// included) and run returns an error wrapping ctx.Err(). A command that
// ran and exited returns its exit code with a nil error, whatever the
// code; a command killed by a signal is an error.
func run(ctx context.Context, log *slog.Logger, c command) (result, error) {
	cmd := exec.CommandContext(ctx, c.argv[0], c.argv[1:]...)
	c.prepare(cmd, &syscall.SysProcAttr{Setpgid: true})
	var out tail
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Cancel = func() error {
		// The negative pid is the process group Setpgid made.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = pipeGrace
	start := time.Now()
	err := cmd.Run()
	res := result{output: out.bytes(), code: -1}
	if cmd.ProcessState != nil {
		res.code = cmd.ProcessState.ExitCode()
	}
	log.Debug("command ran", "argv", c.argv, "code", res.code, "took", time.Since(start).Round(time.Millisecond),
		"output", strings.TrimSpace(string(res.output)))
	if ctx.Err() != nil && (err != nil || res.code != 0) {
		return res, fmt.Errorf("%s: killed after the timeout (%w); output: %s", c.argv[0], ctx.Err(), lastLines(res.output, 5))
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil, errors.Is(err, exec.ErrWaitDelay) && res.code == 0:
		return res, nil
	case errors.As(err, &exitErr) && res.code >= 0:
		return res, nil
	}
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, exec.ErrNotFound) {
		return res, fmt.Errorf("%s is not installed or not executable: %w", c.argv[0], err)
	}
	return res, fmt.Errorf("%s: %w; output: %s", c.argv[0], err, lastLines(res.output, 5))
}

// prepare gives cmd c's environment (basePath, LANG=C, c.env and, for
// an account, its HOME, USER and LOGNAME), working directory and
// credentials, on top of attr (the process group or session).
func (c command) prepare(cmd *exec.Cmd, attr *syscall.SysProcAttr) {
	cmd.Dir = c.dir
	cmd.Env = append([]string{basePath, "LANG=C"}, c.env...)
	cmd.SysProcAttr = attr
	if c.as != nil {
		attr.Credential = &syscall.Credential{Uid: c.as.uid, Gid: c.as.gid, Groups: c.as.groups}
		cmd.Env = append(cmd.Env, "HOME="+c.as.home, "USER="+c.as.name, "LOGNAME="+c.as.name)
		if cmd.Dir == "" {
			cmd.Dir = "/" // our working directory may be closed to that user
		}
	}
}

// lastLines returns the last n non-empty lines of b, joined by " | ", for
// error messages.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var keep []string
	for i := len(lines) - 1; i >= 0 && len(keep) < n; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			keep = append(keep, l)
		}
	}
	if len(keep) == 0 {
		return "(none)"
	}
	for i, j := 0, len(keep)-1; i < j; i, j = i+1, j-1 {
		keep[i], keep[j] = keep[j], keep[i]
	}
	return strings.Join(keep, " | ")
}

// remaining is the time left before ctx's deadline (fallback when none).
func remaining(ctx context.Context, fallback time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return time.Until(dl)
	}
	return fallback
}

// sleepCtx waits d or until ctx ends (then it returns ctx's error).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// runAs resolves the account commands run as: name when mirrord is root,
// mirrord itself otherwise (then name must be mirrord's own user or "").
func runAs(p *params, key, name string) *account {
	if name == "" {
		return nil
	}
	a, err := lookupAccount(name)
	if err != nil {
		p.fail(key, "%v", err)
		return nil
	}
	if os.Geteuid() != 0 {
		if uint32(os.Geteuid()) != a.uid {
			p.fail(key, "mirrord runs as uid %d and cannot switch to user %q: run mirrord as root", os.Geteuid(), name)
		}
		return nil
	}
	return a
}
