package agents

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

// pgStartPoll is how often waitAccepting reads postmaster.pid while the
// server it launched starts (the postmaster's exit is seen at once).
const pgStartPoll = 20 * time.Millisecond

// pgServer is a postmaster this agent launched (launch): the agent's own
// child, so the agent knows its PID from the fork on and learns of its
// exit from the kernel (wait), with no search of /proc and no timed
// guess.
type pgServer struct {
	pid  int
	done chan struct{} // closed once the postmaster has exited and was reaped
	err  error         // how it ended (after done): an exit status or a signal
	out  *tail         // what the shell said before the server log took over (an unwritable logfile)
}

// launch starts the postmaster the way pg_ctl start does on Linux (a
// new session, then /bin/sh -c 'exec postgres ... </dev/null >>logfile
// 2>&1', so that options are parsed by a shell as with pg_ctl -o and the
// postmaster keeps the shell's PID), but as the agent's own child.
//
// Why not pg_ctl start -W: pg_ctl forks the postmaster and exits, so the
// launched server is nobody's child the agent can wait for. Until the
// postmaster writes postmaster.pid (tens of milliseconds; longer when the
// host is loaded; never when it refuses an option) the agent would have
// to find it in /proc by its command line, which is a guess: while a
// process execs (pg_ctl's fork becoming /bin/sh, then postgres) its
// command line reads empty, and a /proc that shows other nodes'
// processes (a host running test nodes in PID namespaces) holds
// postmasters with the same data directory path. A child is certain: its
// PID cannot be reused before the agent reaps it, and Wait returns when,
// and only when, it has exited. A goroutine waits for it for the whole
// life of the server, so a server that dies later is reaped at once (no
// zombie holds its PID). The server outlives mirrord as one pg_ctl
// started would (its own session; nothing kills it when mirrord exits).
func (a *pgAgent) launch() (*pgServer, error) {
	script := fmt.Sprintf("exec %s -D %s -p %d -k %s", shellQuote(filepath.Join(a.bindir, "postgres")),
		shellQuote(a.datadir), a.port, shellQuote(a.sockdir))
	if a.options != "" {
		script += " " + a.options
	}
	script += " </dev/null >>" + shellQuote(a.logfile) + " 2>&1"
	cmd := exec.Command("/bin/sh", "-c", script)
	a.command("/bin/sh").prepare(cmd, &syscall.SysProcAttr{Setsid: true})
	s := &pgServer{done: make(chan struct{}), out: &tail{}}
	cmd.Stdout, cmd.Stderr = s.out, s.out
	cmd.WaitDelay = pipeGrace
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("postgresql %s: launching postgres: %w", a.name, err)
	}
	s.pid = cmd.Process.Pid
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	return s, nil
}

// exited is the error of a server that exited during its start.
func (a *pgAgent) exited(s *pgServer) error {
	why := "exited"
	if s.err != nil {
		why = s.err.Error()
	}
	if out := lastLines(s.out.bytes(), 3); out != "(none)" {
		why += ": " + out
	}
	return fmt.Errorf("postgresql %s: the server exited during start (%s): check the options and the server log (%s): %s", a.name, why, a.logfile, a.logTail())
}

// waitAccepting waits until the server s accepts connections (probe),
// failing with the server log's tail as soon as it exits (a bad option,
// a failed recovery). It probes only once s's postmaster.pid says ready
// (crash recovery goes from starting to ready) or standby (archive
// recovery: a hot standby accepts read-only connections, one without hot
// standby answers 57P03): a probe of a server still recovering costs a
// FATAL line in its log.
func (a *pgAgent) waitAccepting(ctx context.Context, s *pgServer) error {
	tick := time.NewTicker(pgStartPoll)
	defer tick.Stop()
	for {
		var last error
		switch status, err := a.pidFileStatus(s.pid); {
		case err != nil:
			return err
		case status == "ready" || status == "standby":
			r, perr := a.probe(ctx)
			switch {
			case perr != nil:
				last = perr
			case r.verdict == pgUp:
				return nil
			default:
				last = fmt.Errorf("the server answers %s: %s", r.sqlstate, r.message)
			}
		case status == "":
			last = errors.New("no postmaster.pid of it yet")
		default:
			last = fmt.Errorf("postmaster.pid says %q", status)
		}
		select {
		case <-s.done:
			return a.exited(s)
		case <-ctx.Done():
			return fmt.Errorf("postgresql %s: the server did not accept connections in time (%w; gave up: %w): give start_timeout room for crash recovery; server log (%s): %s", a.name, last, ctx.Err(), a.logfile, a.logTail())
		case <-tick.C:
		}
	}
}

// pidFileStatus returns the status line of the postmaster.pid that the
// postmaster pid wrote: "starting", "ready", "standby" or "stopping"; ""
// while postmaster.pid is missing, being written, without a status line
// yet, or another process's (never ours then: a live postmaster of the
// data directory keeps ours from starting, and it exits).
func (a *pgAgent) pidFileStatus(pid int) (string, error) {
	b, err := os.ReadFile(filepath.Join(a.datadir, "postmaster.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("postgresql %s: reading postmaster.pid: %w", a.name, err)
	}
	lines := strings.Split(string(b), "\n")
	if strings.TrimSpace(lines[0]) != strconv.Itoa(pid) || len(lines) < 8 {
		return "", nil
	}
	// The 8th line is the postmaster status (PostgreSQL 10 and later).
	return strings.TrimSpace(lines[7]), nil
}
