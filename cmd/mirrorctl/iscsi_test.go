package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

func TestISCSIDiscoverAndInfo(t *testing.T) {
	if err := iscsitarget.TgtdAvailable(); err != nil {
		t.Skipf("mirrorctl iscsi test skipped: %v", err)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "a.img")
	if err := os.WriteFile(img, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	td, err := iscsitarget.StartTgtd(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer td.Stop()
	const iqn = "iqn.2026-01.org.hamirror.test:cli"
	if err := td.AddTarget(1, iqn, []string{img}, ""); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("mirrorctl %s: %v", strings.Join(args, " "), err)
		}
		return out.String()
	}
	out := run("iscsi", "discover", td.Portal)
	want := "iscsi://" + td.Portal + "/" + iqn + "/LUN"
	if !strings.Contains(out, iqn) || !strings.Contains(out, want) {
		t.Fatalf("discover output:\n%s\nwant a line with %s", out, want)
	}
	out = run("iscsi", "info", "iscsi://"+td.Portal+"/"+iqn+"/1")
	for _, w := range []string{"IET", "4194304 bytes", "serial:"} {
		if !strings.Contains(out, w) {
			t.Fatalf("info output lacks %q:\n%s", w, out)
		}
	}
}
