package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// refusedMirrord runs one more `mirrord volume` on legs with the given
// extra flags, its own control socket and NBD socket, and returns its
// output once it exited; it fails the test if it keeps running.
func (l *lab) refusedMirrord(t *testing.T, name string, legs [2]string, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := []string{"volume", "--leg", legs[0], "--leg", legs[1],
		"--listen", "unix:" + filepath.Join(l.dir, name+".sock"), "--control", "unix:" + filepath.Join(l.dir, name+"-ctl.sock")}
	out, err := exec.CommandContext(ctx, l.mirrord, append(args, extra...)...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the %s mirrord was not refused within 60s:\n%s", name, out)
	}
	if err == nil {
		t.Fatalf("the %s mirrord on legs in use exited 0:\n%s", name, out)
	}
	return string(out)
}

// Issue 10 finding 9: two mirrords on one volume. A second one on this
// node is refused at once by the leg locks, naming the first's pid; one
// from "another node" (its own lock directory, node ID and initiator
// name, so its own ISIDs) is refused by multi-mount protection, naming
// the first's node and pid. Meanwhile the first serves a client without
// an error and keeps its iSCSI sessions. After kill -9 of the owner a new
// mirrord starts once the MMP wait has shown the old one gone; after a
// clean stop it starts at once.
func TestISCSITwoMirrordsOneVolume(t *testing.T) {
	il := newISCSILab(t)
	l := il.lab
	flags := append([]string{"--io-timeout", ioTimeout.String(), "--node-id", "node1"}, il.chap...)
	l.start(l.legs, flags...)
	pid := strconv.Itoa(l.cmd.Process.Pid)
	nexuses := func() string {
		t.Helper()
		a, err := il.a.td.Nexuses(1)
		if err != nil {
			t.Fatal(err)
		}
		b, err := il.b.td.Nexuses(1)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(a, b)
	}
	before := nexuses()
	load := startTool(t, l.dir, "fio", "--name=load", "--ioengine=nbd", "--uri="+l.uri(), "--rw=randwrite",
		"--bs=64k", "--iodepth=4", "--offset=96m", "--size=8m", "--rate=1m", "--verify=crc32c", "--verify_fatal=1")

	// The same node: refused at once by the leg locks, before any login.
	t0 := time.Now()
	out := l.refusedMirrord(t, "second", l.legs, il.chap...)
	if !strings.Contains(out, "held by pid "+pid) {
		t.Fatalf("second mirrord on this node: want a refusal naming pid %s:\n%s", pid, out)
	}
	t.Logf("second mirrord on this node refused after %v: %s", time.Since(t0).Round(time.Millisecond), strings.TrimSpace(out))
	if got := nexuses(); got != before {
		t.Fatalf("the refused mirrord touched the arrays' sessions: %s, were %s", got, before)
	}

	// Another node: its own locks and ISIDs; refused by MMP.
	other := append([]string{"--io-timeout", ioTimeout.String(), "--node-id", "node2",
		"--lock-dir", filepath.Join(l.dir, "node2-locks"), "--initiator-name", "iqn.2026-01.org.hamirror.test:node2"}, il.chap...)
	out = l.refusedMirrord(t, "node2", l.legs, other...)
	if !strings.Contains(out, `node "node1"`) || !strings.Contains(out, "pid "+pid) || !strings.Contains(out, "in use") {
		t.Fatalf("mirrord of another node: want an MMP refusal naming node1 and pid %s:\n%s", pid, out)
	}
	if !load.running() {
		t.Log("the client load ended before the second node's refusal; it still must have seen no error")
	}
	load.wait(t, "fio verify while other mirrords were refused", 60*time.Second)
	if st := l.status(); st.State != "clean" || strings.Contains(l.stderr.String(), "leg failed") {
		t.Fatalf("the owner after two refused starters: %+v\n%s", st, l.stderr)
	}
	if got := nexuses(); got != before {
		t.Fatalf("the owner's sessions changed: %s, were %s", got, before)
	}

	// examine shows who owns the volume.
	if m := examineMMP(t, l, l.legs[0], il.chap); m.State != "active" || m.Node != "node1" || strconv.Itoa(m.PID) != pid {
		t.Fatalf("examine's MMP owner while node1 runs: %+v", m)
	}

	// kill -9: the next start waits until the stale block proves the old
	// owner gone, and the data written before is there.
	runTool(t, l.dir, "qemu-io", "-f", "raw", "-c", "write -P 0x77 1M 1M", "-c", "flush", l.uri())
	l.cmd.Process.Kill()
	<-l.exited
	l.start(l.legs, flags...)
	if log := l.stderr.String(); !strings.Contains(log, "not released by its last owner") {
		t.Fatalf("restart after kill -9 did not watch the stale MMP block:\n%s", log)
	}
	runTool(t, l.dir, "qemu-io", "-f", "raw", "-c", "read -P 0x77 1M 1M", l.uri())

	// A clean stop releases the volume: the next start does not wait.
	l.stop()
	l.start(l.legs, flags...)
	if log := l.stderr.String(); strings.Contains(log, "not released") || !strings.Contains(log, "released by its last owner") {
		t.Fatalf("start after a clean stop:\n%s", log)
	}
	l.stop()
	if m := examineMMP(t, l, l.legs[1], il.chap); m.State != "released" || m.Node != "node1" {
		t.Fatalf("examine's MMP owner after a clean stop: %+v", m)
	}
	if _, err := os.Stat(filepath.Join(l.dir, "node2-locks")); err != nil {
		t.Fatalf("the other node's lock directory: %v", err)
	}
}

type mmpJSON struct {
	State string `json:"state"`
	Node  string `json:"node"`
	PID   int    `json:"pid"`
}

// examineMMP is the mmp part of `mirrorctl examine --json leg`.
func examineMMP(t *testing.T, l *lab, leg string, chap []string) mmpJSON {
	t.Helper()
	out := l.mustCtl(append(append([]string{"examine", "--json"}, chap...), leg)...)
	var ex struct {
		MMP *mmpJSON `json:"mmp"`
	}
	if err := json.Unmarshal([]byte(out), &ex); err != nil || ex.MMP == nil {
		t.Fatalf("examine --json %s: %v, no mmp\n%s", leg, err, out)
	}
	return *ex.MMP
}
