package agents

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hamirror/hamirror/resources"
)

// needRoot skips a test that needs root, loudly.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP: needs root (CI runs as root)")
	}
}

// needTool skips when a program is missing, naming the package.
func needTool(t *testing.T, prog, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(prog); err != nil {
		t.Skipf("SKIP: %s not installed (apt-get install %s; make deps)", prog, pkg)
	}
}

// sh runs a command and fails the test if it fails.
func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ctxFor returns a context that ends after d (and with the test).
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// testEnv is an Env whose run directory is the test's, logging into a
// buffer the test can read.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testEnv(t *testing.T) (Env, *logBuffer) {
	lb := &logBuffer{}
	log := slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return Env{Log: log, RunDir: t.TempDir()}, lb
}

// mustNotRunning fails unless err wraps resources.ErrNotRunning.
func mustNotRunning(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, resources.ErrNotRunning) {
		t.Fatalf("Monitor = %v, want ErrNotRunning", err)
	}
}

// mustFailed fails unless err is a failure (neither nil nor ErrNotRunning).
func mustFailed(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil || errors.Is(err, resources.ErrNotRunning) {
		t.Fatalf("got %v, want a failure", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
}

// alive reports whether pid still exists and is not a zombie.
// holds says whether process pid is alive and still holds a working
// directory or an open file: what keeps a file system from unmounting,
// and so what an agent's Stop must have ended. A process in its last
// exit steps (files and working directory released, not yet a zombie)
// holds nothing; on a loaded host it can stay there for a while.
func holds(pid int) bool {
	if !alive(pid) {
		return false
	}
	if _, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd"); err == nil {
		return true
	}
	fds, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	return len(fds) > 0
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// "pid (comm) S ...": the state follows the last ')'.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// startProc starts a background process the test owns: it is killed and
// reaped at the end.
func startProc(t *testing.T, dir string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v: %v", args, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	return cmd
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// openTempDir is a temporary directory every user can write (t.TempDir's
// parent is closed to other users), removed at the end.
func openTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hamirror-agents-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// testLog is a logger into the test's log.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// twice calls an agent action two times: both must succeed (idempotence).
func twice(t *testing.T, what string, call func() error) {
	t.Helper()
	for i := range 2 {
		if err := call(); err != nil {
			t.Fatalf("%s #%d: %v", what, i+1, err)
		}
	}
}

// newAgent builds an agent from base params overridden by extra, with a
// test Env; it fails the test on a construction error.
func newAgent(t *testing.T, typ string, base, extra map[string]any) (resources.Agent, *logBuffer) {
	t.Helper()
	env, lb := testEnv(t)
	p := map[string]any{}
	for _, m := range []map[string]any{base, extra} {
		for k, v := range m {
			p[k] = v
		}
	}
	a, err := New("resources[1]", typ, "r1", p, env)
	if err != nil {
		t.Fatal(err)
	}
	return a, lb
}
