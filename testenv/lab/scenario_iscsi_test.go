package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/mirror"
)

// The product's shape: two iSCSI arrays (one tgtd each) on the iSCSI
// network, mirrord on server n1 mirroring them into /dev/nbd0 with ext4 on
// it. Array B crashes (tgtd SIGKILL), later array A hangs (SIGSTOP): each
// time the leg fails within the leg timeout and the file system keeps
// taking writes on the other array alone; when the array comes back the
// leg is re-added automatically and only the chunks written meanwhile are
// copied. Then the files are intact and verify finds the legs identical.
// Last, the other server, n2, over its own iSCSI NIC, finds the
// same volume on both arrays and mounts it.
func TestISCSIVolumeSurvivesArrayOutages(t *testing.T) {
	l := sharedLab(t)
	n1, n2 := l.Nodes()[0], l.Nodes()[1]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const arraySize = 64 << 20
	arrA, err := l.StartArraysOn(ctx, ArrayPortal, arraySize, "ha")
	if err != nil {
		if strings.Contains(err.Error(), "not installed") {
			t.Skipf("SKIPPING iSCSI volume scenario: %v", err)
		}
		t.Fatal(err)
	}
	defer arrA.Stop()
	arrB, err := l.StartArraysOn(ctx, ArrayPortalPort(3261), arraySize, "hb")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { arrB.Stop() }()
	legA, legB := arrA.URL("ha"), arrB.URL("hb")
	if _, ok, why := HamirrorIfAvailable(ctx, n1, legA, legB); !ok {
		t.Skipf("SKIPPING iSCSI volume scenario: %s", why)
	}
	const ctl = "mirrorctl --control unix:/run/c.sock "
	defer func() {
		for _, n := range []*Node{n1, n2} {
			if t.Failed() {
				res, _ := n.Run(context.Background(), ctl+"status; tail -30 /run/mirrord.log; dmesg | tail -15")
				t.Logf("status, mirrord log and dmesg on %s:\n%s", n.Name, res.Output())
			}
			n.Run(context.Background(), "umount /mnt/is 2>/dev/null; "+MirrordStop)
		}
	}()
	start := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(start).Seconds(), what) }

	run(t, n1, fmt.Sprintf("mirrorctl create --chunk 64K %s %s", legA, legB))
	run(t, n1, "rm -f /run/mirrord.log; "+MirrordStartFlags("--control unix:/run/c.sock", legA, legB))
	step("volume over two iSCSI arrays attached as /dev/nbd0 on n1")
	run(t, n1, FillScript("/dev/nbd0", "is"))
	// noinit_itable: no background zeroing of inode tables, so that only
	// the test's own writes dirty chunks.
	run(t, n1, "mount -t ext4 -o noinit_itable /dev/nbd0 /mnt/is")
	st := volumeStatus(t, n1, ctl)
	if st.State != "clean" || st.Legs[0].Path != legA || st.Legs[1].Path != legB {
		t.Fatalf("after mkfs and files: state %s, legs %+v; want clean on %s and %s", st.State, st.Legs, legA, legB)
	}
	size := st.SizeBytes
	step("ext4 made, files written, volume clean")

	// Array B crashes: its connections are reset, new ones refused.
	outage(t, n1, ctl, [2]string{legA, legB}, size, 1, "crash", arrB.Kill, func() error { return arrB.Restart(ctx) }, step)
	// Array A hangs: nothing answers; only the leg timeout notices.
	outage(t, n1, ctl, [2]string{legA, legB}, size, 0, "hang", func() {
		if err := arrA.Pause(); err != nil {
			t.Fatal(err)
		}
	}, arrA.Resume, step)

	run(t, n1, "echo 3 >/proc/sys/vm/drop_caches; cd /mnt/is && sha256sum -c /run/sums-is")
	if out := run(t, n1, ctl+"verify --wait"); !strings.Contains(out, " 0 mismatching chunks") {
		t.Errorf("verify after the resync:\n%s", out)
	}
	step("files intact, verify finds both legs identical")
	run(t, n1, "umount /mnt/is && "+MirrordStop)
	// Both arrays' data areas, as tgtd wrote them to their files on the host.
	if err := sameRange(arrA.Backing("ha"), arrB.Backing("hb"), fmt.Sprint(size)); err != nil {
		t.Error(err)
	}
	step("mirrord stopped; arrays' data areas equal on the host")

	// The other server sees the same volume over its own iSCSI NIC.
	for slot, leg := range []string{legA, legB} {
		var info mirror.LegInfo
		out := run(t, n2, "mirrorctl examine --json "+leg)
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			t.Fatalf("mirrorctl examine --json %s on n2: %v\n%s", leg, err, out)
		}
		if info.VolumeUUID != st.VolumeUUID || info.Slot != slot || !info.Clean || info.LegStates != [2]string{"in_sync", "in_sync"} {
			t.Errorf("n2 examines %s: volume %s slot %d clean %v states %v; want volume %s slot %d, clean, both in sync",
				leg, info.VolumeUUID, info.Slot, info.Clean, info.LegStates, st.VolumeUUID, slot)
		}
	}
	sums := run(t, n1, "cat /run/sums-is")
	if err := n2.Put(ctx, "/run/sums-is", []byte(sums), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, n2, "rm -f /run/mirrord.log; "+MirrordStartFlags("--read-only --control unix:/run/c.sock", legA, legB))
	run(t, n2, VerifyScript("/dev/nbd0", "is"))
	run(t, n2, MirrordStop)
	step("n2 examined both legs and mounted the volume read-only: files intact")
}

