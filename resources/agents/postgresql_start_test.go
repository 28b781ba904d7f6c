package agents

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A server that refuses its options exits before it writes
// postmaster.pid: Start notices it died and says why from the server
// log, without waiting out the start timeout, even while another
// process names the data directory in its command line (what a search of
// /proc by command line would take for the server). A log file the user
// cannot write fails the start with the shell's word for it.
func TestPostgreSQLStartFailsWithLogTail(t *testing.T) {
	c := newPGCluster(t)
	startProc(t, "/", "/bin/sh", "-c", "sleep 300; :", c.datadir)
	a := c.agent(t, map[string]any{"options": "-c listen_addresses='' -c no_such_setting=1"})
	ctx := ctxFor(t, 2*time.Minute)
	err := a.Start(ctx)
	if err == nil {
		t.Fatal("Start succeeded with a bad option")
	}
	if !strings.Contains(err.Error(), "exited during start") || !strings.Contains(err.Error(), "no_such_setting") {
		t.Fatalf("Start's error does not say the server died and why (the server log's tail): %v", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("Start waited out its deadline instead of seeing the server die: %v", err)
	}
	mustNotRunning(t, a.Monitor(ctx))

	a = c.agent(t, map[string]any{"logfile": filepath.Join(c.datadir, "no-such-folder", "server.log")})
	err = a.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "exited during start") || !strings.Contains(err.Error(), "no-such-folder") {
		t.Fatalf("Start with a log file that cannot be created: %v", err)
	}
	mustNotRunning(t, a.Monitor(ctx))
}

// The probe tells a server that is not accepting connections (a standby
// with hot_standby off stays so) from one that is, as mirrord sees them:
// as root, whom peer authentication refuses to let in as postgres.
func TestPostgreSQLProbe(t *testing.T) {
	c := newPGCluster(t)
	a := c.agent(t, nil)
	ctx := ctxFor(t, 2*time.Minute)
	if _, err := a.probe(ctx); err == nil {
		t.Fatal("the probe says a server answers before any runs")
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := a.probe(ctx)
	if err != nil || r.verdict != pgUp {
		t.Fatalf("probe of a running server: %+v, %v", r, err)
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	// A standby without hot standby never accepts connections.
	if err := os.WriteFile(filepath.Join(c.datadir, "standby.signal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chown(filepath.Join(c.datadir, "standby.signal"), int(c.as.uid), int(c.as.gid))
	standby := c.agent(t, map[string]any{"options": "-c listen_addresses='' -c hot_standby=off"})
	s, err := standby.launch()
	if err != nil {
		t.Fatal(err)
	}
	var last pgReply
	waitFor(t, 30*time.Second, "the standby to answer 57P03", func() bool {
		last, err = standby.probe(ctx)
		return err == nil
	})
	if last.verdict != pgStarting || last.sqlstate != pgCannotConnectNow {
		t.Fatalf("probe of a standby without hot standby: %+v", last)
	}
	// Its postmaster.pid says standby (PostgreSQL says so once archive
	// recovery runs, so that pg_ctl -w returns): the start waits on the
	// probe's word, not on that file's.
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err = standby.waitAccepting(wctx, s)
	if err == nil || !strings.Contains(err.Error(), "did not accept connections") {
		t.Fatalf("waiting for a standby without hot standby to accept connections: %v", err)
	}
}

// TestPostgreSQLStartTiming starts the server again after a crash (the
// takeover case: kill -9 after committed writes, then recovery) and after
// a clean stop, checks every committed row is there after each, and logs
// how long Start took. Two rounds by default; more for a measurement:
// HAMIRROR_PG_TIMING=15 go test -run StartTiming -v ./resources/agents/
func TestPostgreSQLStartTiming(t *testing.T) {
	n := 2
	if s := os.Getenv("HAMIRROR_PG_TIMING"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("HAMIRROR_PG_TIMING=%q: want a number of rounds", s)
		}
	}
	c := newPGCluster(t)
	a := c.agent(t, nil)
	ctx := ctxFor(t, 10*time.Minute)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	c.psql(t, "CREATE TABLE t (v int)")
	// tail: from postmaster.pid saying ready to Start's return, the part
	// of a start the agent's own polling decides.
	var crash, clean, launch, tail []time.Duration
	for i := range n {
		c.psql(t, "INSERT INTO t SELECT generate_series(1, 10000)")
		pid := c.postmasterPid(t)
		syscall.Kill(pid, syscall.SIGKILL)
		waitFor(t, 10*time.Second, "the postmaster to die", func() bool { return !alive(pid) })
		t0 := time.Now()
		ready := watchReady(c.datadir, pid)
		if err := a.Start(ctx); err != nil {
			t.Fatal(err)
		}
		crash = append(crash, time.Since(t0))
		w := <-ready
		launch = append(launch, w.pidFile.Sub(t0))
		tail = append(tail, time.Since(w.ready))
		if got := c.psql(t, "SELECT count(*) FROM t"); got != strconv.Itoa((i+1)*10000) {
			t.Fatalf("after recovery %d count = %s", i, got)
		}
		if err := a.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		t0 = time.Now()
		if err := a.Start(ctx); err != nil {
			t.Fatal(err)
		}
		clean = append(clean, time.Since(t0))
	}
	for _, s := range []struct {
		what string
		d    []time.Duration
	}{{"after kill -9", crash}, {"after a clean stop", clean}, {"after kill -9, to the new postmaster.pid", launch},
		{"after kill -9, from postmaster.pid ready to return", tail}} {
		slices.Sort(s.d)
		t.Logf("Start %s: p50 %v, max %v over %d (%v)", s.what, s.d[len(s.d)/2], s.d[len(s.d)-1], len(s.d), s.d)
	}
	if err := a.Stop(ctx); err != nil && !errors.Is(err, ctx.Err()) {
		t.Fatal(err)
	}
}

// startMarks are when a new postmaster's postmaster.pid appeared and
// when it first said ready.
type startMarks struct{ pidFile, ready time.Time }

// watchReady polls postmaster.pid every millisecond for a postmaster
// other than old, and sends when it says ready.
func watchReady(datadir string, old int) <-chan startMarks {
	ch := make(chan startMarks, 1)
	go func() {
		var m startMarks
		for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(time.Millisecond) {
			b, err := os.ReadFile(filepath.Join(datadir, "postmaster.pid"))
			if err != nil || len(b) == 0 || strings.HasPrefix(string(b), strconv.Itoa(old)+"\n") {
				continue
			}
			if m.pidFile.IsZero() {
				m.pidFile = time.Now()
			}
			if lines := strings.Split(string(b), "\n"); len(lines) > 7 && strings.TrimSpace(lines[7]) == "ready" {
				m.ready = time.Now()
				break
			}
		}
		ch <- m
	}()
	return ch
}
