package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeSystemctl stands in for systemctl inside the throwaway root (a real
// one would act on this machine's services): it records each call and
// says mirrord is active only while /mirrord.active exists.
const fakeSystemctl = `#!/bin/sh
echo "$*" >> /systemctl.log
case "$1" in is-active) [ -e /mirrord.active ] && exit 0; exit 3;; esac
exit 0
`

// throwawayRoot makes a root dpkg can install into and chroot to for the
// maintainer scripts: an empty package database, busybox as /bin/sh, a
// stand-in /dev/null, /run/systemd/system (so the scripts believe systemd
// runs) and fakeSystemctl.
func throwawayRoot(t *testing.T, dir string) string {
	t.Helper()
	root := filepath.Join(dir, "root")
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "bin", "usr/bin", "dev", "run/systemd/system", "etc/hamirror"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	write := func(p string, data string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(root, p), []byte(data), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("bin/busybox", string(bb), 0o755)
	if err := os.Symlink("busybox", filepath.Join(root, "bin/sh")); err != nil {
		t.Fatal(err)
	}
	write("var/lib/dpkg/status", "", 0o644)
	write("var/lib/dpkg/available", "", 0o644)
	write("dev/null", "", 0o666)
	write("usr/bin/systemctl", fakeSystemctl, 0o755)
	return root
}

// TestDebInstallsIntoAThrowawayRoot builds the .deb with `make deb`,
// installs it with dpkg into a temporary root (its maintainer scripts
// run chrooted there), checks the files, runs the installed mirrorctl on
// the installed example, then removes and purges it. The maintainer
// scripts must reload systemd but neither enable nor start mirrord (it
// has no cluster file yet), not restart a running mirrord at upgrade,
// stop and disable it at removal, and leave the operator's cluster.yaml
// alone.
func TestDebInstallsIntoAThrowawayRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("dpkg needs root to install into a throwaway root (CI runs as root)")
	}
	for _, p := range []string{"dpkg", "dpkg-deb"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s is not installed: %v", p, err)
		}
	}
	for _, p := range []string{"/bin/busybox", "/usr/lib/ocf/resource.d/heartbeat/MailTo", "/usr/lib/postgresql/15/bin/pg_ctl"} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s is missing (busybox-static, resource-agents, postgresql-15: run make deps)", p)
		}
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "bin")
	const version = "0.0~test1"
	runMake(t, "deb", "BIN="+bin, "DEB_VERSION="+version, "DEB_COMPRESS=-Zgzip -z1")
	debs, _ := filepath.Glob(filepath.Join(bin, "hamirror_"+version+"_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb built %v in %s", debs, bin)
	}
	deb := debs[0]
	info := mustRun(t, "dpkg-deb", "--info", deb)
	for _, want := range []string{"Package: hamirror", "Version: " + version, "postinst", "prerm", "postrm", "conffiles"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb --info lacks %q:\n%s", want, info)
		}
	}
	if contents := mustRun(t, "dpkg-deb", "--contents", deb); strings.Contains(contents, "etc/hamirror/cluster.yaml\n") {
		t.Errorf("the .deb ships a cluster.yaml: it must only ship the example\n%s", contents)
	}

	root := throwawayRoot(t, tmp)
	mine := "# the operator's own file\n"
	if err := os.WriteFile(filepath.Join(root, "etc/hamirror/cluster.yaml"), []byte(mine), 0o600); err != nil {
		t.Fatal(err)
	}
	dpkg := func(args ...string) string {
		t.Helper()
		return mustRun(t, "dpkg", append([]string{"--root=" + root, "--log=/dev/null"}, args...)...)
	}
	calls := func() string {
		t.Helper()
		b, _ := os.ReadFile(filepath.Join(root, "systemctl.log"))
		os.Remove(filepath.Join(root, "systemctl.log"))
		return string(b)
	}

	dpkg("--install", deb)
	if st := dpkg("--status", "hamirror"); !strings.Contains(st, "Status: install ok installed") {
		t.Fatalf("hamirror is not installed in the throwaway root:\n%s", st)
	}
	if got := calls(); got != "daemon-reload\nis-active --quiet mirrord.service\n" {
		t.Errorf("postinst ran systemctl %q; want daemon-reload and a look (no enable, no start)", got)
	}
	checkTree(t, root, "usr/sbin", "usr/share")
	if _, err := os.Stat(filepath.Join(root, "usr/share/doc/hamirror/copyright")); err != nil {
		t.Errorf("no copyright file: %v", err)
	}
	if got := readFile(t, filepath.Join(root, "etc/hamirror/cluster.yaml")); got != mine {
		t.Errorf("installing the .deb changed cluster.yaml: %q", got)
	}
	ctl := filepath.Join(root, "usr/sbin/mirrorctl")
	if out := mustRun(t, ctl, "--help"); !strings.Contains(out, "mirrorctl status") {
		t.Errorf("installed mirrorctl --help:\n%s", out)
	}
	if out := mustRun(t, ctl, "config", "check", filepath.Join(root, "etc/hamirror/cluster.yaml.example"), "--node", "n1"); !strings.Contains(out, "valid") {
		t.Errorf("installed mirrorctl config check on the installed example:\n%s", out)
	}

	// An upgrade while mirrord runs (the same .deb again) must not
	// restart it: on the active node that would move the service. The
	// operator is told how to upgrade one node at a time.
	if err := os.WriteFile(filepath.Join(root, "mirrord.active"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out := dpkg("--install", deb); !strings.Contains(out, "restart it on the standby node first") {
		t.Errorf("an upgrade beside a running mirrord says nothing about restarting it:\n%s", out)
	}
	if got := calls(); got != "daemon-reload\nis-active --quiet mirrord.service\n" {
		t.Errorf("the upgrade ran systemctl %q; want daemon-reload and a look (no restart, no stop)", got)
	}
	os.Remove(filepath.Join(root, "mirrord.active"))

	dpkg("--remove", "hamirror")
	if got := calls(); got != "stop mirrord.service\ndisable mirrord.service\ndaemon-reload\n" {
		t.Errorf("removal ran systemctl %q; want stop, disable, daemon-reload", got)
	}
	for _, gone := range []string{"usr/sbin/mirrord", "usr/sbin/mirrorctl", "lib/systemd/system/mirrord.service", "usr/share/man/man8/mirrorctl.8.gz"} {
		if _, err := os.Stat(filepath.Join(root, gone)); err == nil {
			t.Errorf("%s is still there after dpkg --remove", gone)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "etc/hamirror/cluster.yaml.example")); err != nil {
		t.Errorf("dpkg --remove took the conffile cluster.yaml.example (only purge does): %v", err)
	}
	dpkg("--purge", "hamirror")
	if _, err := os.Stat(filepath.Join(root, "etc/hamirror/cluster.yaml.example")); err == nil {
		t.Error("cluster.yaml.example survived dpkg --purge")
	}
	if got := readFile(t, filepath.Join(root, "etc/hamirror/cluster.yaml")); got != mine {
		t.Errorf("purging the .deb changed cluster.yaml: %q", got)
	}
}

// TestMaintainerScriptsArePOSIXsh: the maintainer scripts run under
// dash on Debian; shellcheck holds them to POSIX sh.
func TestMaintainerScriptsArePOSIXsh(t *testing.T) {
	if _, err := exec.LookPath("shellcheck"); err != nil {
		t.Fatalf("shellcheck is not installed (make deps): %v", err)
	}
	mustRun(t, "shellcheck", "-s", "sh", "deb/postinst", "deb/prerm", "deb/postrm")
}
