package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hamirror/hamirror/mirror"
)

// run executes mirrorctl with args in-process and returns its output.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func tempImage(t *testing.T, name string, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCreateThenExamine(t *testing.T) {
	a, b := tempImage(t, "a.img", 32<<20), tempImage(t, "b.img", 40<<20)
	out, err := run(t, "create", "--chunk", "64K", a, b)
	if err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	if !strings.Contains(out, "created volume") {
		t.Fatalf("create output %q", out)
	}
	out, err = run(t, "examine", b)
	if err != nil {
		t.Fatalf("examine: %v", err)
	}
	for _, want := range []string{"Magic : HAMIRROR", "Slot : 1", "Chunk Size : 64.00 KiB", "slot 0 in_sync, slot 1 in_sync", "State : clean"} {
		if !strings.Contains(out, want) {
			t.Errorf("examine output lacks %q:\n%s", want, out)
		}
	}
	out, err = run(t, "examine", "--json", a)
	if err != nil {
		t.Fatalf("examine --json: %v", err)
	}
	var info mirror.LegInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("examine --json output is not JSON: %v\n%s", err, out)
	}
	if info.Slot != 0 || info.ChunkBytes != 64<<10 || info.DataSizeBytes <= 0 || info.DataSizeBytes > 32<<20 || len(info.Generations) != 1 {
		t.Fatalf("examine --json: %+v", info)
	}
}

func TestCreateRefusesExistingMetadata(t *testing.T) {
	a, b := tempImage(t, "a.img", 16<<20), tempImage(t, "b.img", 16<<20)
	if out, err := run(t, "create", a, b); err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	_, err := run(t, "create", a, b)
	if err == nil || !strings.Contains(err.Error(), "hamirror metadata") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second create: %v, want a refusal naming the metadata and --force", err)
	}
	if out, err := run(t, "create", "--force", a, b); err != nil {
		t.Fatalf("create --force: %v\n%s", err, out)
	}
}

func TestCreateRefusesExt4(t *testing.T) {
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("mkfs.ext4 not installed (e2fsprogs): run make deps")
	}
	a, b := tempImage(t, "a.img", 16<<20), tempImage(t, "b.img", 16<<20)
	if out, err := exec.Command(mkfs, "-q", "-F", b).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	_, err = run(t, "create", a, b)
	if err == nil || !strings.Contains(err.Error(), "ext2/ext3/ext4") || !strings.Contains(err.Error(), b) {
		t.Fatalf("create over ext4: %v, want a refusal naming the leg and the file system", err)
	}
	if out, err := run(t, "create", "--force", a, b); err != nil {
		t.Fatalf("create --force over ext4: %v\n%s", err, out)
	}
}

func TestExamineBlankLeg(t *testing.T) {
	a := tempImage(t, "a.img", 16<<20)
	_, err := run(t, "examine", a)
	if err == nil || !strings.Contains(err.Error(), "no hamirror metadata") || !strings.Contains(err.Error(), "mirrorctl create") {
		t.Fatalf("examine of a blank leg: %v", err)
	}
}
