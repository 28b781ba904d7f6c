package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// End-to-end tests: the real mirrord and mirrorctl binaries, file legs,
// and real NBD clients (nbdcopy, qemu-img, fio).

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if err := closeFailoverLab(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: closing the failover lab: %v\n", err)
		code = max(code, 1)
	}
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries builds mirrord and mirrorctl once per test run.
func binaries(t *testing.T) (mirrord, mirrorctl string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "hamirror-bin")
		if buildErr != nil {
			return
		}
		for _, name := range []string{"mirrord", "mirrorctl"} {
			bin := filepath.Join(binDir, name)
			out, err := exec.Command("go", "build", "-o", bin, "github.com/hamirror/hamirror/cmd/"+name).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build: %v\n%s", err, out)
				return
			}
			if err := os.Chmod(bin, 0o755); err != nil {
				buildErr = err
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
			t.Skipf("SKIPPED LOUDLY: %s is not installed: run make deps", tool)
		}
	}
}

// lab is one volume's files and daemon.
type lab struct {
	t         *testing.T
	dir       string
	legs      [2]string
	sock, ctl string
	mirrord   string
	mirrorctl string
	cmd       *exec.Cmd
	stderr    *lockedBuffer
	exited    chan error
	// startupReply is the first answer to status that was not the
	// volume's status (mirrord still assembling), if start saw one.
	startupReply string
}

