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
	"github.com/hamirror/hamirror/resources"
)

func needResourceAgents(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/usr/lib/ocf/resource.d/heartbeat/Dummy"); err != nil {
		t.Skip("SKIP: Debian's resource-agents not installed (apt-get install resource-agents; make deps)")
	}
}

// scriptedRoot is an OCF root holding testdata/ocf/Scripted as
// test:Scripted.
func scriptedRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "resource.d", "test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("testdata/ocf/Scripted")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Scripted"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

// scripted builds a test:Scripted resource with the given params; its
// recorded environments land in the returned directory.
func scripted(t *testing.T, params map[string]any) (*ocfAgent, string) {
	t.Helper()
	envdir := t.TempDir()
	p := map[string]any{"envdir": envdir}
	for k, v := range params {
		p[k] = v
	}
	env, _ := testEnv(t)
	env.OCFRoot = scriptedRoot(t)
	a, err := New("resources[5]", "ocf", "svc-1", map[string]any{"agent": "test:Scripted", "params": p}, env)
	if err != nil {
		t.Fatal(err)
	}
	return a.(*ocfAgent), envdir
}

func recordedEnv(t *testing.T, envdir, action string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(envdir, action+".env"))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for l := range strings.Lines(string(b)) {
		k, v, _ := strings.Cut(strings.TrimSpace(l), "=")
		m[k] = v
	}
	return m
}

func TestOCFDummy(t *testing.T) {
	needResourceAgents(t)
	env, _ := testEnv(t)
	a, err := New("resources[5]", "ocf", "dummy-1", map[string]any{"agent": "ocf:heartbeat:Dummy"}, env)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, 30*time.Second)
	mustNotRunning(t, a.Monitor(ctx))
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("Stop before Start: %v", err)
	}
	twice(t, "Start", func() error { return a.Start(ctx) })
	if err := a.Monitor(ctx); err != nil {
		t.Fatal(err)
	}
	// The state lives in the node's run directory (HA_RSCTMP), not in
	// the system's /run/resource-agents.
	if _, err := os.Stat(filepath.Join(env.RunDir, "ocf", "Dummy-dummy-1.state")); err != nil {
		t.Errorf("Dummy's state file is not under RunDir/ocf: %v", err)
	}
	twice(t, "Stop", func() error { return a.Stop(ctx) })
	mustNotRunning(t, a.Monitor(ctx))
}

