package ocf

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Pacemaker itself runs the agent: crm_resource --validate/--force-start/
// --force-check/--force-stop execute it through Pacemaker's own service
// library (the environment pacemaker-execd gives agents), no cluster
// needed. Pacemaker looks for agents only under its compiled-in OCF root,
// so each call runs in a private mount namespace where this tree's agent
// folder is bound over /usr/lib/ocf/resource.d: the machine's own agents
// are untouched.
func TestPacemakerRunsTheAgent(t *testing.T) {
	requireTools(t, "crm_resource", "unshare", "mount")
	if os.Geteuid() != 0 {
		t.Fatal("needs root (a private mount namespace); CI runs as root")
	}
	const raDir = "/usr/lib/ocf/resource.d"
	if _, err := os.Stat(raDir); err != nil {
		t.Fatalf("%s is missing (package resource-agents or pacemaker): run make deps", raDir)
	}
	r := newRig(t, withShellfuncs, 32<<20)
	r.param("pidfile", r.pidfile) // crm_resource names the instance itself
	rd := filepath.Join(r.dir, "resource.d")
	if err := os.MkdirAll(filepath.Join(rd, "hamirror"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(r.agent)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rd, "hamirror", "volume"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	crm := func(action string) (int, string) {
		t.Helper()
		args := []string{"--" + action, "--class", "ocf", "--provider", "hamirror", "--agent", "volume", "--timeout", "60s"}
		for k, v := range r.env {
			if name, ok := strings.CutPrefix(k, "OCF_RESKEY_"); ok && !strings.HasPrefix(name, "CRM_meta") {
				args = append(args, "--option", name+"="+v)
			}
		}
		script := `mount --bind "$1" ` + raDir + ` && shift && exec crm_resource "$@"`
		cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", script, "sh", rd}, args...)...)
		cmd.Env = append(os.Environ(), "HA_RSCTMP="+r.env["HA_RSCTMP"])
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("crm_resource: %v", err)
		}
		return cmd.ProcessState.ExitCode(), string(out)
	}
	expect := func(action string, rc int) string {
		t.Helper()
		got, out := crm(action)
		if got != rc {
			t.Fatalf("crm_resource --%s: exit %d, want %d\n%s\nmirrord log:\n%s", action, got, rc, out, r.logTail())
		}
		return out
	}
	expect("validate", ocfSuccess)
	expect("force-check", ocfNotRunning)
	expect("force-start", ocfSuccess)
	pid := r.pid()
	if !alive(pid) {
		t.Fatal("no mirrord after Pacemaker's start")
	}
	expect("force-check", ocfSuccess)
	expect("force-start", ocfSuccess)
	expect("force-stop", ocfSuccess)
	if alive(pid) {
		t.Fatal("mirrord runs after Pacemaker's stop")
	}
	expect("force-check", ocfNotRunning)
	expect("force-stop", ocfSuccess)

	// Pacemaker shows the reason of a held start.
	r.param("legs", r.legs[0]+" "+filepath.Join(r.dir, "gone.img"))
	if out := expect("force-start", ocfErrGeneric); !strings.Contains(out, "not provably newest") {
		t.Errorf("Pacemaker does not show the exit reason:\n%s", out)
	}
	r.param("legs", "only-one")
	expect("validate", ocfErrConfigured)
}
