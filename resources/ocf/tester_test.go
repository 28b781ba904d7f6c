package ocf

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Debian's ocf-tester (package resource-agents) drives the agent through
// the sequence Pacemaker relies on: permissions, meta-data against the DTD,
// validate-all, probes with and without binaries, start, monitor, start
// twice, stop twice, and the optional actions.
func TestOCFTester(t *testing.T) {
	const tester = "/usr/sbin/ocf-tester"
	if _, err := os.Stat(tester); err != nil {
		t.Fatalf("%s is missing (package resource-agents): run make deps", tester)
	}
	requireTools(t, "xmllint") // ocf-tester lints the meta-data with it
	r := newRig(t, withShellfuncs, 32<<20)
	// ocf-tester runs meta-data as nobody: the agent must be reachable.
	agent := filepath.Join(r.dir, "volume")
	b, err := os.ReadFile(r.agent)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(agent, b, 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"-n", "vol"}
	for k, v := range r.env {
		if name, ok := strings.CutPrefix(k, "OCF_RESKEY_"); ok && !strings.HasPrefix(name, "CRM_meta") {
			args = append(args, "-o", name+"="+v)
		}
	}
	cmd := exec.Command(tester, append(args, agent)...)
	cmd.Env = append(os.Environ(), "HA_RSCTMP="+r.env["HA_RSCTMP"])
	out, err := cmd.CombinedOutput()
	t.Logf("ocf-tester:\n%s", out)
	if err != nil || !strings.Contains(string(out), "passed all tests") {
		t.Fatalf("ocf-tester: %v\nmirrord log:\n%s", err, r.logTail())
	}
	if alive(r.pid()) {
		t.Fatal("mirrord runs after ocf-tester's last stop")
	}
}
