package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/mirror"
	"github.com/hamirror/hamirror/resources"
	"github.com/hamirror/hamirror/resources/fence"
	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

// openTestArrays opens node self's sessions to the legs (in the
// background, as New does) and its fence agent, with its own initiator
// name so that two nodes of one test process keep their sessions apart.
func openTestArrays(t *testing.T, self heartbeat.NodeID, legs [2]string, keys map[heartbeat.NodeID]uint64) *arrays {
	t.Helper()
	c := &Config{Volume: &VolumeConfig{Legs: legs, IOTimeout: 2 * time.Second}}
	c.Heartbeat.Self = self
	c.ISCSI.InitiatorName = "iqn.2026-01.org.hamirror.test:" + string(self)
	as, err := openArrays(c, keys, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(as.close)
	return as
}

// An array that was down during the takeover's fence (its leg left out
// of the assembly) comes back: the engine opens its leg by spec to re-add
// it. The node fences that array first and then lends the session; it
// refused it for good before (the leg never rejoined: case 6 of the
// failover proof). The old owner's writes there are refused afterwards.
func TestArraysLegMissingAtTakeoverJoinsOnceFenced(t *testing.T) {
	dir := t.TempDir()
	a := iscsitarget.StartArray(t, dir, "array-a", 64<<20)
	b := iscsitarget.StartArray(t, dir, "array-b", 64<<20)
	legs := [2]string{a.URL, b.URL}
	keys := map[heartbeat.NodeID]uint64{"n1": fence.DeriveKey("arrays-test", "n1"), "n2": fence.DeriveKey("arrays-test", "n2")}
	n1 := openTestArrays(t, "n1", legs, keys)
	n2 := openTestArrays(t, "n2", legs, keys)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, as := range []*arrays{n1, n2} {
		for _, arr := range as.list {
			if err := arr.vol.WaitReady(ctx); err != nil {
				t.Fatal(err)
			}
		}
		as.register(ctx)
	}
	if err := n1.acquire(ctx); err != nil { // n1 runs the group
		t.Fatal(err)
	}

	// n1 dies with array b down; n2 takes over on array a alone.
	if err := b.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := n2.takeover(ctx, []uint64{keys["n1"]}); err != nil {
		t.Fatal(err)
	}
	if _, err := n2.openLeg(a.URL); err != nil {
		t.Fatalf("leg on the fenced array a: %v", err)
	}
	if _, err := n2.openLeg(b.URL); err == nil {
		t.Fatal("the leg on the dead array b was lent, unfenced")
	}

	// Array b returns (with no reservation state: tgtd keeps it in memory).
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	for _, as := range []*arrays{n1, n2} {
		for d := as.list[1].vol; !d.Connected(); time.Sleep(20 * time.Millisecond) {
			if ctx.Err() != nil {
				t.Fatal("the sessions to array b did not reconnect")
			}
		}
	}
	// n1's session to b restores nothing (the generation went back); it
	// registers again, as a frozen old owner that re-registers would.
	if _, err := n1.fence.Register(ctx); err != nil {
		t.Logf("n1 register: %v", err)
	}
	leg, err := n2.openLeg(b.URL)
	if err != nil {
		t.Fatalf("array b answers again, but its leg is refused: %v", err)
	}
	if err := n2.beforeReAdd(1, leg); err != nil {
		t.Fatalf("BeforeReAdd of array b's leg: %v", err)
	}
	buf := make([]byte, 4096)
	if err := leg.WriteAt(buf, 0, true); err != nil {
		t.Fatalf("n2 writes on array b after fencing it: %v", err)
	}
	err = n1.list[1].vol.WriteAt(buf, 0, true)
	if err == nil || !strings.Contains(err.Error(), "RESERVATION CONFLICT") {
		t.Fatalf("n1 (fenced) writes on array b after it returned: %v, want RESERVATION CONFLICT", err)
	}
}

// An array that did not answer during a takeover was not fenced there,
// so its leg stays out of the volume; once it answers again, its leg
// joins after BeforeReAdd fenced it (the dead peer's key preempted
// there), through AutoReAdd or the operator's `leg add` alike. Real
// tgtd arrays, the node's own sessions, fence agent and volume wiring.
func TestArrayUnreachableAtTakeoverIsFencedThenReAdded(t *testing.T) {
	if err := iscsitarget.TgtdAvailable(); err != nil {
		t.Fatalf("needs tgtd: %v", err)
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

// volumeLab is two tgtd arrays holding a volume whose leg 1 is recorded
// failed on leg 0 (peer b ran it and lost leg 1), with b's key
// registered on both (b then died), and node a's cluster file over them.
type volumeLab struct {
	arrA, arrB *iscsitarget.Array
	keys       map[heartbeat.NodeID]uint64
	pair       *testPair
	path       string // a's cluster file
}

func newVolumeLab(t *testing.T, ctx context.Context) *volumeLab {
	t.Helper()
	if err := iscsitarget.TgtdAvailable(); err != nil {
		t.Fatalf("needs tgtd: %v", err)
	}
	dir := t.TempDir()
	l := &volumeLab{arrA: iscsitarget.StartArray(t, dir, "vl-a", 16<<20), arrB: iscsitarget.StartArray(t, dir, "vl-b", 16<<20),
		keys: map[heartbeat.NodeID]uint64{"a": fence.DeriveKey("opstest", "a"), "b": fence.DeriveKey("opstest", "b")}}
	var legs [2]mirror.Leg
	for i, url := range []string{l.arrA.URL, l.arrB.URL} {
		d, err := iscsi.OpenLeg(ctx, url, iscsi.Config{InitiatorName: "iqn.2026-01.org.hamirror.test:vl-b", Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		if err := d.RegisterAndIgnore(l.keys["b"]); err != nil {
			t.Fatal(err)
		}
		legs[i] = d
	}
	if _, err := mirror.Create(legs, mirror.CreateOptions{ChunkSize: 64 << 10, NodeID: "b"}); err != nil {
		t.Fatal(err)
	}
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
	l.pair = newTestPair(t)
	s := defaultSettings()
	s.extra = fmt.Sprintf(`iscsi: {initiator_name: "iqn.2026-01.org.hamirror.test:vl-a", timeout: 1s}
volume:
  legs: [%s, %s]
  listen: [unix:%s/a-nbd.sock]
  link: %s/a-volume
  io_timeout: 2s
  mmp_interval: 200ms
`, l.arrA.URL, l.arrB.URL, l.pair.dir, l.pair.dir)
	l.path = l.pair.write(t, "a", s)
	return l
}

// keysOnB are the keys registered on array B, read through a session
// of a third initiator.
func (l *volumeLab) keysOnB(t *testing.T, ctx context.Context) []uint64 {
	t.Helper()
	d, err := iscsi.OpenLeg(ctx, l.arrB.URL, iscsi.Config{InitiatorName: "iqn.2026-01.org.hamirror.test:vl-reader", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, keys, err := d.ReadKeys()
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// waitStatus polls a's status until ok.
func waitStatus(t *testing.T, n *runningNode, what string, timeout time.Duration, ok func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := n.Status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; group %s (%s), volume %+v", what, timeout, st.Group.State, st.Group.Waiting, st.Volume)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Node a takes over from dead b while array B does not answer: A is
// fenced, the volume runs on leg 0. The fence resource is then restarted
// (its monitor failed, or `mirrorctl resource restart fence`) while B is
// still away. When B answers, b's key is still registered there: B's leg
// must not join before b is preempted on B (an old owner that wakes would
// write beside the new one, on a leg counted in sync).
func TestRestartOfTheFenceKeepsTheTakeoverFencing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := newVolumeLab(t, ctx)
	if err := l.arrB.Pause(); err != nil {
		t.Fatal(err)
	}
	paused := true
	defer func() {
		if paused {
			l.arrB.Resume()
		}
	}()
	a := l.pair.start(t, "a", l.path)
	running := func(st Status) bool {
		return st.Group.State == resources.GroupRunning && st.Volume != nil
	}
	st := waitStatus(t, a, "a takes over on leg 0", time.Minute, running)
	if st.Volume.Legs[1].State != "failed" {
		t.Fatalf("leg 1 of the unanswering array is %s", st.Volume.Legs[1].State)
	}
	if _, err := a.Handlers()["resource-restart"](json.RawMessage(`{"name":"fence"}`)); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, a, "the fence restarted", time.Minute, func(st Status) bool {
		return running(st) && st.Group.Resources[0].State == resources.ResRunning && strings.Contains(a.log.String(), "restarting fence")
	})
	if err := l.arrB.Resume(); err != nil {
		t.Fatal(err)
	}
	paused = false
	waitStatus(t, a, "leg 1 rejoins", time.Minute, func(st Status) bool {
		return running(st) && st.Volume.Legs[1].State != "failed"
	})
	if keys := l.keysOnB(t, ctx); slices.Contains(keys, l.keys["b"]) {
		t.Fatalf("leg 1 joined the volume while dead b's key is still registered on array B (keys %x)", keys)
	}
}

// A standby whose key the peer preempted while it ran nothing (the peer
// fenced it as suspect or partitioned at a takeover; nothing told it) is
// handed the group over cleanly later (move, SIGTERM of the active
// node): its fence start must rejoin the arrays and take the
// reservation, not find itself "fenced" and fail the hand-over (the
// group would then run nowhere).
func TestCleanStartAfterBeingPreemptedAsAStandby(t *testing.T) {
	if err := iscsitarget.TgtdAvailable(); err != nil {
		t.Fatalf("needs tgtd: %v", err)
	}
	dir := t.TempDir()
	arrA := iscsitarget.StartArray(t, dir, "cs-a", 16<<20)
	arrB := iscsitarget.StartArray(t, dir, "cs-b", 16<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	keys := map[heartbeat.NodeID]uint64{"a": fence.DeriveKey("cs", "a"), "b": fence.DeriveKey("cs", "b")}
	arrays := map[heartbeat.NodeID]*arrays{}
	for _, id := range []heartbeat.NodeID{"a", "b"} {
		cfg := &Config{
			Heartbeat: heartbeat.Config{Self: id, Cluster: "cs"},
			ISCSI:     ISCSIConfig{InitiatorName: "iqn.2026-01.org.hamirror.test:cs-" + string(id), Timeout: time.Second},
			Volume:    &VolumeConfig{Legs: [2]string{arrA.URL, arrB.URL}, IOTimeout: 2 * time.Second},
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
		arrays[id] = as
	}
	// b takes over, fencing a, which ran nothing; b later stops cleanly
	// (keeping the reservation where a is not registered).
	b := fenceResource{arrays["b"]}
	arrays["b"].mayWrite = func() []uint64 { return []uint64{keys["a"]} }
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// The group is handed to a: b is alive and clean.
	a := fenceResource{arrays["a"]}
	arrays["a"].mayWrite = func() []uint64 { return nil }
	if err := a.Start(ctx); err != nil {
		t.Fatalf("a's clean start after b's hand-over: %v", err)
	}
	if _, err := arrays["a"].openLeg(arrB.URL); err != nil {
		t.Fatalf("a's leg on B after its clean start: %v", err)
	}
}