// outage takes the array of leg slot away (down), checks that the leg
// fails within the leg timeout while the file system on n1 keeps taking
// writes, brings the array back (up) and checks that mirrord re-adds the
// leg by itself and copies only the chunks written meanwhile.
func outage(t *testing.T, n *Node, ctl string, legs [2]string, size int64, slot int, what string, down func(), up func() error, step func(string)) {
	t.Helper()
	// mirrord clears the bits of chunks idle for BitClearDelay (5 s) after
	// flushing both legs: wait until both legs' bitmaps are clean on disk,
	// so that they hold only what the outage dirties (mkfs and the files
	// before it touched every chunk).
	run(t, n, "sync")
	waitBitmapsClean(t, n, legs)
	reAdds := strings.Count(run(t, n, "cat /run/mirrord.log"), fmt.Sprintf(`re-added" slot=%d`, slot))

	down()
	since := time.Now()
	run(t, n, writeFile(what+"-during", 4))
	wrote := time.Since(since)
	st := waitVolume(t, n, ctl, 60*time.Second, fmt.Sprintf("degraded with leg %d failed", slot), func(s mirror.Status) bool {
		return s.State == "degraded" && s.Legs[slot].State == "failed" && s.Legs[1-slot].State == "in_sync"
	})
	failedIn := time.Since(since)
	step(fmt.Sprintf("array of leg %d %s: write+sync took %v, leg %d failed within %v (%s)", slot, what,
		wrote.Round(time.Millisecond), slot, failedIn.Round(time.Millisecond), st.Legs[slot].Error))
	// The leg timeout (mirrord's --io-timeout and the initiator's, 5 s)
	// bounds this, not the 120 s of a default kernel initiator; the agent
	// round trips of a loaded TCG guest add seconds.
	if limit := ioTimeout + 10*time.Second; failedIn > limit {
		t.Errorf("leg %d failed %v after its array went away (%s); want within %v", slot, failedIn, what, limit)
	}
	if st.Legs[slot].Error == "" {
		t.Errorf("failed leg %d carries no reason: %+v", slot, st.Legs[slot])
	}
	run(t, n, writeFile(what+"-degraded", 4))
	step("writes go on while degraded")

	if err := up(); err != nil {
		t.Fatal(err)
	}
	since = time.Now()
	st = waitVolume(t, n, ctl, 90*time.Second, fmt.Sprintf("clean (leg %d re-added and resynced)", slot), func(s mirror.Status) bool {
		return s.State == "clean"
	})
	step(fmt.Sprintf("array back: leg %d re-added and resynced %d of %d bytes in %v", slot, st.Resync.TotalBytes, size,
		time.Since(since).Round(time.Millisecond)))
	if got := strings.Count(run(t, n, "cat /run/mirrord.log"), fmt.Sprintf(`re-added" slot=%d`, slot)); got != reAdds+1 {
		t.Errorf("leg %d came back without mirrord's automatic re-add (%d 'leg answered again' lines, want %d)", slot, got, reAdds+1)
	}
	if st.Resync.TotalBytes <= 0 || st.Resync.TotalBytes > size/8 {
		t.Errorf("resync after the array's return copied %d bytes of a %d byte volume; want only the chunks written while it was away",
			st.Resync.TotalBytes, size)
	}
	// Chunks written during the resync are copied again: done may pass total.
	if st.Resync.DoneBytes < st.Resync.TotalBytes {
		t.Errorf("resync done %d of %d bytes, yet the volume is clean", st.Resync.DoneBytes, st.Resync.TotalBytes)
	}
}

