package agents

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// pgStartPoll is how often waitAccepting looks at a starting server.
const pgStartPoll = 20 * time.Millisecond

// waitAccepting waits until the server pg_ctl launched accepts
// connections (probe), failing with the server log's tail as soon as the
// postmaster is gone (a bad option, a failed recovery). It probes only
// once postmaster.pid says ready (or says nothing): a probe of a server
// still recovering costs a FATAL line in its log.
func (a *pgAgent) waitAccepting(ctx context.Context) error {
	var last error
	launched := time.Now()
	for {
		st, err := a.launch()
		switch {
		case err != nil:
			return err
		case st.gone && st.unseen && time.Since(launched) < pgLaunchGrace:
			// Not found by its command line, and no postmaster.pid yet:
			// give it a moment before calling it dead.
			last = errors.New("no postmaster.pid yet")
		case st.gone:
			return fmt.Errorf("postgresql %s: the server exited during start (%s): check the options and the server log (%s): %s", a.name, st.why, a.logfile, a.logTail())
		case st.status == "" || st.status == "ready" || st.status == "standby":
			r, perr := a.probe(ctx)
			switch {
			case perr != nil:
				last = perr
			case r.verdict == pgUp:
				return nil
			default:
				last = fmt.Errorf("the server answers %s: %s", r.sqlstate, r.message)
			}
		default:
			last = fmt.Errorf("postmaster.pid says %q", st.status)
		}
		if err := sleepCtx(ctx, pgStartPoll); err != nil {
			if last == nil {
				last = err
			}
			return fmt.Errorf("postgresql %s: the server did not accept connections in time (%w; gave up: %w): give start_timeout room for crash recovery; server log (%s): %s", a.name, last, err, a.logfile, a.logTail())
		}
	}
}

// pgLaunchGrace is how long waitAccepting waits for postmaster.pid when
// it cannot find the launched postmaster by its command line either.
const pgLaunchGrace = 5 * time.Second

// launchState is what waitAccepting knows of a postmaster being launched.
type launchState struct {
	gone   bool
	unseen bool // gone because neither postmaster.pid nor a process is found
	why    string
	status string // postmaster.pid's status line: starting, ready, standby, stopping; "" if not written yet
}

// launch tells whether the postmaster pg_ctl launched still runs. Until
// it writes postmaster.pid (a moment after launch; never, when it
// refuses an option) it is found by its command line, which names the
// data directory from pg_ctl's fork through /bin/sh's exec to postgres.
func (a *pgAgent) launch() (launchState, error) {
	b, err := os.ReadFile(filepath.Join(a.datadir, "postmaster.pid"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		if pids := procsNaming(a.procDir, a.datadir); len(pids) > 0 {
			return launchState{}, nil
		}
		// It may have written postmaster.pid and exited since: read once more.
		if _, err := os.Stat(filepath.Join(a.datadir, "postmaster.pid")); err == nil {
			return launchState{}, nil
		}
		return launchState{gone: true, unseen: true, why: "no postmaster.pid and no server process"}, nil
	case err != nil:
		return launchState{}, fmt.Errorf("postgresql %s: reading postmaster.pid: %w", a.name, err)
	}
	if stale, why := stalePid(a.procDir, b, a.datadir); stale {
		// A postmaster.pid being written reads empty for a moment.
		if len(procsNaming(a.procDir, a.datadir)) > 0 {
			return launchState{}, nil
		}
		return launchState{gone: true, why: why}, nil
	}
	return launchState{status: pidFileStatus(b)}, nil
}

// pidFileStatus returns the postmaster status of a postmaster.pid (its
// 8th line, PostgreSQL 10 and later), trimmed; "" when absent.
func pidFileStatus(b []byte) string {
	lines := strings.Split(string(b), "\n")
	if len(lines) < 8 {
		return ""
	}
	return strings.TrimSpace(lines[7])
}

// procsNaming lists the processes with an argument that contains dir.
func procsNaming(procDir, dir string) []int {
	ents, _ := os.ReadDir(procDir)
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procDir, e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), dir) {
			out = append(out, pid)
		}
	}
	return out
}
