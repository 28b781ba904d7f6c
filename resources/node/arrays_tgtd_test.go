package node

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/mirror"
	"github.com/hamirror/hamirror/resources/fence"
	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

// An array that did not answer during a takeover was not fenced there,
// so its leg stays out of the volume; once it answers again, its leg
// joins after BeforeReAdd fenced it (the dead peer's key preempted
// there), through AutoReAdd or the operator's `leg add` alike. Real
// tgtd arrays, the node's own sessions, fence agent and volume wiring.
func TestArrayUnreachableAtTakeoverIsFencedThenReAdded(t *testing.T) {
	if err := iscsitarget.TgtdAvailable(); err != nil {
		t.Skipf("SKIPPED LOUDLY: needs tgtd: %v", err)
	}
	dir := t.TempDir()
	arrA := iscsitarget.StartArray(t, dir, "rn-a", 16<<20)
	arrB := iscsitarget.StartArray(t, dir, "rn-b", 16<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.Default()
	}
	cfg := &Config{
		Heartbeat: heartbeat.Config{Self: "a", Cluster: "rn", StateDir: filepath.Join(dir, "state")},
		ISCSI:     ISCSIConfig{InitiatorName: "iqn.2026-01.org.hamirror.test:rn-a", Timeout: time.Second},
		Volume: &VolumeConfig{Legs: [2]string{arrA.URL, arrB.URL}, Listen: []string{"unix:" + filepath.Join(dir, "nbd.sock")},
			IOTimeout: 2 * time.Second},
	}
	keys := map[heartbeat.NodeID]uint64{"a": fence.DeriveKey("rn", "a"), "b": fence.DeriveKey("rn", "b")}

	// Peer b joined both arrays with its own sessions.
	var peer [2]*iscsi.Disk
	for i, url := range cfg.Volume.Legs {
		d, err := iscsi.OpenLeg(ctx, url, iscsi.Config{InitiatorName: "iqn.2026-01.org.hamirror.test:rn-b", Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if err := d.RegisterAndIgnore(keys["b"]); err != nil {
			t.Fatal(err)
		}
		peer[i] = d
	}

	as, err := openArrays(cfg, keys, log)
	if err != nil {
		t.Fatal(err)
	}
	defer as.close()
	for _, a := range as.list {
		if err := a.vol.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	as.register(ctx)
	legs := [2]mirror.Leg{sharedLeg{as.list[0].vol}, sharedLeg{as.list[1].vol}}
	if _, err := mirror.Create(legs, mirror.CreateOptions{ChunkSize: 64 << 10, NodeID: "b"}); err != nil {
		t.Fatal(err)
	}
	// b ran the volume and lost leg 1 (recorded on leg 0), then died.
	mo := mirror.DefaultOptions()
	mo.NodeID = "b"
	vb, err := mirror.Assemble(legs, mo)
	if err != nil {
		t.Fatal(err)
	}
	if err := vb.FailLeg(1); err != nil {
		t.Fatal(err)
	}
	if err := vb.Close(); err != nil {
		t.Fatal(err)
	}

	// a takes over while array B does not answer: A fenced, B passed.
	if err := arrB.Pause(); err != nil {
		t.Fatal(err)
	}
	paused := true
	defer func() {
		if paused {
			arrB.Resume()
		}
	}()
	if err := as.takeover(ctx, []uint64{keys["b"]}); err != nil {
		t.Fatal(err)
	}
	n := &Node{cfg: cfg, self: "a", log: log, arrays: as, inbox: make(chan func(time.Time), 256)}
	if err := n.openVolumeState(cfg.Heartbeat.StateDir); err != nil {
		t.Fatal(err)
	}
	n.vol = n.newVolume("volume")
	if err := n.vol.agent.Start(ctx); err != nil {
		t.Fatalf("takeover on leg 0 alone: %v", err)
	}
	defer n.vol.agent.Stop(context.Background())
	if st := n.vol.agent.Mirror().Status(); st.Legs[1].State != "failed" {
		t.Fatalf("leg 1 of the unfenced array joined at the takeover: %+v", st.Legs)
	}

	// B answers again: b's key is still registered there.
	if err := arrB.Resume(); err != nil {
		t.Fatal(err)
	}
	paused = false
	for !as.list[1].vol.Connected() || !peer[1].Connected() {
		if ctx.Err() != nil {
			t.Fatal("array B's sessions do not reconnect")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, keysB, err := peer[1].ReadKeys(); err != nil || !slices.Contains(keysB, keys["b"]) {
		t.Fatalf("before the re-add, B holds keys %x (%v): want b's still there", keysB, err)
	}
	if err := n.vol.agent.Mirror().AddLeg(1, nil); err != nil {
		t.Fatalf("leg add 1 once array B answers: %v", err)
	}
	_, keysB, err := peer[1].ReadKeys()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(keysB, keys["b"]) || !slices.Contains(keysB, keys["a"]) {
		t.Fatalf("after the re-add B holds keys %x: want a's and not b's (fenced before the re-add)", keysB)
	}
}
