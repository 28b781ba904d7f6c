package lab

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The archive must unpack with the real cpio tool exactly as written:
// folders, files from the host and from memory, symlinks, device nodes.
func TestArchiveUnpacksWithCpio(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed: run make deps")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.WriteFile(src, []byte("from host, 17 b\n"), 0o600)
	a := newArchive()
	a.file("usr/bin/tool", src, 0o755)
	a.data("init", []byte("#!/bin/sh\necho odd length"), 0o755)
	a.symlink("bin/sh", "busybox")
	a.dir("proc")
	a.add(cpioEntry{Name: "dev/console", Mode: cpioChr | 0o600, Major: 5, Min: 1})
	var buf bytes.Buffer
	if err := a.writeTo(&buf); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not 4-aligned", buf.Len())
	}
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	cmd := exec.Command("cpio", "-t", "-v")
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	listing, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, listing)
	}
	cmd = exec.Command("cpio", "-i", "-d", "--no-absolute-filenames", "--quiet")
	cmd.Dir = out
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	if b, err := cmd.CombinedOutput(); err != nil && os.Geteuid() == 0 {
		t.Fatalf("cpio -i: %v\n%s", err, b)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "usr/bin/tool")); string(b) != "from host, 17 b\n" {
		t.Errorf("usr/bin/tool = %q", b)
	}
	if st, err := os.Stat(filepath.Join(out, "usr/bin/tool")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("usr/bin/tool mode: %v %v", st, err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "init")); string(b) != "#!/bin/sh\necho odd length" {
		t.Errorf("init = %q", b)
	}
	if l, err := os.Readlink(filepath.Join(out, "bin/sh")); err != nil || l != "busybox" {
		t.Errorf("bin/sh link = %q, %v", l, err)
	}
	if st, err := os.Stat(filepath.Join(out, "proc")); err != nil || !st.IsDir() {
		t.Errorf("proc: %v", err)
	}
	if !bytes.Contains(listing, []byte("dev/console")) || !bytes.Contains(listing, []byte("5,")) {
		t.Errorf("device node missing from listing:\n%s", listing)
	}
}
