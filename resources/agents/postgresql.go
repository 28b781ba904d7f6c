package agents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hamirror/hamirror/resources"
)

// pgAgent runs a PostgreSQL server whose data directory is on the volume.
//
//	type: postgresql
//	datadir: /srv/data/pg               # on the file system resource
//	bindir: /usr/lib/postgresql/15/bin  # postgres, pg_ctl, psql
//	port: 5432
//	socket_dir: /run/postgresql         # created (owned by user) if missing
//	user: postgres                      # the server and the checks run as this user
//	database: postgres                  # Monitor connects to it
//	options: "-c listen_addresses='*'"  # optional, passed to postgres through /bin/sh (as pg_ctl -o would be)
//	logfile: /srv/data/pg/startup.log   # the server's output (pg_ctl -l); default <datadir>/hamirror-postgresql.log
//	fast_stop_timeout: 0s               # 0: two thirds of the stop timeout for -m fast
//
// Start clears a postmaster.pid that a crashed server left on the
// volume (see stalePid) and launches postgres as the agent's own child in
// a session of its own, as pg_ctl start would but without losing track
// of it (launch says why). It then waits (postgresql_start.go): it fails
// with the server log's tail as soon as the postmaster exits, reads
// postmaster.pid every 20 ms, and probes the socket at the wire level
// (postgresql_probe.go) once that file says ready; once the server
// accepts connections, psql -c 'SELECT 1' must answer as for Monitor.
// Crash recovery after a takeover replays the WAL: give start_timeout
// room for it. mirrord's probe runs as root, so with peer authentication
// each start leaves one "Peer authentication failed" line in the server
// log.
//
// Stop runs pg_ctl stop -m fast, and -m immediate when fast does not
// finish in time (the next start then recovers from the WAL; nothing
// committed is lost).
//
// Monitor runs psql -c 'SELECT 1' as user over the socket: a real
// connection and a real query, authenticated the way the server's
// pg_hba.conf says for local connections (peer for the postgres user
// with Debian's defaults, so no password is stored anywhere). A minimal
// wire-protocol client in mirrord would have to connect as root (peer
// authentication maps the connecting process's user), which a stock
// pg_hba.conf refuses; psql as user needs no change there. When psql
// fails, postmaster.pid tells a stopped server (resources.ErrNotRunning)
// from a failed one (see postmaster).
type pgAgent struct {
	name, bindir, datadir, sockdir, database, options, logfile string
	port                                                       int
	fastStop                                                   time.Duration
	as                                                         *account
	user                                                       string
	log                                                        *slog.Logger
	procDir                                                    string
}

func newPostgreSQL(name string, p *params, env Env) (resources.Agent, error) {
	a := &pgAgent{name: name, log: env.Log, procDir: "/proc"}
	a.bindir = p.path("bindir", false, "/usr/lib/postgresql/15/bin")
	a.datadir = p.path("datadir", true, "")
	a.port = p.integer("port", 5432, 1, 65535)
	a.sockdir = p.path("socket_dir", false, "/run/postgresql")
	a.user = p.str("user", false, "postgres")
	a.database = p.str("database", false, "postgres")
	a.options = p.str("options", false, "")
	a.logfile = p.path("logfile", false, "")
	a.fastStop = p.duration("fast_stop_timeout", 0, 0, 24*time.Hour)
	a.as = runAs(p, "user", a.user)
	if a.logfile == "" && a.datadir != "" {
		a.logfile = filepath.Join(a.datadir, "hamirror-postgresql.log")
	}
	for _, prog := range []string{"postgres", "pg_ctl", "psql"} {
		if _, err := os.Stat(filepath.Join(a.bindir, prog)); err != nil && p.err == nil {
			p.fail("bindir", "has no %s (%v): install postgresql (e.g. apt-get install postgresql-15) or fix bindir", prog, err)
		}
	}
	if err := p.done(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *pgAgent) run(ctx context.Context, prog string, args ...string) (result, error) {
	return run(ctx, a.log, a.command(append([]string{filepath.Join(a.bindir, prog)}, args...)...))
}

// command is argv run as the user, with PGHOST/PGPORT/PGDATABASE/PGUSER
// set so that psql, pg_ctl and postgres never read a stray environment.
func (a *pgAgent) command(argv ...string) command {
	env := []string{"PGHOST=" + a.sockdir, "PGPORT=" + strconv.Itoa(a.port), "PGDATABASE=" + a.database, "PGUSER=" + a.user}
	return command{argv: argv, env: env, as: a.as}
}

// postmaster reports whether a live postmaster of the data directory
// runs, by its postmaster.pid (see stalePid), and says why. pg_ctl
// status is not enough: it trusts kill(pid, 0), which a zombie or an
// unrelated process with the recorded PID passes.
func (a *pgAgent) postmaster() (bool, string, error) {
	b, err := os.ReadFile(filepath.Join(a.datadir, "postmaster.pid"))
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return false, "no postmaster.pid", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("postgresql %s: reading postmaster.pid: %w", a.name, err)
	}
	stale, why := stalePid(a.procDir, b, a.datadir)
	if stale {
		why = "stale postmaster.pid (a crashed server; Start recovers): " + why
	}
	return !stale, why, nil
}

