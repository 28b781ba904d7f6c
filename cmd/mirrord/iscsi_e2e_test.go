package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

// End-to-end over iSCSI: the real mirrord and mirrorctl binaries, two real
// tgtd arrays (separate daemons, so one can be killed or frozen alone)
// requiring mutual CHAP, and real NBD clients. Proves that every command
// that takes a leg takes an iscsi:// leg, and that a dead or hung array
// degrades the volume without an application error and comes back by
// itself with only the changed chunks copied.

const (
	e2eIQN     = "iqn.2026-01.org.hamirror.test:e2e"
	e2eLUNSize = 128 << 20
	chapUser   = "hamirror-node"
	chapSecret = "initiator-secret-1"
	tgtUser    = "array"
	tgtSecret  = "array-secret-22"
	ioTimeout  = 2 * time.Second
)

// e2eArray is one tgtd with target 1 holding one LUN backed by img.
type e2eArray struct {
	td  *iscsitarget.Tgtd
	img string
	url string
}

// scratchDir is a fresh directory on tmpfs when there is one (the LUN
// backing files: the test measures the stack, not the shared disk).
func scratchDir(t *testing.T) string {
	t.Helper()
	base := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		base = "/dev/shm"
	}
	dir, err := os.MkdirTemp(base, "hm-e2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func startE2EArray(t *testing.T, dir, name string) *e2eArray {
	t.Helper()
	img := filepath.Join(dir, name+".img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, e2eLUNSize); err != nil {
		t.Fatal(err)
	}
	td, err := iscsitarget.StartTgtd(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		td.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(td.Log); err == nil && len(b) > 0 {
				t.Logf("tgtd %s log:\n%s", name, b[max(0, len(b)-2000):])
			}
		}
	})
	if err := td.AddTarget(1, e2eIQN, []string{img}, ""); err != nil {
		t.Fatal(err)
	}
	if err := td.AddAccount(1, chapUser, chapSecret, false); err != nil {
		t.Fatal(err)
	}
	if err := td.AddAccount(1, tgtUser, tgtSecret, true); err != nil {
		t.Fatal(err)
	}
	return &e2eArray{td: td, img: img, url: fmt.Sprintf("iscsi://%s/%s/1", td.Portal, e2eIQN)}
}

