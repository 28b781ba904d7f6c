package iscsitarget

import (
	"context"
	"testing"
	"time"

	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/mirror"
)

// iscsi.Disk is a mirror.Leg as it is: no adapter needed.
var _ mirror.Leg = (*iscsi.Disk)(nil)

// A mirror over two tgtd LUNs: SIGKILL of one array degrades the volume
// while writes continue; restarting it re-adds the leg automatically and
// resyncs only the chunks written meanwhile.
func TestMirrorOverTwoTgtdLegs(t *testing.T) {
	const size = 64 << 20
	tdA, imgA := newTgtd(t, size, "")
	tdB, imgB := newTgtd(t, size, "")
	cfg := iscsi.Config{Timeout: time.Second, ReconnectInterval: 100 * time.Millisecond}
	a := openDisk(t, legURL(tdA), cfg)
	b := openDisk(t, legURL(tdB), cfg)
	if a.Info().Serial == b.Info().Serial && a.Info().DeviceIDs[0] == b.Info().DeviceIDs[0] && tdA.Portal == tdB.Portal {
		t.Fatal("the two legs are the same LUN")
	}
	legs := [2]mirror.Leg{a, b}
	if _, err := mirror.Create(legs, mirror.CreateOptions{ChunkSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	opts := mirror.DefaultOptions()
	opts.IOTimeout = 3 * time.Second
	opts.AutoReAdd = true
	opts.ReAddInterval = 200 * time.Millisecond
	opts.BitClearDelay = 100 * time.Millisecond
	v, err := mirror.Assemble(legs, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := v.WaitInSync(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		if err := v.WriteAt(pattern(uint64(i), 64<<10), int64(i)<<20, false); err != nil {
			t.Fatalf("write before the fault: %v", err)
		}
	}

	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	// Let the engine clear the bits of the chunks written so far, so the
	// resync below is of the chunks written while degraded only.
	time.Sleep(time.Second)

	if err := tdB.Kill(); err != nil {
		t.Fatal(err)
	}
	// Writes continue; the first one after the kill fails leg B over.
	changed := []int64{2 << 20, 9 << 20, 30 << 20}
	for i, off := range changed {
		start := time.Now()
		if err := v.WriteAt(pattern(uint64(100+i), 128<<10), off, true); err != nil {
			t.Fatalf("write with leg B dead: %v", err)
		}
		if el := time.Since(start); el > opts.IOTimeout+time.Second {
			t.Fatalf("write with leg B dead took %v", el)
		}
	}
	if err := v.Flush(); err != nil {
		t.Fatalf("flush with leg B dead: %v", err)
	}
	st := v.Status()
	if st.State != "degraded" || st.Legs[1].State != "failed" {
		t.Fatalf("status after SIGKILL of array B: %+v", st)
	}
	t.Logf("leg B failed: %s", st.Legs[1].Error)

	if err := tdB.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for v.Status().Legs[1].State == "failed" {
		if time.Now().After(deadline) {
			t.Fatalf("leg B not re-added within 30s: %+v", v.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := v.WaitInSync(ctx); err != nil {
		t.Fatalf("resync after re-add: %v", err)
	}
	for st = v.Status(); st.State != "clean"; st = v.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("status after resync: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if total := st.Resync.TotalBytes; total == 0 || total > int64(len(changed))<<20 {
		t.Fatalf("resync copied %d bytes; want only the %d changed chunks (%d bytes)", total, len(changed), len(changed)<<20)
	}
	t.Logf("resync copied %d bytes", st.Resync.TotalBytes)
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	// Both arrays now hold the same data.
	for _, off := range append(changed, 0, 5<<20) {
		mustEqual(t, "leg B after resync", fileAt(t, imgB, off, 128<<10), fileAt(t, imgA, off, 128<<10))
	}
	for i, off := range changed {
		got := make([]byte, 128<<10)
		if err := v.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "volume", got, pattern(uint64(100+i), 128<<10))
	}
}

// An array requiring CHAP that is down when the volume is assembled: the
// leg is passed as nil with its spec, and AutoReAdd must open it later
// with the volume's LegOptions (the CHAP secret), not bare defaults.
func TestMirrorAutoReAddOpensCHAPArrayDownAtStart(t *testing.T) {
	const size = 16 << 20
	tdA, _ := newTgtd(t, size, "")
	tdB, imgB := newTgtd(t, size, "")
	for _, td := range []*Tgtd{tdA, tdB} {
		if err := td.AddAccount(1, "node", "chap-secret-of-node", false); err != nil {
			t.Fatal(err)
		}
	}
	cfg := iscsi.Config{User: "node", Secret: "chap-secret-of-node", Timeout: time.Second, ReconnectInterval: 100 * time.Millisecond}
	specs := [2]string{legURL(tdA), legURL(tdB)}
	a := openDisk(t, specs[0], cfg)
	b := openDisk(t, specs[1], cfg)
	if _, err := mirror.Create([2]mirror.Leg{a, b}, mirror.CreateOptions{ChunkSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := tdB.Kill(); err != nil {
		t.Fatal(err)
	}
	opts := mirror.DefaultOptions()
	opts.IOTimeout = 2 * time.Second
	opts.AutoReAdd = true
	opts.ReAddInterval = 100 * time.Millisecond
	opts.Specs = specs
	opts.LegOptions = mirror.LegOptions{ISCSI: cfg}
	opts.KeepLeg = 0 // leg 0 alone is not provably newest: the operator starts on it
	v, err := mirror.Assemble([2]mirror.Leg{a, nil}, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if st := v.Status(); st.State != "degraded" || st.Legs[1].Path != specs[1] {
		t.Fatalf("assembled with array B down: %+v", st)
	}
	w := pattern(7, 64<<10)
	if err := v.WriteAt(w, 3<<20, true); err != nil {
		t.Fatal(err)
	}
	if err := tdB.Restart(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := v.WaitInSync(ctx); err != nil || v.Status().Legs[1].State != "in_sync" {
		t.Fatalf("array B (CHAP) not re-added after it came back: %v %+v", err, v.Status())
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "array B after resync", fileAt(t, imgB, 3<<20, len(w)), w)
}
