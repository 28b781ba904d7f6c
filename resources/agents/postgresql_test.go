package agents

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const pgBin = "/usr/lib/postgresql/15/bin"

// pgCluster is a fresh PostgreSQL 15 data directory made by initdb with
// Debian's local authentication (peer), owned by the postgres user, and
// a socket directory of its own; no TCP listener.
type pgCluster struct {
	datadir, sockdir string
	port             int
	as               *account
}

func newPGCluster(t *testing.T) *pgCluster {
	t.Helper()
	needRoot(t)
	if _, err := os.Stat(filepath.Join(pgBin, "initdb")); err != nil {
		t.Skipf("SKIP: PostgreSQL 15 not installed at %s (apt-get install postgresql-15; make deps)", pgBin)
	}
	as, err := lookupAccount("postgres")
	if err != nil {
		t.Skipf("SKIP: no postgres user (apt-get install postgresql-15 creates it): %v", err)
	}
	base := openTempDir(t)
	c := &pgCluster{datadir: filepath.Join(base, "pg"), sockdir: filepath.Join(base, "sock"), as: as,
		port: 20000 + rand.IntN(40000)}
	if err := os.Mkdir(c.datadir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(c.datadir, int(as.uid), int(as.gid)); err != nil {
		t.Fatal(err)
	}
	res, err := run(ctxFor(t, 2*time.Minute), testLog(t), command{argv: []string{filepath.Join(pgBin, "initdb"),
		"-D", c.datadir, "--auth-local=peer", "--auth-host=scram-sha-256", "-N"}, as: as})
	if err != nil || res.code != 0 {
		t.Fatalf("initdb: %v %d: %s", err, res.code, res.output)
	}
	return c
}

func (c *pgCluster) agent(t *testing.T, extra map[string]any) *pgAgent {
	t.Helper()
	a, _ := newAgent(t, "postgresql", map[string]any{"datadir": c.datadir, "socket_dir": c.sockdir, "port": c.port,
		"options": "-c listen_addresses=''"}, extra)
	pa := a.(*pgAgent)
	t.Cleanup(func() {
		// Only our own server, if a test failed with it running.
		pa.stop(ctxFor(t, 20*time.Second), "immediate", 10*time.Second)
	})
	return pa
}

// psql runs SQL as postgres over the cluster's socket.
func (c *pgCluster) psql(t *testing.T, sql string) string {
	t.Helper()
	res, err := run(ctxFor(t, 30*time.Second), testLog(t), command{argv: []string{filepath.Join(pgBin, "psql"), "-X", "-A", "-t", "-q",
		"-v", "ON_ERROR_STOP=1", "-h", c.sockdir, "-p", strconv.Itoa(c.port), "-d", "postgres", "-c", sql}, as: c.as})
	if err != nil || res.code != 0 {
		t.Fatalf("psql %q: %v %d: %s", sql, err, res.code, res.output)
	}
	return strings.TrimSpace(string(res.output))
}

func (c *pgCluster) postmasterPid(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.datadir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(first)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestPostgreSQLLifecycle(t *testing.T) {
	c := newPGCluster(t)
	a := c.agent(t, nil)
	ctx := ctxFor(t, 2*time.Minute)
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("Stop before Start: %v", err)
	}
	mustNotRunning(t, a.Monitor(ctx))
	twice(t, "Start", func() error { return a.Start(ctx) })
	if err := a.Monitor(ctx); err != nil {
		t.Fatal(err)
	}
	// The server runs in a session of its own: not in the group the
	// agent's commands run in, and no terminal's signals reach it.
	pid := c.postmasterPid(t)
	if pgid, _ := syscall.Getpgid(pid); pgid != pid {
		t.Errorf("the postmaster %d is in process group %d, not its own", pid, pgid)
	}
	c.psql(t, "CREATE TABLE t (v int); INSERT INTO t VALUES (42)")
	twice(t, "Stop", func() error { return a.Stop(ctx) })
	mustNotRunning(t, a.Monitor(ctx))
	if holds(pid) {
		t.Fatalf("the postmaster %d still runs after Stop", pid)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.psql(t, "SELECT v FROM t"); got != "42" {
		t.Fatalf("after a restart the row reads %q", got)
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// A server killed with -9 leaves postmaster.pid behind, as a takeover
// finds it on the volume; its PID may even belong to a live process
// here, which makes postgres itself refuse to start: a process that is
// not a postmaster, or one that works in a directory of the same path in
// another mount namespace (another node's postmaster, seen in a host's
// /proc). Start clears it and the server recovers every committed row.
func TestPostgreSQLRecoversAfterCrash(t *testing.T) {
	c := newPGCluster(t)
	a := c.agent(t, nil)
	ctx := ctxFor(t, 2*time.Minute)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(c.datadir, "postmaster.pid")
	for i, other := range []*exec.Cmd{
		startProc(t, "/", "/bin/sleep", "300"),
		startProc(t, "/", "unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
			`mount -t tmpfs tmpfs "$0" && cd "$0" && exec /bin/sleep 300`, c.datadir),
	} {
		c.psql(t, "CREATE TABLE IF NOT EXISTS t (v int); INSERT INTO t SELECT generate_series(1, 1000)")
		pid := c.postmasterPid(t)
		syscall.Kill(pid, syscall.SIGKILL)
		waitFor(t, 10*time.Second, "the postmaster to die", func() bool { return !alive(pid) })
		mustNotRunning(t, a.Monitor(ctx))
		waitFor(t, 10*time.Second, "the other process to work in its directory", func() bool {
			cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", other.Process.Pid))
			return i == 0 || cwd == c.datadir
		})
		b, err := os.ReadFile(lock)
		if err != nil {
			t.Fatal(err)
		}
		_, rest, _ := strings.Cut(string(b), "\n")
		if err := os.WriteFile(lock, []byte(fmt.Sprintf("%d\n%s", other.Process.Pid, rest)), 0o600); err != nil {
			t.Fatal(err)
		}
		if i == 1 && slices.Contains(procsWorkingIn("/proc", c.datadir, "/usr/bin/sleep"), other.Process.Pid) {
			t.Errorf("a process working in another mount namespace's %s is taken for one working in the data directory", c.datadir)
		}
		if err := a.Start(ctx); err != nil {
			t.Fatalf("Start after crash %d: %v", i+1, err)
		}
		if got, want := c.psql(t, "SELECT count(*) FROM t"), strconv.Itoa(1000*(i+1)); got != want {
			t.Fatalf("after recovery %d count = %q, want %s", i+1, got, want)
		}
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// A fast shutdown that cannot finish (a backend is frozen) gives way to
// an immediate one within the stop timeout.
func TestPostgreSQLStopFallsBackToImmediate(t *testing.T) {
	c := newPGCluster(t)
	a := c.agent(t, map[string]any{"fast_stop_timeout": "1s"})
	ctx := ctxFor(t, 2*time.Minute)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// A client session whose backend we freeze with SIGSTOP.
	client := exec.Command(filepath.Join(pgBin, "psql"), "-X", "-h", c.sockdir, "-p", strconv.Itoa(c.port), "-d", "postgres",
		"-c", "SELECT pg_sleep(300)")
	client.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: c.as.uid, Gid: c.as.gid}}
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Process.Kill(); client.Wait() })
	var backend int
	waitFor(t, 10*time.Second, "the client's backend", func() bool {
		out := strings.TrimSpace(c.psql(t, "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"))
		backend, _ = strconv.Atoi(out)
		return backend > 0
	})
	syscall.Kill(backend, syscall.SIGSTOP)
	t.Cleanup(func() { syscall.Kill(backend, syscall.SIGCONT) })
	pid := c.postmasterPid(t)
	sctx := ctxFor(t, 30*time.Second)
	if err := a.Stop(sctx); err != nil {
		t.Fatalf("Stop with a frozen backend: %v", err)
	}
	if holds(pid) {
		t.Fatal("the postmaster survived Stop")
	}
	mustNotRunning(t, a.Monitor(ctx))
}