// waitBitmapsClean polls `mirrorctl examine --json` of both legs (beside
// the running mirrord) until neither bitmap has a dirty chunk.
func waitBitmapsClean(t *testing.T, n *Node, legs [2]string) {
	t.Helper()
	end := time.Now().Add(30 * time.Second)
	for {
		out := run(t, n, "mirrorctl examine --json "+legs[0]+" && mirrorctl examine --json "+legs[1])
		dec := json.NewDecoder(strings.NewReader(out))
		var dirty [2]int64
		for i := range dirty {
			var info mirror.LegInfo
			if err := dec.Decode(&info); err != nil {
				t.Fatalf("mirrorctl examine --json of both legs: %v\n%s", err, out)
			}
			dirty[i] = info.BitmapDirtyChunks
		}
		if dirty == [2]int64{} {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("bitmaps still hold %v dirty chunks 30 s after the last write", dirty)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// ioTimeout is mirrord's default --io-timeout (and the initiator's).
const ioTimeout = 5 * time.Second

// writeFile writes count 64 KiB blocks of random data to /mnt/is/name,
// syncs, and records its checksum in /run/sums-is.
func writeFile(name string, count int) string {
	return fmt.Sprintf(`set -e
dd if=/dev/urandom of=/mnt/is/%[1]s bs=64k count=%[2]d 2>/dev/null
sync
cd /mnt/is && sha256sum %[1]s >>/run/sums-is`, name, count)
}

// volumeStatus is `mirrorctl status --json` on n (ctl names its socket).
func volumeStatus(t *testing.T, n *Node, ctl string) mirror.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := n.Run(ctx, ctl+"status --json")
	if err != nil {
		t.Fatal(err)
	}
	var st mirror.Status
	if err := json.Unmarshal([]byte(res.Stdout), &st); err != nil || (res.Exit != 0 && res.Exit != 2) {
		t.Fatalf("%sstatus --json on %s: exit %d, %v\n%s", ctl, n.Name, res.Exit, err, res.Output())
	}
	return st
}

// waitVolume polls the volume's status until ok holds, failing the test
// after within.
func waitVolume(t *testing.T, n *Node, ctl string, within time.Duration, what string, ok func(mirror.Status) bool) mirror.Status {
	t.Helper()
	end := time.Now().Add(within)
	for {
		st := volumeStatus(t, n, ctl)
		if ok(st) {
			return st
		}
		if time.Now().After(end) {
			t.Fatalf("volume not %s within %v: state %s, legs %+v, resync %+v", what, within, st.State, st.Legs, st.Resync)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// An operator runs `mirrorctl examine` on an iSCSI leg on the node where
// mirrord serves the volume: the running volume must not notice (its
// session to the array stays, no leg fails).
func TestISCSIExamineBesideRunningMirrord(t *testing.T) {
	n, ctx, legA, legB := iscsiVolume(t, "examine", "xa", "xb")
	const ctl = "mirrorctl --control unix:/run/c.sock "
	// Examine both legs while the volume takes writes.
	res, err := n.Run(ctx, fmt.Sprintf(`(for i in $(seq 0 31); do dd if=/dev/urandom of=/dev/nbd0 bs=64k count=4 seek=$((i*4)) oflag=direct 2>/dev/null || exit 1; done) &
load=$!
mirrorctl examine %s >/dev/null && mirrorctl examine %s >/dev/null; rc=$?
wait $load || { echo "writes to /dev/nbd0 failed"; exit 1; }
exit $rc`, legA, legB))
	if err != nil {
		t.Fatal(err)
	}
	if res.Exit != 0 {
		t.Errorf("mirrorctl examine of the legs beside mirrord: %v", res.Err())
	}
	if st := volumeStatus(t, n, ctl); st.State != "clean" {
		t.Errorf("after mirrorctl examine of both legs beside mirrord: state %s, legs %+v", st.State, st.Legs)
	}
	if log := run(t, n, "cat /run/mirrord.log"); strings.Contains(log, "level=WARN") {
		t.Errorf("mirrord noticed mirrorctl examine:\n%s", log)
	}
}

// The operator's path over iSCSI legs: `mirrorctl leg fail 1` takes the
// leg out, writes go on, `mirrorctl leg add 1` (mirrord reopens the same
// iscsi:// leg) brings it back under a write load, only the chunks
// written meanwhile are copied, and verify finds both legs identical.
func TestISCSILegFailAndAddByOperator(t *testing.T) {
	n, ctx, _, _ := iscsiVolume(t, "operator", "oa", "ob")
	const ctl = "mirrorctl --control unix:/run/c.sock "
	run(t, n, "dd if=/dev/urandom of=/dev/nbd0 bs=64k count=16 oflag=direct 2>/dev/null")
	run(t, n, ctl+"leg fail 1")
	run(t, n, "dd if=/dev/urandom of=/dev/nbd0 bs=64k count=4 seek=64 oflag=direct 2>/dev/null")
	if st := volumeStatus(t, n, ctl); st.State != "degraded" || st.Legs[1].State != "failed" {
		t.Fatalf("after mirrorctl leg fail 1 and a write: state %s, legs %+v", st.State, st.Legs)
	}
	res, err := n.Run(ctx, `(for i in $(seq 0 15); do dd if=/dev/urandom of=/dev/nbd0 bs=64k count=1 seek=$((128+i)) oflag=direct 2>/dev/null || exit 1; done) &
load=$!
`+ctl+`leg add 1 >/dev/null; rc=$?
wait $load || { echo "writes to /dev/nbd0 failed during leg add"; exit 1; }
exit $rc`)
	if err != nil {
		t.Fatal(err)
	}
	if res.Exit != 0 {
		t.Fatalf("mirrorctl leg add 1 under a write load: %v", res.Err())
	}
	st := waitVolume(t, n, ctl, 60*time.Second, "clean after mirrorctl leg add 1", func(s mirror.Status) bool { return s.State == "clean" })
	t.Logf("mirrorctl leg add 1 resynced %d of %d bytes", st.Resync.TotalBytes, st.SizeBytes)
	if st.Resync.TotalBytes <= 0 || st.Resync.TotalBytes > st.SizeBytes/4 {
		t.Errorf("leg add 1 resynced %d bytes of a %d byte volume; want only the chunks written while it was out", st.Resync.TotalBytes, st.SizeBytes)
	}
	if out := run(t, n, ctl+"verify --wait"); !strings.Contains(out, " 0 mismatching chunks") {
		t.Errorf("verify after leg add:\n%s", out)
	}
	log := run(t, n, "cat /run/mirrord.log")
	if _, after, _ := strings.Cut(log, "leg re-added"); strings.Contains(after, "level=WARN") {
		t.Errorf("mirrord warned after the leg was re-added:\n%s", log)
	}
}

// iscsiVolume starts arrays a and b on the lab's iSCSI network and, on the
// first node, a mirrored volume over them on /dev/nbd0 (control socket
// /run/c.sock, log /run/mirrord.log). Cleanup stops mirrord, then the
// arrays, and shows status and log when the test failed.
func iscsiVolume(t *testing.T, what, a, b string) (n *Node, ctx context.Context, legA, legB string) {
	t.Helper()
	l := sharedLab(t)
	n = l.Nodes()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	arrays, err := l.StartArrays(ctx, 16<<20, a, b)
	if err != nil {
		if strings.Contains(err.Error(), "not installed") {
			t.Skipf("SKIPPING iSCSI %s scenario: %v", what, err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { arrays.Stop() })
	legA, legB = arrays.URL(a), arrays.URL(b)
	if _, ok, why := HamirrorIfAvailable(ctx, n, legA, legB); !ok {
		t.Skipf("SKIPPING iSCSI %s scenario: %s", what, why)
	}
	t.Cleanup(func() {
		if t.Failed() {
			res, _ := n.Run(context.Background(), "mirrorctl --control unix:/run/c.sock status; tail -20 /run/mirrord.log")
			t.Logf("status and mirrord log on %s:\n%s", n.Name, res.Output())
		}
		n.Run(context.Background(), MirrordStop)
	})
	run(t, n, fmt.Sprintf("mirrorctl create --chunk 64K %s %s", legA, legB))
	run(t, n, "rm -f /run/mirrord.log; "+MirrordStartFlags("--control unix:/run/c.sock", legA, legB))
	return n, ctx, legA, legB
}