func (a *pgAgent) Monitor(ctx context.Context) error {
	res, err := a.run(ctx, "psql", "-X", "-A", "-t", "-q", "-w", "-c", "SELECT 1")
	if err == nil && res.code == 0 && strings.TrimSpace(string(res.output)) == "1" {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("postgresql %s: SELECT 1 did not answer in time (%w): the server is hung or overloaded", a.name, ctx.Err())
	}
	up, state, perr := a.postmaster()
	switch {
	case perr != nil:
		return perr
	case !up:
		return fmt.Errorf("postgresql %s: no server runs on %s (%s): %w", a.name, a.datadir, state, resources.ErrNotRunning)
	}
	why := lastLines(res.output, 3)
	if err != nil {
		why = err.Error()
	}
	return fmt.Errorf("postgresql %s: the server runs but SELECT 1 failed: %s", a.name, why)
}

func (a *pgAgent) Start(ctx context.Context) error {
	// postmaster.pid first: a takeover finds no live server, and a psql
	// that cannot connect costs a fork and exec before the start.
	up, _, err := a.postmaster()
	if err != nil {
		return err
	}
	if up {
		// Running already (Start is idempotent), or a start that timed
		// out earlier, still replaying the WAL: wait for it.
		return a.waitReady(ctx, "a server was already starting")
	}
	if err := a.killOrphans(ctx); err != nil {
		return err
	}
	if err := a.prepareSocketDir(); err != nil {
		return err
	}
	for _, lock := range []string{filepath.Join(a.datadir, "postmaster.pid"), filepath.Join(a.sockdir, fmt.Sprintf(".s.PGSQL.%d.lock", a.port))} {
		if err := a.clearStaleLock(lock); err != nil {
			return err
		}
	}
	// A server still starting when the deadline passes is left running
	// (its own session) for Stop, as pg_ctl would leave it.
	s, err := a.launch()
	if err != nil {
		return err
	}
	if err := a.waitAccepting(ctx, s); err != nil {
		return err
	}
	a.log.Info("PostgreSQL started", "datadir", a.datadir, "port", a.port)
	return a.waitReady(ctx, "the server accepts connections")
}

// waitReady polls Monitor until the server answers or ctx ends.
func (a *pgAgent) waitReady(ctx context.Context, what string) error {
	return pollUntil(ctx, func() (bool, error) {
		err := a.Monitor(ctx)
		return err == nil, err
	}, func(last error) error {
		return fmt.Errorf("postgresql %s: %s but the server does not answer: %w; server log: %s", a.name, what, last, a.logTail())
	})
}

func (a *pgAgent) logTail() string {
	b, err := os.ReadFile(a.logfile)
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	return lastLines(b, 5)
}

// prepareSocketDir creates the socket directory if missing, owned by
// the user (Debian's postgresql-common does this at boot for its own).
func (a *pgAgent) prepareSocketDir() error {
	if _, err := os.Stat(a.sockdir); err == nil {
		return nil
	}
	if err := os.MkdirAll(a.sockdir, 0o2775); err != nil {
		return fmt.Errorf("postgresql %s: creating socket_dir: %w", a.name, err)
	}
	if a.as != nil {
		if err := os.Chown(a.sockdir, int(a.as.uid), int(a.as.gid)); err != nil {
			return fmt.Errorf("postgresql %s: socket_dir: %w", a.name, err)
		}
	}
	return nil
}

// clearStaleLock removes a lock file (postmaster.pid, the socket's
// .lock) whose process is not a postmaster of this data directory. The
// data directory came from the other node after a takeover: the PID in
// its postmaster.pid means nothing here, and if that PID happens to be
// alive (any process), postgres refuses to start ("lock file already
// exists"). A live postmaster of this data directory keeps its lock.
func (a *pgAgent) clearStaleLock(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("postgresql %s: reading %s: %w", a.name, path, err)
	}
	if stale, why := stalePid(a.procDir, b, a.datadir); !stale {
		a.log.Debug("lock file belongs to a live postmaster", "file", path, "why", why)
		return nil
	} else {
		a.log.Warn("removing a stale lock file", "file", path, "why", why)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("postgresql %s: removing the stale %s: %w", a.name, path, err)
	}
	return nil
}