// chapFlags writes the two secret files and returns the leg flags that
// name them (secrets never appear on a command line).
func chapFlags(t *testing.T, dir string) []string {
	t.Helper()
	mine, theirs := filepath.Join(dir, "chap.secret"), filepath.Join(dir, "target.secret")
	if err := os.WriteFile(mine, []byte(chapSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(theirs, []byte(tgtSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"--chap-user", chapUser, "--chap-secret-file", mine,
		"--target-chap-user", tgtUser, "--target-chap-secret-file", theirs}
}

type examineJSON struct {
	Leg           string `json:"leg"`
	VolumeUUID    string `json:"volume_uuid"`
	Slot          int    `json:"slot"`
	DataSizeBytes int64  `json:"data_size_bytes"`
	ChunkBytes    int64  `json:"chunk_bytes"`
	DirtyChunks   int64  `json:"bitmap_dirty_chunks"`
}

func (l *lab) examine(leg string, chap []string) examineJSON {
	l.t.Helper()
	out := l.mustCtl(append(append([]string{"examine", "--json"}, chap...), leg)...)
	var ex examineJSON
	if err := json.Unmarshal([]byte(out), &ex); err != nil {
		l.t.Fatalf("examine --json %s: %v\n%s", leg, err, out)
	}
	return ex
}

// waitState polls status until the volume is in state want and returns
// how long that took.
func (l *lab) waitState(want string, within time.Duration) (statusJSON, time.Duration) {
	l.t.Helper()
	t0 := time.Now()
	for {
		st := l.status()
		if st.State == want {
			return st, time.Since(t0)
		}
		if time.Since(t0) > within {
			l.t.Fatalf("volume not %s within %v: %+v\nmirrord log:\n%s", want, within, st, l.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// bgTool runs an NBD client in the background; wait returns its error and
// output.
type bgTool struct {
	out  bytes.Buffer
	err  error
	done chan struct{} // closed when the tool has exited and err is set
}

func startTool(t *testing.T, dir, name string, args ...string) *bgTool {
	t.Helper()
	b := &bgTool{done: make(chan struct{})}
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &b.out, &b.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	})
	go func() { b.err = cmd.Wait(); close(b.done) }()
	return b
}

func (b *bgTool) running() bool {
	select {
	case <-b.done:
		return false
	default:
		return true
	}
}

func (b *bgTool) wait(t *testing.T, what string, within time.Duration) {
	t.Helper()
	select {
	case <-b.done:
		if b.err != nil {
			t.Fatalf("%s failed: %v\n%s", what, b.err, b.out.String())
		}
	case <-time.After(within):
		t.Fatalf("%s did not finish within %v", what, within)
	}
}

// writeLoad is a rate-limited fio random write with crc32c verification
// over an 8 MiB region, lasting about 4 s: long enough to straddle a
// fault, small enough that a resync of it is much smaller than the volume.
const loadRegion = 8 << 20

func (l *lab) writeLoad() *bgTool {
	return startTool(l.t, l.dir, "fio", "--name=load", "--ioengine=nbd", "--uri="+l.uri(), "--rw=randwrite",
		"--bs=64k", "--iodepth=4", "--offset=96m", fmt.Sprintf("--size=%d", loadRegion), "--rate=2m", "--verify=crc32c", "--verify_fatal=1")
}

// iscsiLab is a lab whose legs are LUNs on two tgtd arrays requiring
// mutual CHAP, made into a volume with mirrorctl create.
type iscsiLab struct {
	*lab
	a, b    *e2eArray
	scratch string
	chap    []string // the leg flags naming the CHAP secret files
	ex      [2]examineJSON
}

func newISCSILab(t *testing.T) *iscsiLab {
	t.Helper()
	requireTools(t, "nbdinfo", "nbdcopy", "qemu-img", "fio", "cmp")
	if err := iscsitarget.TgtdAvailable(); err != nil {
		t.Skipf("SKIPPED LOUDLY: %v", err)
	}
	il := &iscsiLab{scratch: scratchDir(t)}
	il.a = startE2EArray(t, il.scratch, "a")
	il.b = startE2EArray(t, il.scratch, "b")
	il.lab = newLabNoLegs(t)
	il.legs = [2]string{il.a.url, il.b.url}
	il.chap = chapFlags(t, il.dir)
	out := il.mustCtl(append(append([]string{"create"}, il.chap...), il.a.url, il.b.url)...)
	if !strings.Contains(out, "created volume") {
		t.Fatalf("create: %s", out)
	}
	il.ex = [2]examineJSON{il.examine(il.a.url, il.chap), il.examine(il.b.url, il.chap)}
	return il
}

// startMirrord runs mirrord volume over the two iscsi:// legs.
func (il *iscsiLab) startMirrord(extra ...string) {
	il.t.Helper()
	il.start(il.legs, append(append([]string{"--io-timeout", ioTimeout.String()}, il.chap...), extra...)...)
}

func TestISCSIVolumeEndToEnd(t *testing.T) {
	il := newISCSILab(t)
	l, a, b, chap, scratch := il.lab, il.a, il.b, il.chap, il.scratch

	// Without the CHAP secrets the arrays refuse us, and the message says
	// why; with a wrong target secret we refuse the array (mutual CHAP).
	if out, err := l.ctlRun("examine", a.url); err == nil || !strings.Contains(out, "CHAP") {
		t.Fatalf("examine without CHAP flags: err %v\n%s", err, out)
	}
	wrong := filepath.Join(l.dir, "wrong.secret")
	if err := os.WriteFile(wrong, []byte("not-the-array-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	badChap := append(append([]string{}, chap[:len(chap)-1]...), wrong)
	if out, err := l.ctlRun(append(append([]string{"examine"}, badChap...), a.url)...); err == nil {
		t.Fatalf("examine accepted an array that does not know the target secret:\n%s", out)
	}

	// mirrorctl create (in newISCSILab) and examine take the iscsi:// legs.
	exA, exB := il.ex[0], il.ex[1]
	if exA.Slot != 0 || exB.Slot != 1 || exA.VolumeUUID == "" || exA.VolumeUUID != exB.VolumeUUID ||
		exA.DataSizeBytes <= 64<<20 || exA.DataSizeBytes != exB.DataSizeBytes || exA.Leg != a.url {
		t.Fatalf("examine after create:\n%+v\n%+v", exA, exB)
	}
	if out := l.mustCtl(append(append([]string{"examine"}, chap...), b.url)...); !strings.Contains(out, exA.VolumeUUID) {
		t.Fatalf("human examine lacks the volume UUID:\n%s", out)
	}

	// mirrord volume serves them over NBD.
	il.startMirrord()
	st := l.status()
	if st.State != "clean" || st.SizeBytes != exA.DataSizeBytes || st.Legs[0].Path != a.url || st.Legs[1].Path != b.url ||
		st.Legs[0].State != "in_sync" || st.Legs[1].State != "in_sync" {
		t.Fatalf("fresh iSCSI volume status %+v", st)
	}
	size := st.SizeBytes
	if got := strings.TrimSpace(runTool(t, l.dir, "nbdinfo", "--size", l.uri())); got != strconv.FormatInt(size, 10) {
		t.Fatalf("nbdinfo --size = %s, want %d", got, size)
	}
	var info struct {
		Exports []struct {
			Size      int64 `json:"export-size"`
			MinBlock  int64 `json:"block_size_minimum"`
			PrefBlock int64 `json:"block_size_preferred"`
			MaxBlock  int64 `json:"block_size_maximum"`
			ReadOnly  bool  `json:"is_read_only"`
			Flush     bool  `json:"can_flush"`
			FUA       bool  `json:"can_fua"`
			MultiConn bool  `json:"can_multi_conn"`
			Zero      bool  `json:"can_zero"`
		} `json:"exports"`
	}
	out := runTool(t, l.dir, "nbdinfo", "--json", l.uri())
	if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo --json: %v\n%s", err, out)
	}
	if e := info.Exports[0]; e.Size != size || e.MinBlock < 512 || e.PrefBlock < e.MinBlock || e.MaxBlock < e.PrefBlock ||
		e.ReadOnly || !e.Flush || !e.FUA || !e.MultiConn || !e.Zero {
		t.Fatalf("nbdinfo sees %+v over iSCSI legs\n%s", e, out)
	}

	// nbdcopy writes random data with a zero run (which it may send as
	// WRITE_ZEROES) over four connections; qemu-img compares, notices a
	// one-bit difference, and writes through the volume itself.
	img1 := filepath.Join(scratch, "img1")
	data := randomFile(t, img1, 32<<20)
	clear(data[5<<20 : 7<<20])
	if err := os.WriteFile(img1, data, 0o600); err != nil {
		t.Fatal(err)
	}
	runTool(t, l.dir, "nbdcopy", "--connections=4", "--requests=16", img1, l.uri())
	runTool(t, l.dir, "qemu-img", "compare", "-f", "raw", "-F", "raw", img1, l.uri())
	data[12345] ^= 1
	if err := os.WriteFile(img1, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", img1, l.uri()).Run(); err == nil {
		t.Fatal("qemu-img compare missed a one-bit difference")
	}
	runTool(t, l.dir, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", img1, l.uri())

	// Several clients at once: fio verify (two jobs, two connections),
	// nbdcopy reading the volume back, nbdinfo; meanwhile mirrorctl
	// examine logs in to both arrays (with its own ISID): mirrord's
	// sessions must not notice (tgtd shows the same I_T nexuses).
	sessions := func() [2][]string {
		t.Helper()
		var s [2][]string
		for i, arr := range []*e2eArray{a, b} {
			ids, err := arr.td.Nexuses(1)
			if err != nil {
				t.Fatal(err)
			}
			s[i] = ids
		}
		return s
	}
	mirrordSessions := sessions()
	if len(mirrordSessions[0]) != 1 || len(mirrordSessions[1]) != 1 {
		t.Fatalf("mirrord should hold one session per array: %v", mirrordSessions)
	}
	fio := startTool(t, l.dir, "fio", "--name=v", "--ioengine=nbd", "--uri="+l.uri(), "--rw=randwrite", "--bsrange=4k-64k",
		"--iodepth=16", "--offset=40m", "--size=8m", "--numjobs=2", "--offset_increment=8m",
		"--verify=crc32c", "--verify_fatal=1", "--do_verify=1")
	back := filepath.Join(scratch, "back")
	readBack := startTool(t, l.dir, "nbdcopy", "--connections=4", l.uri(), back)
	var infos []*bgTool
	for range 3 {
		infos = append(infos, startTool(t, l.dir, "nbdinfo", l.uri()))
	}
	for range 2 {
		for _, leg := range l.legs {
			if ex := l.examine(leg, chap); ex.VolumeUUID != exA.VolumeUUID {
				t.Fatalf("examine during I/O: %+v", ex)
			}
		}
	}
	// So must the other commands that log in: iscsi info, and a create
	// on the legs in use (refused: they hold metadata).
	l.mustCtl(append(append([]string{"iscsi", "info"}, chap...), b.url)...)
	if out, err := l.ctlRun(append(append([]string{"create"}, chap...), a.url, b.url)...); err == nil || !strings.Contains(out, "metadata") {
		t.Fatalf("create on the legs of a running volume: %v\n%s", err, out)
	}
	for _, info := range infos {
		info.wait(t, "nbdinfo beside other clients", 30*time.Second)
	}
	readBack.wait(t, "nbdcopy reading the volume", 60*time.Second)
	runTool(t, l.dir, "cmp", "-n", fmt.Sprint(32<<20), img1, back)
	fio.wait(t, "fio verify", 60*time.Second)
	// Once idle, mirrord clears the bitmap lazily (BitClearDelay): watch
	// it happen on array A with examine, so the resyncs below can be held
	// to exactly the region written during the fault.
	deadline := time.Now().Add(20 * time.Second)
	for ex := l.examine(a.url, chap); ex.DirtyChunks != 0; ex = l.examine(a.url, chap) {
		if time.Now().After(deadline) {
			t.Fatalf("bitmap not cleared 20s after the writes stopped: %+v", ex)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if got := sessions(); fmt.Sprint(got) != fmt.Sprint(mirrordSessions) {
		t.Fatalf("mirrord's iSCSI sessions changed while mirrorctl examine ran: %v, were %v", got, mirrordSessions)
	}
	if st := l.status(); st.State != "clean" || strings.Contains(l.stderr.String(), "leg failed") {
		t.Fatalf("mirrorctl examine disturbed mirrord: %+v\n%s", st, l.stderr)
	}

	// Faults through the whole stack, each during a write load: the
	// volume degrades within the I/O timeout, fio sees no error, and when
	// the array is back the leg is re-added by itself and only the
	// written region is copied.
	for _, f := range []struct {
		name          string
		fault, repair func() error
		slot          int // the leg on the faulty array
	}{
		{"SIGKILL of array B", b.td.Kill, b.td.Restart, 1},
		{"SIGSTOP of array A", a.td.Pause, a.td.Resume, 0},
	} {
		load := l.writeLoad()
		time.Sleep(700 * time.Millisecond)
		if err := f.fault(); err != nil {
			t.Fatal(err)
		}
		st, took := l.waitState("degraded", ioTimeout+time.Second)
		if st.Legs[f.slot].State != "failed" || st.Legs[1-f.slot].State != "in_sync" {
			t.Fatalf("%s: %+v", f.name, st)
		}
		if !load.running() {
			t.Fatalf("the write load ended before the %s took effect: lengthen it\n%s", f.name, load.out.String())
		}
		load.wait(t, "fio write load across "+f.name, 60*time.Second)
		t0 := time.Now()
		if err := f.repair(); err != nil {
			t.Fatal(err)
		}
		st, _ = l.waitState("clean", 30*time.Second)
		if limit := int64(loadRegion) + exA.ChunkBytes; st.Legs[f.slot].State != "in_sync" || st.Resync.TotalBytes == 0 || st.Resync.TotalBytes > limit {
			t.Fatalf("after %s and repair: %+v (resync should copy only the %d bytes written, at most %d)", f.name, st, loadRegion, limit)
		}
		t.Logf("%s: degraded after %v; clean again %v after repair; resync copied %d of %d bytes",
			f.name, took.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond), st.Resync.TotalBytes, size)
	}
	if !strings.Contains(l.stderr.String(), "re-added") {
		t.Errorf("mirrord did not log the automatic re-add:\n%s", l.stderr)
	}

	out = l.mustCtl("verify", "--wait")
	if !strings.Contains(out, "0 mismatching chunks") {
		t.Fatalf("verify --wait: %s", out)
	}

	// The whole volume image, then SIGTERM: each array's LUN holds it at
	// offset 0.
	whole := filepath.Join(scratch, "whole")
	runTool(t, l.dir, "nbdcopy", l.uri(), whole)
	runTool(t, l.dir, "cmp", "-n", fmt.Sprint(32<<20), img1, whole)
	l.stop()
	if !strings.Contains(l.stderr.String(), "volume closed clean") {
		t.Errorf("mirrord did not report a clean close:\n%s", l.stderr)
	}
	for _, arr := range []*e2eArray{a, b} {
		runTool(t, l.dir, "cmp", "-n", fmt.Sprint(size), whole, arr.img)
	}
}

// An array that is dead (SIGKILL) or hung (SIGSTOP) when mirrord starts,
// and the operator starts on the other (--keep-leg 0: leg 0 alone is not
// provably the newest copy, so mirrord would otherwise wait for array B):
// mirrord says it is starting meanwhile, the volume assembles degraded
// and serves, and the leg joins by itself once the array answers, with
// only what was written meanwhile copied.
func TestISCSIVolumeArrayDownAtStart(t *testing.T) {
	for _, f := range []struct {
		name          string
		fault, repair func(*iscsitarget.Tgtd) error
	}{
		{"SIGKILL", (*iscsitarget.Tgtd).Kill, (*iscsitarget.Tgtd).Restart},
		{"SIGSTOP", (*iscsitarget.Tgtd).Pause, (*iscsitarget.Tgtd).Resume},
	} {
		t.Run(f.name, func(t *testing.T) {
			il := newISCSILab(t)
			if err := f.fault(il.b.td); err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			il.startMirrord("--keep-leg", "0")
			assembled := time.Since(t0)
			if f.name == "SIGSTOP" && !strings.Contains(il.startupReply, "mirrord is starting") {
				t.Errorf("status while mirrord waited for the hung array answered %q, want that it is starting", il.startupReply)
			}
			st := il.status()
			if st.State != "degraded" || st.Legs[0].State != "in_sync" || st.Legs[1].State != "failed" || st.Legs[1].Path != il.b.url {
				t.Fatalf("assembled with array B down: %+v", st)
			}
			img := filepath.Join(il.scratch, "img")
			randomFile(t, img, 4<<20)
			runTool(t, il.dir, "nbdcopy", img, il.uri())
			if err := f.repair(il.b.td); err != nil {
				t.Fatal(err)
			}
			st, took := il.waitState("clean", 20*time.Second)
			if limit := 4<<20 + il.ex[0].ChunkBytes; st.Legs[1].State != "in_sync" || st.Resync.TotalBytes == 0 || st.Resync.TotalBytes > limit {
				t.Fatalf("after array B came back: %+v (resync should copy only the 4 MiB written, at most %d)", st, limit)
			}
			t.Logf("serving degraded %v after start; array B added and resynced %v after it came back; %d bytes copied",
				assembled.Round(time.Millisecond), took.Round(time.Millisecond), st.Resync.TotalBytes)
			whole := filepath.Join(il.scratch, "whole")
			runTool(t, il.dir, "nbdcopy", il.uri(), whole)
			runTool(t, il.dir, "cmp", "-n", fmt.Sprint(4<<20), img, whole)
			il.stop()
			for _, arr := range []*e2eArray{il.a, il.b} {
				runTool(t, il.dir, "cmp", "-n", fmt.Sprint(st.SizeBytes), whole, arr.img)
			}
		})
	}
}
