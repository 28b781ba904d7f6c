package packaging

import (
	"compress/gzip"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// repoRoot is where the Makefile is, seen from this package's directory.
const repoRoot = ".."

// runMake runs make in the repository with vars (NAME=VALUE) and returns
// its output; the binaries go to a temporary BIN, never to the tree's bin/
// that other tests may be running.
func runMake(t *testing.T, target string, vars ...string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go is not on PATH, make cannot build: %v", err)
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatalf("make is not installed: %v", err)
	}
	args := append([]string{"-C", repoRoot, "--no-print-directory", target, "GO=" + goBin}, vars...)
	out, err := exec.Command("make", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// files lists the regular files and symlinks under root, slash-separated
// and relative to it, sorted.
func files(t *testing.T, root string) []string {
	t.Helper()
	var got []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		got = append(got, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	return got
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func gunzip(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return string(b)
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// checkTree checks what `make install` (or the .deb) put under root for
// binaries in sbin and pages, completion under share: the binaries run,
// every unit names the installed binaries, the example is the shipped
// one, each command has a man page, the completion loads in bash, the
// OCF agent is there.
func checkTree(t *testing.T, root, sbin, share string) {
	t.Helper()
	for _, c := range []string{"mirrord", "mirrorctl"} {
		p := filepath.Join(root, sbin, c)
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v, mode %v; want an executable", p, err, st)
			continue
		}
		if out := mustRun(t, p, "--help"); !strings.Contains(out, "Usage:") || !strings.Contains(out, "Examples:") {
			t.Errorf("%s --help reads like no synopsis:\n%s", c, out)
		}
	}
	units, _ := filepath.Glob(filepath.Join(repoRoot, "systemd", "*"))
	if len(units) == 0 {
		t.Fatal("no units in systemd/")
	}
	for _, u := range units {
		got := readFile(t, filepath.Join(root, "lib/systemd/system", filepath.Base(u)))
		if strings.Contains(got, "/usr/local/sbin/") && sbin != "usr/local/sbin" {
			t.Errorf("%s still runs /usr/local/sbin:\n%s", filepath.Base(u), got)
		}
	}
	unit := readFile(t, filepath.Join(root, "lib/systemd/system/mirrord.service"))
	for _, want := range []string{"ExecStart=/" + sbin + "/mirrord --config /etc/hamirror/cluster.yaml",
		"ExecReload=/" + sbin + "/mirrorctl config check --quiet /etc/hamirror/cluster.yaml"} {
		if !strings.Contains(unit, want) {
			t.Errorf("mirrord.service lacks %q:\n%s", want, unit)
		}
	}
	if got, want := readFile(t, filepath.Join(root, "etc/hamirror/cluster.yaml.example")),
		readFile(t, filepath.Join(repoRoot, "docs/cluster.example.yaml")); got != want {
		t.Error("etc/hamirror/cluster.yaml.example is not docs/cluster.example.yaml")
	}
	man := filepath.Join(root, share, "man/man8")
	for _, page := range []string{"mirrord", "mirrord-volume", "mirrorctl", "mirrorctl-status", "mirrorctl-move",
		"mirrorctl-config-check", "mirrorctl-leg-add", "mirrorctl-iscsi-info"} {
		text := gunzip(t, filepath.Join(man, page+".8.gz"))
		for _, want := range []string{`.TH "` + strings.ToUpper(page) + `" "8"`, ".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH OPTIONS"} {
			if !strings.Contains(text, want) {
				t.Errorf("%s.8 lacks %q", page, want)
			}
		}
	}
	if text := gunzip(t, filepath.Join(man, "mirrorctl.8.gz")); !strings.Contains(text, ".SH EXAMPLE") {
		t.Error("mirrorctl.8 has no EXAMPLE section")
	}
	for _, hidden := range []string{"mirrorctl-completion", "mirrorctl-man", "mirrorctl-help", "mirrord-man"} {
		if _, err := os.Stat(filepath.Join(man, hidden+".8.gz")); err == nil {
			t.Errorf("%s.8 is installed: hidden commands get no page", hidden)
		}
	}
	comp := filepath.Join(root, share, "bash-completion/completions/mirrorctl")
	if _, err := exec.LookPath("bash"); err == nil {
		if out := mustRun(t, "bash", "-c", "source "+comp+" && complete -p mirrorctl"); !strings.Contains(out, "mirrorctl") {
			t.Errorf("the bash completion registers nothing for mirrorctl: %s", out)
		}
	}
	if st, err := os.Stat(filepath.Join(root, "usr/lib/ocf/resource.d/hamirror/volume")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("OCF agent ocf:hamirror:volume: %v %v", err, st)
	}
}

// TestMakeInstallLaysOutTheTree: `make install DESTDIR=... PREFIX=...`
// puts everything where a person and systemd look, keeps a cluster.yaml
// already there, and `make uninstall` takes back exactly what it put.
func TestMakeInstallLaysOutTheTree(t *testing.T) {
	tmp := t.TempDir()
	dest := filepath.Join(tmp, "root")
	mine := "# the operator's own file\n"
	if err := os.MkdirAll(filepath.Join(dest, "etc/hamirror"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dest, "etc/hamirror/cluster.yaml"), []byte(mine), 0o600); err != nil {
		t.Fatal(err)
	}
	vars := []string{"DESTDIR=" + dest, "PREFIX=/opt/hamirror", "BIN=" + filepath.Join(tmp, "bin")}
	runMake(t, "install", vars...)
	checkTree(t, dest, "opt/hamirror/sbin", "opt/hamirror/share")
	if got := readFile(t, filepath.Join(dest, "etc/hamirror/cluster.yaml")); got != mine {
		t.Errorf("make install overwrote cluster.yaml: %q", got)
	}
	all := files(t, dest)
	for _, want := range []string{"opt/hamirror/share/bash-completion/completions/mirrord",
		"opt/hamirror/share/man/man8/mirrorctl-resync.8.gz"} {
		if !slices.Contains(all, want) {
			t.Errorf("%s not installed; the tree:\n%s", want, strings.Join(all, "\n"))
		}
	}
	runMake(t, "uninstall", vars...)
	if left := files(t, dest); len(left) != 1 || left[0] != "etc/hamirror/cluster.yaml" {
		t.Errorf("make uninstall left %v; want only the operator's etc/hamirror/cluster.yaml", left)
	}
}
