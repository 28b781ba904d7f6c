package agents

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// A small daemon managed by shell commands: start launches a sleep and
// records its pid (and counts starts), monitor checks it, stop kills it.
// stop fails when nothing runs, so Stop must not call it then.
func daemonParams(dir string) map[string]any {
	pid := filepath.Join(dir, "pid")
	return map[string]any{
		"start":   "echo x >> " + dir + "/starts; /bin/sleep 300 >/dev/null 2>&1 & echo $! > " + pid,
		"monitor": "[ -f " + pid + " ] || exit 7; kill -0 $(cat " + pid + ") 2>/dev/null || exit 1",
		"stop":    []any{"/bin/sh", "-c", "kill $(cat " + pid + ") && rm " + pid},
	}
}

func newExecAgent(t *testing.T, params map[string]any) *execAgent {
	t.Helper()
	a, _ := newAgent(t, "exec", params, nil)
	return a.(*execAgent)
}

func TestExecLifecycle(t *testing.T) {
	dir := t.TempDir()
	a := newExecAgent(t, daemonParams(dir))
	ctx := ctxFor(t, 20*time.Second)
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("Stop before Start (stop command must not run): %v", err)
	}
	mustNotRunning(t, a.Monitor(ctx))
	twice(t, "Start", func() error { return a.Start(ctx) })
	if b, _ := os.ReadFile(filepath.Join(dir, "starts")); strings.Count(string(b), "x") != 1 {
		t.Errorf("the start command ran %d times for two Starts, want 1", strings.Count(string(b), "x"))
	}
	if err := a.Monitor(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "pid"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	twice(t, "Stop", func() error { return a.Stop(ctx) })
	mustNotRunning(t, a.Monitor(ctx))
	waitFor(t, 5*time.Second, "the daemon to be gone", func() bool { return !alive(pid) })

	// The daemon dies behind our back: monitor says 1, a failure.
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(filepath.Join(dir, "pid"))
	sh(t, "kill", strings.TrimSpace(string(b)))
	waitFor(t, 5*time.Second, "the monitor to see the failure", func() bool {
		var ee *ExitError
		return errors.As(a.Monitor(ctx), &ee) && ee.Code == 1
	})
}

func TestExecFailures(t *testing.T) {
	ctx := ctxFor(t, 20*time.Second)
	a := newExecAgent(t, map[string]any{"start": "echo cannot start: no config >&2; exit 3", "stop": "true", "monitor": "exit 7"})
	var ee *ExitError
	if err := a.Start(ctx); !errors.As(err, &ee) || ee.Code != 3 || !strings.Contains(err.Error(), "no config") {
		t.Fatalf("a failing start: %v, want exit 3 with its output", err)
	}
	// A start that succeeds while monitor never says running fails at
	// the deadline, saying so.
	b := newExecAgent(t, map[string]any{"start": "true", "stop": "true", "monitor": "exit 7"})
	sctx := ctxFor(t, 3*time.Second) // room for a loaded machine: the monitor must run at least once
	if err := b.Start(sctx); err == nil || !strings.Contains(err.Error(), "monitor does not say running") {
		t.Fatalf("start without the resource running: %v", err)
	}
	// A stop that leaves it running.
	c := newExecAgent(t, map[string]any{"start": "true", "stop": "true", "monitor": "exit 0"})
	sctx = ctxFor(t, 3*time.Second)
	if err := c.Stop(sctx); err == nil || !strings.Contains(err.Error(), "does not say stopped") {
		t.Fatalf("stop that leaves it running: %v", err)
	}
}