// IPaddr2, run unchanged in a node namespace: the address appears and
// the client reaches it; Stop removes it.
func TestOCFIPaddr2InNetns(t *testing.T) {
	needResourceAgents(t)
	s := newSegment(t, 1)
	node := s.nodes[0]
	env, _ := testEnv(t)
	a, err := New("resources[5]", "ocf", "vip-ocf", map[string]any{"agent": "heartbeat:IPaddr2",
		"params": map[string]any{"ip": "10.222.0.100", "cidr_netmask": 24, "nic": "eth0", "arp_count": 2}}, env)
	if err != nil {
		t.Fatal(err)
	}
	mustNotRunning(t, in(t, node, a.Monitor))
	if err := in(t, node, a.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if out := sh(t, "ip", "-n", node, "-4", "addr", "show", "dev", "eth0"); !strings.Contains(out, "10.222.0.100/24") {
		t.Fatalf("IPaddr2 did not add the address:\n%s", out)
	}
	sh(t, "ip", "netns", "exec", s.client, "ping", "-c1", "-W2", "10.222.0.100")
	if err := in(t, node, a.Monitor); err != nil {
		t.Fatalf("Monitor: %v", err)
	}
	if err := in(t, node, a.Stop); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	mustNotRunning(t, in(t, node, a.Monitor))
	if out := sh(t, "ip", "-n", node, "-4", "addr", "show", "dev", "eth0"); strings.Contains(out, "10.222.0.100") {
		t.Fatalf("the address is still there after Stop:\n%s", out)
	}
}

// Every OCF exit code maps to the result the API gives it.
func TestOCFExitCodes(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	for _, tc := range []struct {
		rc      int
		probe   bool
		running bool   // Monitor nil
		stopped bool   // ErrNotRunning
		say     string // else: the failure says this
	}{
		{rc: 0, running: true},
		{rc: 7, stopped: true},
		{rc: 8, running: true},
		{rc: 190, running: true},
		{rc: 191, running: true},
		{rc: 1, say: "generic error"},
		{rc: 2, say: "invalid arguments"},
		{rc: 6, say: "not configured"},
		{rc: 9, say: "failed while promoted"},
		{rc: 5, say: "not installed"},
		{rc: 5, probe: true, stopped: true},
		{rc: 42, say: "not an OCF exit code"},
	} {
		a, _ := scripted(t, map[string]any{"monitor_rc": tc.rc})
		if !tc.probe {
			if err := a.Start(ctx); err != nil {
				t.Fatal(err)
			}
		}
		err := a.Monitor(ctx)
		switch {
		case tc.running && err != nil:
			t.Errorf("monitor rc %d: %v, want running", tc.rc, err)
		case tc.stopped:
			if !errors.Is(err, resources.ErrNotRunning) {
				t.Errorf("monitor rc %d (probe %v): %v, want not running", tc.rc, tc.probe, err)
			}
		case tc.say != "":
			var ee *ExitError
			if !errors.As(err, &ee) || ee.Code != tc.rc || !strings.Contains(err.Error(), tc.say) ||
				!strings.Contains(ee.Reason, "monitor told to exit") {
				t.Errorf("monitor rc %d: %v, want an ExitError saying %q with the agent's exit reason", tc.rc, err, tc.say)
			}
		}
	}
}

func TestOCFStartStopFailures(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	a, _ := scripted(t, map[string]any{"start_rc": 5})
	err := a.Start(ctx)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 5 || ee.Action != "start" || !strings.Contains(err.Error(), "install") {
		t.Fatalf("start rc 5: %v", err)
	}
	// stop answering 7 is stopped; anything else is a failed stop.
	b, _ := scripted(t, map[string]any{"stop_rc": 7})
	if err := b.Stop(ctx); err != nil {
		t.Fatalf("stop rc 7: %v", err)
	}
	c, _ := scripted(t, map[string]any{"stop_rc": 1})
	if err := c.Stop(ctx); !errors.As(err, &ee) || ee.Code != 1 {
		t.Fatalf("stop rc 1: %v", err)
	}
}

// The environment an agent sees: instance, type, provider, the timeout
// in ms from the deadline, interval 0 for a probe and not after Start.
func TestOCFEnvironment(t *testing.T) {
	a, envdir := scripted(t, map[string]any{"verbose": true})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := a.Monitor(ctx); err != nil {
		t.Fatal(err)
	}
	probe := recordedEnv(t, envdir, "monitor")
	for k, want := range map[string]string{
		"OCF_RESOURCE_INSTANCE": "svc-1", "OCF_RESOURCE_TYPE": "Scripted", "OCF_RESOURCE_PROVIDER": "test",
		"OCF_RESKEY_verbose": "true", "OCF_RESKEY_CRM_meta_interval": "0", "OCF_RA_VERSION_MAJOR": "1",
		"__OCF_ACTION": "monitor", "OCF_RESKEY_envdir": envdir,
	} {
		if probe[k] != want {
			t.Errorf("%s = %q, want %q", k, probe[k], want)
		}
	}
	if ms, err := strconv.Atoi(probe["OCF_RESKEY_CRM_meta_timeout"]); err != nil || ms <= 10000 || ms > 20000 {
		t.Errorf("OCF_RESKEY_CRM_meta_timeout = %q, want the ms left before the deadline (~20000)", probe["OCF_RESKEY_CRM_meta_timeout"])
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Monitor(ctx); err != nil {
		t.Fatal(err)
	}
	if got := recordedEnv(t, envdir, "monitor")["OCF_RESKEY_CRM_meta_interval"]; got == "0" || got == "" {
		t.Errorf("a monitor after Start passes interval %q: agents would treat it as a probe", got)
	}
}

// A hung action is killed at the deadline with everything it started.
func TestOCFTimeoutKillsTheGroup(t *testing.T) {
	a, envdir := scripted(t, map[string]any{"hang": "stop"})
	ctx := ctxFor(t, 500*time.Millisecond)
	err := a.Stop(ctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a hung stop returned %v, want the deadline", err)
	}
	b, err := os.ReadFile(filepath.Join(envdir, "child.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	waitFor(t, 5*time.Second, "the agent's child to be killed", func() bool { return !alive(pid) })
}

// Params are checked against the agent's meta-data at construction.
func TestOCFParamsCheckedAgainstMetadata(t *testing.T) {
	needResourceAgents(t)
	root := scriptedRoot(t)
	for _, tc := range []struct {
		agent  string
		params map[string]any
		key    string
		say    string
	}{
		{"heartbeat:Dummy", map[string]any{"nosuch": "x"}, "resources[5].params.nosuch", "has no parameter"},
		{"heartbeat:IPaddr2", map[string]any{"nic": "eth0"}, "resources[5].params.ip", "required"},
		{"heartbeat:IPaddr2", map[string]any{"ip": "192.0.2.1", "arp_count": "many"}, "resources[5].params.arp_count", "integer"},
		{"heartbeat:IPaddr2", map[string]any{"ip": "192.0.2.1", "lvs_support": "perhaps"}, "resources[5].params.lvs_support", "boolean"},
		{"test:Scripted", map[string]any{"envdir": "/tmp", "hang": "always"}, "resources[5].params.hang", "one of none, start"},
		{"heartbeat:NoSuchAgent", nil, "resources[5].agent", "not an executable OCF agent"},
		{"IPaddr2", nil, "resources[5].agent", "provider:type"},
		{"heartbeat:Dummy", map[string]any{"bad-name": "x"}, "resources[5].params.bad-name", "not a valid OCF parameter name"},
		{"heartbeat:Dummy", map[string]any{"state": []any{"x"}}, "resources[5].params.state", "string, number or boolean"},
	} {
		env, _ := testEnv(t)
		if strings.HasPrefix(tc.agent, "test:") {
			env.OCFRoot = root
		}
		p := map[string]any{"agent": tc.agent}
		if tc.params != nil {
			p["params"] = tc.params
		}
		_, err := New("resources[5]", "ocf", "r", p, env)
		var ke *heartbeat.KeyError
		if !errors.As(err, &ke) || ke.Key != tc.key || !strings.Contains(ke.Msg, tc.say) {
			t.Errorf("%s %v: %v, want a KeyError at %s saying %q", tc.agent, tc.params, err, tc.key, tc.say)
		}
	}
}