// lockedBuffer collects mirrord's stderr; tests read it while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// newLab makes a lab whose legs are two sparse files of legSize bytes.
func newLab(t *testing.T, legSize int64) *lab {
	l := newLabNoLegs(t)
	for i := range l.legs {
		l.legs[i] = filepath.Join(l.dir, fmt.Sprintf("leg%d.img", i))
		if err := os.WriteFile(l.legs[i], nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(l.legs[i], legSize); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// newLabNoLegs makes a lab with its directory, sockets and binaries but no
// leg files: the caller sets l.legs (e.g. to iscsi:// URLs).
func newLabNoLegs(t *testing.T) *lab {
	mirrord, mirrorctl := binaries(t)
	dir, err := os.MkdirTemp("", "hm") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return &lab{t: t, dir: dir, sock: filepath.Join(dir, "nbd.sock"), ctl: filepath.Join(dir, "ctl.sock"), mirrord: mirrord, mirrorctl: mirrorctl}
}

func (l *lab) ctlRun(args ...string) (string, error) {
	cmd := exec.Command(l.mirrorctl, append([]string{"--control", "unix:" + l.ctl}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (l *lab) mustCtl(args ...string) string {
	l.t.Helper()
	out, err := l.ctlRun(args...)
	if err != nil {
		l.t.Fatalf("mirrorctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// start runs mirrord volume with the given legs and extra flags and waits
// until the control socket answers.
func (l *lab) start(legs [2]string, extra ...string) {
	l.t.Helper()
	args := []string{"volume", "--leg", legs[0], "--leg", legs[1], "--listen", "unix:" + l.sock, "--control", "unix:" + l.ctl}
	l.cmd = exec.Command(l.mirrord, append(args, extra...)...)
	l.stderr = &lockedBuffer{}
	l.cmd.Stderr = l.stderr
	if err := l.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.exited = make(chan error, 1)
	l.startupReply = ""
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(l.cmd, l.exited)
	l.t.Cleanup(func() {
		if l.cmd.ProcessState == nil {
			l.cmd.Process.Kill()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-l.exited:
			l.t.Fatalf("mirrord exited at start: %v\n%s", err, l.stderr)
		default:
		}
		// Ready when status answers with JSON: before the volume is
		// assembled mirrord answers that it is starting.
		if c, err := net.Dial("unix", l.ctl); err == nil {
			c.Close()
			out, _ := l.ctlRun("status", "--json")
			if json.Valid([]byte(out)) {
				return
			}
			if l.startupReply == "" {
				l.startupReply = out
			}
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("mirrord did not open its control socket:\n%s", l.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (l *lab) stop() {
	l.t.Helper()
	l.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-l.exited:
		if err != nil {
			l.t.Fatalf("mirrord exited with %v after SIGTERM:\n%s", err, l.stderr)
		}
	case <-time.After(30 * time.Second):
		l.t.Fatalf("mirrord did not stop within 30s of SIGTERM:\n%s", l.stderr)
	}
}

type statusJSON struct {
	State     string `json:"state"`
	SizeBytes int64  `json:"size_bytes"`
	Error     string `json:"error"`
	Legs      []struct {
		Slot           int    `json:"slot"`
		Path           string `json:"path"`
		State          string `json:"state"`
		OutOfSyncBytes int64  `json:"out_of_sync_bytes"`
	} `json:"legs"`
	Resync struct {
		DoneBytes      int64   `json:"done_bytes"`
		TotalBytes     int64   `json:"total_bytes"`
		BytesPerSecond float64 `json:"bytes_per_second"`
	} `json:"resync"`
}

func (l *lab) status() statusJSON {
	l.t.Helper()
	out, _ := l.ctlRun("status", "--json") // exit 2 when not clean
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		l.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

func (l *lab) uri() string { return "nbd+unix:///?socket=" + l.sock }

func runTool(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func randomFile(t *testing.T, path string, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// The whole operator story: create, serve, write with real clients, fail a
// leg, keep writing, re-add, resync, verify, SIGTERM; then each leg file
// holds the exact volume image at offset 0.
func TestVolumeEndToEnd(t *testing.T) {
	requireTools(t, "nbdcopy", "qemu-img", "fio", "cmp")
	l := newLab(t, 80<<20)
	out := l.mustCtl("create", l.legs[0], l.legs[1])
	if !strings.Contains(out, "created volume") {
		t.Fatalf("create: %s", out)
	}
	l.start(l.legs)
	st := l.status()
	if st.State != "clean" || st.SizeBytes <= 64<<20 || len(st.Legs) != 2 || st.Legs[0].State != "in_sync" || st.Legs[1].Path != l.legs[1] {
		t.Fatalf("fresh volume status %+v", st)
	}
	if fi, err := os.Stat(l.sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("NBD socket mode: %v %v", fi.Mode().Perm(), err)
	}
	size := st.SizeBytes

	// Random data in and out with nbdcopy; qemu-img compares.
	img1 := filepath.Join(l.dir, "img1")
	randomFile(t, img1, 32<<20)
	runTool(t, l.dir, "nbdcopy", img1, l.uri())
	back := filepath.Join(l.dir, "back")
	runTool(t, l.dir, "nbdcopy", l.uri(), back)
	runTool(t, l.dir, "cmp", "-n", fmt.Sprint(32<<20), img1, back)
	runTool(t, l.dir, "qemu-img", "compare", "-f", "raw", "-F", "raw", img1, l.uri())

	// fio verify through its nbd engine on a region beyond the image.
	runTool(t, l.dir, "fio", "--name=v", "--ioengine=nbd", "--uri="+l.uri(), "--rw=randwrite", "--bs=4k",
		"--iodepth=16", "--offset=40m", "--size=16m", "--verify=crc32c", "--verify_fatal=1")

	// Fail leg 1; the volume goes on degraded; write more.
	out = l.mustCtl("leg", "fail", "1")
	if !strings.Contains(out, "ONE COPY ONLY") {
		t.Errorf("leg fail output does not warn:\n%s", out)
	}
	if st := l.status(); st.State != "degraded" || st.Legs[1].State != "failed" {
		t.Fatalf("after leg fail: %+v", st)
	}
	if _, err := l.ctlRun("status"); err == nil {
		t.Error("status exits 0 on a degraded volume")
	}
	img2 := filepath.Join(l.dir, "img2")
	randomFile(t, img2, 24<<20)
	runTool(t, l.dir, "nbdcopy", img2, l.uri())

	// Re-add, resync, verify.
	l.mustCtl("leg", "add", "1")
	out = l.mustCtl("resync", "--wait")
	if !strings.Contains(out, "in sync") {
		t.Fatalf("resync --wait: %s", out)
	}
	st = l.status()
	if st.State != "clean" || st.Legs[1].State != "in_sync" || st.Resync.TotalBytes == 0 {
		t.Fatalf("after resync: %+v", st)
	}
	out = l.mustCtl("verify", "--wait")
	if !strings.Contains(out, "0 mismatching chunks") {
		t.Fatalf("verify --wait: %s", out)
	}
	if out := l.mustCtl("status"); !strings.Contains(out, "SAFE") {
		t.Fatalf("human status after resync:\n%s", out)
	}

	// The whole volume image, then SIGTERM: both legs equal it.
	whole := filepath.Join(l.dir, "whole")
	runTool(t, l.dir, "nbdcopy", l.uri(), whole)
	runTool(t, l.dir, "cmp", "-n", fmt.Sprint(24<<20), img2, whole)
	l.stop()
	if !strings.Contains(l.stderr.String(), "volume closed clean") {
		t.Errorf("mirrord did not report a clean close:\n%s", l.stderr)
	}
	for _, leg := range l.legs {
		runTool(t, l.dir, "cmp", "-n", fmt.Sprint(size), whole, leg)
	}
	if _, err := os.Stat(l.sock); err == nil {
		t.Error("NBD socket left behind after shutdown")
	}
}

func TestVolumeRefusesLegsWithoutMetadata(t *testing.T) {
	l := newLab(t, 16<<20)
	cmd := exec.Command(l.mirrord, "volume", "--leg", l.legs[0], "--leg", l.legs[1], "--listen", "unix:"+l.sock, "--control", "unix:"+l.ctl)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatal("mirrord served legs without metadata")
	}
	if !strings.Contains(string(out), "mirrorctl create") || !strings.Contains(string(out), "no hamirror metadata") {
		t.Fatalf("mirrord's message does not point to mirrorctl create:\n%s", out)
	}
}

// Each leg written alone (the other missing): a split brain. mirrord stays
// up, exports nothing and explains; --keep-leg 0 resolves it.
func TestVolumeSplitBrainHoldsAndKeepLegResolves(t *testing.T) {
	requireTools(t, "nbdcopy", "cmp")
	l := newLab(t, 32<<20)
	l.mustCtl("create", l.legs[0], l.legs[1])
	missing := filepath.Join(l.dir, "missing.img")
	imgs := [2]string{filepath.Join(l.dir, "a"), filepath.Join(l.dir, "b")}
	for i, legs := range [][2]string{{l.legs[0], missing}, {missing, l.legs[1]}} {
		l.start(legs, "--keep-leg", fmt.Sprint(i)) // the operator starts on the leg it has
		if st := l.status(); st.State != "degraded" {
			t.Fatalf("assembled with one leg: %+v", st)
		}
		randomFile(t, imgs[i], 4<<20)
		runTool(t, l.dir, "nbdcopy", imgs[i], l.uri())
		l.stop()
	}
	l.start(l.legs)
	st := l.status()
	if st.State != "split-brain" || !strings.Contains(st.Error, "--keep-leg") {
		t.Fatalf("split brain status: %+v", st)
	}
	if _, err := os.Stat(l.sock); err == nil {
		t.Fatal("mirrord exports a split-brain volume")
	}
	if out, err := l.ctlRun("resync"); err == nil || !strings.Contains(out, "--keep-leg") {
		t.Fatalf("resync during split brain: %v %s", err, out)
	}
	human, _ := l.ctlRun("status")
	if !strings.Contains(human, "split brain") {
		t.Fatalf("human status does not say split brain:\n%s", human)
	}
	l.stop()

	l.start(l.legs, "--keep-leg", "0")
	l.mustCtl("resync", "--wait")
	back := filepath.Join(l.dir, "back")
	runTool(t, l.dir, "nbdcopy", l.uri(), back)
	runTool(t, l.dir, "cmp", "-n", fmt.Sprint(4<<20), imgs[0], back)
	l.stop()
	runTool(t, l.dir, "cmp", "-n", fmt.Sprint(4<<20), imgs[0], l.legs[1])
}

// A leg missing when mirrord starts, and the operator starts on the other
// with --keep-leg: the volume serves degraded, status names the missing
// leg, and `mirrorctl leg add N` (no path) reopens it by the name mirrord
// was given, resyncing what was written meanwhile.
func TestVolumeLegMissingAtStartIsAddedByName(t *testing.T) {
	requireTools(t, "nbdcopy", "cmp")
	l := newLab(t, 32<<20)
	l.mustCtl("create", l.legs[0], l.legs[1])
	away := l.legs[1] + ".away"
	if err := os.Rename(l.legs[1], away); err != nil {
		t.Fatal(err)
	}
	l.start(l.legs, "--keep-leg", "0") // the operator starts on leg 0 alone
	st := l.status()
	if st.State != "degraded" || st.Legs[1].State != "failed" || st.Legs[1].Path != l.legs[1] {
		t.Fatalf("started with leg 1 missing: %+v", st)
	}
	img := filepath.Join(l.dir, "img")
	randomFile(t, img, 2<<20)
	runTool(t, l.dir, "nbdcopy", img, l.uri())
	if err := os.Rename(away, l.legs[1]); err != nil {
		t.Fatal(err)
	}
	l.mustCtl("leg", "add", "1")
	l.mustCtl("resync", "--wait")
	st = l.status()
	if st.State != "clean" || st.Legs[1].Path != l.legs[1] || st.Resync.TotalBytes == 0 || st.Resync.TotalBytes > 4<<20 {
		t.Fatalf("after leg add 1: %+v (resync should copy only the 2 MiB written)", st)
	}
	l.stop()
	runTool(t, l.dir, "cmp", "-n", fmt.Sprint(2<<20), img, l.legs[1])
}