// A command past the deadline is killed with everything it started; a
// daemon that keeps the output pipe open does not hold Start.
func TestExecTimeoutsAndPipes(t *testing.T) {
	dir := t.TempDir()
	a := newExecAgent(t, map[string]any{
		"start":   "/bin/sleep 300 & echo $! > " + dir + "/child; /bin/sleep 300",
		"stop":    "true",
		"monitor": "exit 7",
	})
	ctx := ctxFor(t, 500*time.Millisecond)
	if err := a.Start(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a hung start returned %v, want the deadline", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "child"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	waitFor(t, 5*time.Second, "the start command's child to be killed", func() bool { return pid > 0 && !alive(pid) })

	// The daemon inherits stdout and stderr and keeps them.
	pidf := filepath.Join(dir, "daemon")
	d := newExecAgent(t, map[string]any{
		"start":   "/bin/sleep 300 & echo $! > " + pidf,
		"stop":    "kill $(cat " + pidf + ") && rm " + pidf,
		"monitor": "[ -f " + pidf + " ] || exit 7",
	})
	ctx = ctxFor(t, 10*time.Second)
	begin := time.Now()
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("Start took %v: the daemon's open pipe held it", took)
	}
	if err := d.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestExecUserAndEnv(t *testing.T) {
	needRoot(t)
	dir := openTempDir(t)
	out := filepath.Join(dir, "out")
	a := newExecAgent(t, map[string]any{
		"start": "true", "stop": "true",
		"monitor": "echo $(id -un) $APP_MODE $HAMIRROR_RESOURCE $HOME > " + out,
		"env":     []any{"APP_MODE=Primary"},
		"user":    "nobody",
	})
	if err := a.Monitor(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(b)); len(got) != 4 || got[0] != "nobody" || got[1] != "Primary" || got[2] != "r1" {
		t.Errorf("the command saw %q, want user nobody, APP_MODE=Primary, HAMIRROR_RESOURCE=r1 and HOME", b)
	}
}

// Config errors name the key under the resource.
func TestParamErrors(t *testing.T) {
	ok := map[string]any{"start": "true", "stop": "true", "monitor": "true"}
	with := func(base map[string]any, k string, v any) map[string]any {
		m := map[string]any{}
		for x, y := range base {
			m[x] = y
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	fs := map[string]any{"device": "/dev/loop0", "directory": "/srv/data", "fstype": "ext4"}
	vip := map[string]any{"address": "192.0.2.10/24", "interface": "eth1"}
	for _, tc := range []struct {
		typ    string
		params map[string]any
		key    string
		say    string
	}{
		{"exec", with(ok, "monitor", nil), "resources[1].monitor", "is missing"},
		{"exec", with(ok, "start", []any{"sleep", "1"}), "resources[1].start[0]", "absolute path"},
		{"exec", with(ok, "start", 5), "resources[1].start", "string"},
		{"exec", with(ok, "env", map[string]any{"A": "b"}), "resources[1].env", "NAME=value"},
		{"exec", with(ok, "env", []any{"1A=b"}), "resources[1].env[0]", "NAME=value"},
		{"exec", with(ok, "user", "no-such-user-here"), "resources[1].user", "no local user"},
		{"exec", with(ok, "restart", "true"), "resources[1].restart", "unknown key"},
		{"filesystem", with(fs, "fstype", "btrfs"), "resources[1].fstype", "one of ext4, xfs"},
		{"filesystem", with(fs, "directory", "srv"), "resources[1].directory", "absolute"},
		{"filesystem", with(fs, "options", "loop,noatime"), "resources[1].options", "loop device"},
		{"filesystem", with(fs, "kill_grace", 5), "resources[1].kill_grace", "duration"},
		{"filesystem", with(fs, "fsck", "yes"), "resources[1].fsck", "auto, always, never"},
		{"vip", with(vip, "address", "192.0.2.10"), "resources[1].address", "prefix length"},
		{"vip", with(vip, "address", "224.0.0.1/4"), "resources[1].address", "not a unicast"},
		{"vip", with(vip, "label", "eth0:x"), "resources[1].label", "start with the interface name"},
		{"vip", map[string]any{"address": "2001:db8::1/64", "interface": "eth1", "label": "eth1:x"}, "resources[1].label", "IPv4"},
		{"vip", with(vip, "announce_count", 0), "resources[1].announce_count", "between 1 and 100"},
		{"vip", with(vip, "announce_interval", "1ms"), "resources[1].announce_interval", "between"},
		{"nfs", nil, "resources[1].type", "unknown resource type"},
	} {
		_, err := New("resources[1]", tc.typ, "r", tc.params, Env{})
		var ke *heartbeat.KeyError
		if !errors.As(err, &ke) || ke.Key != tc.key || !strings.Contains(ke.Msg, tc.say) {
			t.Errorf("%s %v: %v, want a KeyError at %s saying %q", tc.typ, tc.params, err, tc.key, tc.say)
		}
	}
}
