package ocf

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// OCF exit codes (OCF resource agent API).
const (
	ocfSuccess       = 0
	ocfErrGeneric    = 1
	ocfErrUnimpl     = 3
	ocfErrInstalled  = 5
	ocfErrConfigured = 6
	ocfNotRunning    = 7
)

const shellfuncs = "/usr/lib/ocf/lib/heartbeat/ocf-shellfuncs"

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries builds mirrord and mirrorctl once per test run, in a folder
// every user may read (ocf-tester runs meta-data as nobody).
func binaries(t *testing.T) (mirrord, mirrorctl string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "hamirror-ocf-bin")
		if buildErr != nil {
			return
		}
		if buildErr = os.Chmod(binDir, 0o755); buildErr != nil {
			return
		}
		for _, name := range []string{"mirrord", "mirrorctl"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, name), "github.com/hamirror/hamirror/cmd/"+name).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", name, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "mirrord"), filepath.Join(binDir, "mirrorctl")
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run make deps", tool)
		}
	}
}

// agentPath is the agent in this tree.
func agentPath(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("hamirror/volume")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// mode says whether the agent runs with Pacemaker's ocf-shellfuncs (as
// under Pacemaker) or without (a node without resource-agents).
type mode string

const (
	withShellfuncs mode = "shellfuncs"
	plain          mode = "plain"
)

// modes are the modes this machine can test.
func modes(t *testing.T) []mode {
	if _, err := os.Stat(shellfuncs); err != nil {
		t.Logf("LOUD: %s is missing (package resource-agents): the agent is tested without it only", shellfuncs)
		return []mode{plain}
	}
	return []mode{withShellfuncs, plain}
}

// rig is one resource instance: its folder, legs and environment.
type rig struct {
	t         *testing.T
	dir       string
	agent     string
	mirrord   string
	mirrorctl string
	legs      [2]string
	ctl       string // control socket path
	sock      string // NBD socket path
	pidfile   string
	log       string
	env       map[string]string // OCF_RESKEY_* (without the prefix) and others (with it)
}

// newRig makes an instance whose legs are two sparse files of legSize bytes,
// made into a mirror with mirrorctl create.
func newRig(t *testing.T, m mode, legSize int64) *rig {
	r := newRigNoLegs(t, m)
	for i := range r.legs {
		r.legs[i] = filepath.Join(r.dir, fmt.Sprintf("leg%d.img", i))
		if err := os.WriteFile(r.legs[i], nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(r.legs[i], legSize); err != nil {
			t.Fatal(err)
		}
	}
	r.create()
	r.param("legs", r.legs[0]+" "+r.legs[1])
	return r
}

// newRigNoLegs makes an instance without legs: the caller sets them.
func newRigNoLegs(t *testing.T, m mode) *rig {
	t.Helper()
	mirrord, mirrorctl := binaries(t)
	dir, err := os.MkdirTemp("", "hmocf") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, dir: dir, agent: agentPath(t), mirrord: mirrord, mirrorctl: mirrorctl,
		ctl: filepath.Join(dir, "run", "ctl.sock"), sock: filepath.Join(dir, "run", "nbd.sock"),
		pidfile: filepath.Join(dir, "rsctmp", "hamirror-volume-vol.pid"), log: filepath.Join(dir, "log", "vol.log"),
		env: map[string]string{}}
	t.Cleanup(func() {
		r.killLeftover()
		if t.Failed() {
			if b, err := os.ReadFile(r.log); err == nil {
				t.Logf("mirrord log:\n%s", b)
			}
		}
		os.RemoveAll(dir)
	})
	// What Pacemaker sets.
	r.env["OCF_RESOURCE_INSTANCE"] = "vol"
	r.env["OCF_RA_VERSION_MAJOR"] = "1"
	r.env["OCF_RA_VERSION_MINOR"] = "0"
	r.env["OCF_RESKEY_CRM_meta_timeout"] = "60000"
	r.env["HA_RSCTMP"] = filepath.Join(dir, "rsctmp")
	if m == withShellfuncs {
		r.env["OCF_ROOT"] = "/usr/lib/ocf"
	} else {
		// An OCF root without lib/heartbeat: the agent's own fallbacks.
		root := filepath.Join(dir, "ocfroot")
		os.MkdirAll(root, 0o755)
		r.env["OCF_ROOT"] = root
	}
	r.param("control", "unix:"+r.ctl)
	r.param("listen", "unix:"+r.sock)
	r.param("log", r.log)
	r.param("mirrord", mirrord)
	r.param("mirrorctl", mirrorctl)
	r.param("io_timeout", "1s")
	r.param("options", "--lock-dir "+filepath.Join(dir, "locks"))
	return r
}

// param sets OCF_RESKEY_name; an empty value unsets it.
func (r *rig) param(name, value string) {
	if value == "" {
		delete(r.env, "OCF_RESKEY_"+name)
		return
	}
	r.env["OCF_RESKEY_"+name] = value
}

func (r *rig) create() {
	r.t.Helper()
	out, err := exec.Command(r.mirrorctl, "create", r.legs[0], r.legs[1]).CombinedOutput()
	if err != nil {
		r.t.Fatalf("mirrorctl create: %v\n%s", err, out)
	}
}

// result is one action's outcome.
type result struct {
	rc             int
	stdout, stderr string
}

// reason is the ocf-exit-reason the agent gave, if any.
func (res result) reason() string {
	for _, line := range strings.Split(res.stderr, "\n") {
		if s, ok := strings.CutPrefix(line, "ocf-exit-reason:"); ok {
			return s
		}
	}
	return ""
}

// run calls the agent with action, as Pacemaker does: a clean environment
// with the OCF variables, and env overrides ("NAME=value") on top.
func (r *rig) run(action string, env ...string) result {
	r.t.Helper()
	cmd := exec.Command(r.agent, action)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range r.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.rc = ee.ExitCode()
	default:
		r.t.Fatalf("running the agent: %v", err)
	}
	return res
}

// expect runs action and fails the test unless it exits with rc.
func (r *rig) expect(action string, rc int, env ...string) result {
	r.t.Helper()
	res := r.run(action, env...)
	if res.rc != rc {
		r.t.Fatalf("%s: exit %d, want %d\nstderr:\n%s\nmirrord log (tail):\n%s", action, res.rc, rc, res.stderr, r.logTail())
	}
	return res
}

func (r *rig) logTail() string {
	b, _ := os.ReadFile(r.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// pid is the pid in the agent's pid file, 0 if none.
func (r *rig) pid() int {
	b, err := os.ReadFile(r.pidfile)
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return p
}

// alive reports whether pid is a live process running mirrord (not a
// zombie: orphaned children may wait for a reaper on these machines).
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), "mirrord")
}

// killLeftover kills the mirrord this rig's agent started, if one is left
// (a failed test): only the pid from our own pid file.
func (r *rig) killLeftover() {
	if p := r.pid(); alive(p) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		if strings.Contains(string(b), r.ctl) {
			syscall.Kill(p, syscall.SIGCONT)
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
}

// status is mirrorctl status --json's volume state.
func (r *rig) state() string {
	out, _ := exec.Command(r.mirrorctl, "--control", "unix:"+r.ctl, "status", "--json").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if s, ok := strings.CutPrefix(line, `  "state": "`); ok {
			return strings.TrimSuffix(strings.TrimSuffix(s, ","), `"`)
		}
	}
	return ""
}

// waitGone waits until pid is no longer a live mirrord.
func waitGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("mirrord pid %d still runs after %v", pid, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