// stalePid decides whether a postmaster lock file (first line: the PID,
// possibly negative for a standalone backend) belongs to a live
// postmaster of datadir: the process exists and works in datadir (a
// postmaster's working directory is its data directory; see worksIn).
func stalePid(procDir string, lock []byte, datadir string) (bool, string) {
	first, _, _ := strings.Cut(string(lock), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if pid < 0 {
		pid = -pid
	}
	if err != nil || pid <= 0 {
		return true, fmt.Sprintf("no PID in it (%q)", first)
	}
	var dir syscall.Stat_t
	if err := syscall.Stat(datadir, &dir); err != nil {
		return true, fmt.Sprintf("the data directory: %v", err)
	}
	base := filepath.Join(procDir, strconv.Itoa(pid))
	in, err := worksIn(base, &dir)
	switch {
	case err != nil:
		return true, fmt.Sprintf("process %d is gone", pid)
	case !in:
		cwd, _ := os.Readlink(filepath.Join(base, "cwd"))
		return true, fmt.Sprintf("process %d works in %s, not in the data directory", pid, cwd)
	}
	return false, fmt.Sprintf("process %d works in the data directory", pid)
}

// worksIn reports whether the process whose /proc directory is base
// works in the directory dir: the same device and inode, not a path that
// reads the same (a process in another mount namespace, such as another
// test node's postmaster, can work in a directory of the same name on
// another file system). An error means the process is gone.
func worksIn(base string, dir *syscall.Stat_t) (bool, error) {
	var cwd syscall.Stat_t
	if err := syscall.Stat(filepath.Join(base, "cwd"), &cwd); err != nil {
		return false, err
	}
	return cwd.Dev == dir.Dev && cwd.Ino == dir.Ino, nil
}

func (a *pgAgent) Stop(ctx context.Context) error {
	up, _, err := a.postmaster()
	if err != nil || !up {
		return err
	}
	left := remaining(ctx, time.Minute)
	fast := a.fastStop
	if fast == 0 || fast > left {
		fast = left * 2 / 3
	}
	if a.stop(ctx, "fast", fast) == nil {
		if err := a.waitGone(ctx); err != nil {
			return err
		}
		a.log.Info("PostgreSQL stopped", "datadir", a.datadir, "mode", "fast")
		return nil
	}
	a.log.Warn("fast shutdown did not finish in time: immediate shutdown (the next start recovers from the WAL)", "after", fast)
	if err := a.stop(ctx, "immediate", remaining(ctx, time.Minute)-500*time.Millisecond); err != nil {
		return fmt.Errorf("postgresql %s: even an immediate shutdown did not finish: %w; its processes may be stuck on I/O: the group stays blocked until they are gone (then mirrorctl cleanup %s)", a.name, err, a.name)
	}
	return a.waitGone(ctx)
}

// waitGone waits until no server process works in the data directory any
// more: pg_ctl reports a stop once postmaster.pid is removed, a moment
// before the postmaster and its last children have exited, and Stop must
// return only once nothing of the server is left.
func (a *pgAgent) waitGone(ctx context.Context) error {
	postgres := filepath.Join(a.bindir, "postgres")
	for {
		left := procsWorkingIn(a.procDir, a.datadir, postgres)
		if len(left) == 0 {
			return nil
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return fmt.Errorf("postgresql %s: stopped, but processes %v still run in %s (%v)", a.name, left, a.datadir, err)
		}
	}
}

// stop runs pg_ctl stop in mode, waiting at most d.
func (a *pgAgent) stop(ctx context.Context, mode string, d time.Duration) error {
	secs := max(int(d.Seconds()), 1)
	sctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+500*time.Millisecond)
	defer cancel()
	res, err := a.run(sctx, "pg_ctl", "stop", "-m", mode, "-w", "-t", strconv.Itoa(secs), "-D", a.datadir)
	if err != nil {
		return err
	}
	if res.code != 0 {
		if up, _, perr := a.postmaster(); perr == nil && !up {
			return nil // it went down meanwhile
		}
		return fmt.Errorf("pg_ctl stop -m %s exited %d: %s", mode, res.code, lastLines(res.output, 3))
	}
	return nil
}

// killOrphans kills the backends a dead postmaster left (postgres
// processes working in the data directory): until they exit, a new
// postmaster refuses the shared memory they still hold. They would exit
// by themselves within a second or so; a start should not wait on that.
func (a *pgAgent) killOrphans(ctx context.Context) error {
	postgres := filepath.Join(a.bindir, "postgres")
	for {
		orphans := procsWorkingIn(a.procDir, a.datadir, postgres)
		if len(orphans) == 0 {
			return nil
		}
		for _, pid := range orphans {
			a.log.Warn("killing a backend of a dead postmaster", "pid", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return fmt.Errorf("postgresql %s: backends of a dead server do not exit (%v): %w", a.name, orphans, err)
		}
	}
}

// procsWorkingIn lists the processes running exe that work in dir (see
// worksIn).
func procsWorkingIn(procDir, dir, exe string) []int {
	var want syscall.Stat_t
	if syscall.Stat(dir, &want) != nil {
		return nil // no data directory: no server of it either
	}
	ents, _ := os.ReadDir(procDir)
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		base := filepath.Join(procDir, e.Name())
		if in, err := worksIn(base, &want); err != nil || !in {
			continue
		}
		if x, err := os.Readlink(filepath.Join(base, "exe")); err == nil && x == exe {
			out = append(out, pid)
		}
	}
	return out
}

// shellQuote quotes s for /bin/sh (pg_ctl passes -o through a shell).
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
