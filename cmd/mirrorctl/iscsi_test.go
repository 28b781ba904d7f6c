package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/iscsi"
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
	url := "iscsi://" + td.Portal + "/" + iqn + "/1"
	out = run("iscsi", "info", url)
	// tgtd reports every reservation type, WE-RO included, and no
	// persistence through power loss.
	for _, w := range []string{"IET", "4194304 bytes", "serial:", "fencing:    yes (persistent reservations of type WE-RO)",
		"pr types:   WE EA WE-RO EA-RO WE-AR EA-AR; survive array power loss (PTPL): no", "pr keys:    0 registered []; no reservation"} {
		if !strings.Contains(out, w) {
			t.Fatalf("info output lacks %q:\n%s", w, out)
		}
	}
	// A node registered and holding the reservation shows up.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	node, err := iscsi.OpenLeg(ctx, url, iscsi.Config{InitiatorName: "iqn.2026-01.org.hamirror.test:node1"})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	if err := node.EnsureRegistered(0x1122334455667788); err != nil {
		t.Fatal(err)
	}
	if err := node.Reserve(0x1122334455667788, iscsi.WriteExclusiveRegistrantsOnly); err != nil {
		t.Fatal(err)
	}
	out = run("iscsi", "info", url)
	if w := "pr keys:    1 registered [0x1122334455667788]; WE-RO reservation held by 0x1122334455667788"; !strings.Contains(out, w) {
		t.Fatalf("info output lacks %q:\n%s", w, out)
	}
}

// mirrorctl run on the node where mirrord holds sessions to the arrays
// (same initiator name) must not reinstate — drop — those sessions: its
// own logins use an ISID of their own.
func TestToolSessionsLeaveTheDaemonsAlone(t *testing.T) {
	if err := iscsitarget.TgtdAvailable(); err != nil {
		t.Skipf("mirrorctl iscsi test skipped: %v", err)
	}
	dir := t.TempDir()
	td, err := iscsitarget.StartTgtd(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer td.Stop()
	const iqn = "iqn.2026-01.org.hamirror.test:tool"
	var imgs []string
	for _, n := range []string{"a.img", "b.img"} {
		img := filepath.Join(dir, n)
		if err := os.WriteFile(img, make([]byte, 8<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	// One target with two LUNs: each LUN's session has an ISID of its own,
	// so one command can open both (a shared ISID would make the second
	// login reinstate the first).
	if err := td.AddTarget(1, iqn, imgs, ""); err != nil {
		t.Fatal(err)
	}
	lun := func(n int) string { return fmt.Sprintf("iscsi://%s/%s/%d", td.Portal, iqn, n) }
	// The daemon's session: the node's initiator name and ISID.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	daemon, err := iscsi.OpenLeg(ctx, lun(1), iscsi.Config{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer daemon.Close()
	before, err := td.Nexuses(1)
	if err != nil || len(before) != 1 {
		t.Fatalf("nexuses with the daemon logged in: %v %v", before, err)
	}
	for _, step := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"iscsi", "info", lun(1)}, true},
		{[]string{"examine", lun(1)}, false}, // no metadata yet
		{[]string{"create", lun(1), lun(2)}, true},
		{[]string{"examine", lun(2)}, true},
		{[]string{"create", lun(1), lun(2)}, false}, // refused: metadata
	} {
		root := newRootCmd()
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		root.SetArgs(step.args)
		if err := root.Execute(); (err == nil) != step.ok {
			t.Fatalf("mirrorctl %s: %v, want success %v", strings.Join(step.args, " "), err, step.ok)
		}
		if got, err := td.Nexuses(1); err != nil || !slices.Contains(got, before[0]) {
			t.Fatalf("after mirrorctl %s the daemon's session %s is gone: %v %v", strings.Join(step.args, " "), before[0], got, err)
		}
	}
	if err := daemon.WriteAt(make([]byte, 4096), 0, true); err != nil || daemon.Stats().Reconnects != 0 {
		t.Fatalf("daemon session after mirrorctl: write %v, reconnects %d", err, daemon.Stats().Reconnects)
	}
}
