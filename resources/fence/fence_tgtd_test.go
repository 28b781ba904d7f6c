package fence_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/resources"
	"github.com/hamirror/hamirror/resources/fence"
	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

// lab is two tgtd arrays (one LUN each) and two nodes, each with a volume
// and a disk-heartbeat session to each array, as mirrord opens them.
type lab struct {
	t      *testing.T
	arrays []*iscsitarget.Array
	nodes  map[string]*labNode
}

type labNode struct {
	name  string
	key   uint64
	peers []uint64               // the other nodes' keys
	vol   map[string]*iscsi.Disk // by array
	hb    map[string]*iscsi.Disk
	fence *fence.Fence
}

const lunSize = 4 << 20

func newLab(t *testing.T) *lab {
	t.Helper()
	l := startArrays(t)
	l.addNodes(false)
	return l
}

// startArrays starts the lab's two arrays, no node yet.
func startArrays(t *testing.T) *lab {
	t.Helper()
	l := &lab{t: t, nodes: map[string]*labNode{}}
	dir := t.TempDir()
	for _, name := range []string{"array-a", "array-b"} {
		l.arrays = append(l.arrays, iscsitarget.StartArray(t, dir, name, lunSize))
	}
	return l
}

// addNodes opens both nodes' sessions (in the background: as mirrord
// does, whether the arrays are up or not) and makes their fence agents.
func (l *lab) addNodes(background bool) {
	t := l.t
	for _, n := range []string{"node1", "node2"} {
		l.addNode(n, background)
	}
	for _, n := range l.nodes {
		for _, p := range l.nodes {
			if p != n {
				n.peers = append(n.peers, p.key)
			}
		}
	}
	for _, n := range l.nodes {
		var arrays []fence.Array
		for _, a := range l.arrays {
			arrays = append(arrays, fence.Array{Name: a.Name, Volume: n.vol[a.Name], DiskHeartbeat: n.hb[a.Name]})
		}
		f, err := fence.New(fence.Config{Key: n.key, Peers: n.peers, Arrays: arrays})
		if err != nil {
			t.Fatal(err)
		}
		n.fence = f
	}
}

func (l *lab) addNode(name string, background bool) {
	n := &labNode{name: name, key: fence.DeriveKey("fence-test", name), vol: map[string]*iscsi.Disk{}, hb: map[string]*iscsi.Disk{}}
	for _, a := range l.arrays {
		for p, m := range map[iscsi.Purpose]map[string]*iscsi.Disk{iscsi.PurposeVolume: n.vol, iscsi.PurposeDiskHeartbeat: n.hb} {
			cfg := iscsi.Config{InitiatorName: "iqn.2026-01.org.hamirror.test:" + name, Purpose: p,
				Timeout: time.Second, ReconnectInterval: 100 * time.Millisecond}
			var d *iscsi.Disk
			var err error
			if background {
				d, err = iscsi.OpenLegInBackground(a.URL, cfg)
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				d, err = iscsi.OpenLeg(ctx, a.URL, cfg)
				cancel()
			}
			if err != nil {
				l.t.Fatal(err)
			}
			l.t.Cleanup(func() { d.Close() })
			m[a.Name] = d
		}
	}
	l.nodes[name] = n
}

func (n *labNode) String() string { return n.name }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// write writes a block through one of the node's sessions ("vol" or
// "hb") at a per-node offset and returns the error the mirror (or the
// disk heartbeat) would see.
func (l *lab) write(n *labNode, session, array string, seed byte) error {
	d := n.vol[array]
	if session == "hb" {
		d = n.hb[array]
	}
	return d.WriteAt(bytes.Repeat([]byte{seed}, 4096), l.offset(n, session), true)
}

func (l *lab) offset(n *labNode, session string) int64 {
	off := int64(0)
	if n.name == "node2" {
		off += 8192
	}
	if session == "hb" {
		off += 4096
	}
	return off
}

// onArray reads what the array stored at the node's session's block.
func (l *lab) onArray(n *labNode, session, array string) byte {
	for _, a := range l.arrays {
		if a.Name == array {
			f, err := os.Open(a.Img)
			if err != nil {
				l.t.Fatal(err)
			}
			defer f.Close()
			b := make([]byte, 1)
			if _, err := f.ReadAt(b, l.offset(n, session)); err != nil {
				l.t.Fatal(err)
			}
			return b[0]
		}
	}
	l.t.Fatalf("no array %s", array)
	return 0
}

func (l *lab) mustWrite(n *labNode, session, array string, seed byte) {
	l.t.Helper()
	if err := l.write(n, session, array, seed); err != nil {
		l.t.Fatalf("%s %s write on %s: %v", n, session, array, err)
	}
	if got := l.onArray(n, session, array); got != seed {
		l.t.Fatalf("%s %s write on %s: the array holds %#x, want %#x", n, session, array, got, seed)
	}
}

// mustBeFencedOff checks that a node's write gets the reservation conflict
// (the error the mirror turns into "fenced") and does not land.
func (l *lab) mustBeFencedOff(n *labNode, session, array string, seed byte) {
	l.t.Helper()
	before := l.onArray(n, session, array)
	err := l.write(n, session, array, seed)
	if !errors.Is(err, iscsi.ErrReservationConflict) {
		l.t.Fatalf("%s %s write on %s after being fenced: %v, want iscsi.ErrReservationConflict", n, session, array, err)
	}
	if got := l.onArray(n, session, array); got != before {
		l.t.Fatalf("%s's refused %s write landed on %s", n, session, array)
	}
}

func keysOn(t *testing.T, d *iscsi.Disk) []uint64 {
	t.Helper()
	_, keys, err := d.ReadKeys()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mustOK(t, what)(f.Op(ctx)) fails the test on an error and logs the
// result.
func mustOK(t *testing.T, what string) func(fence.Result, error) fence.Result {
	return func(r fence.Result, err error) fence.Result {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v\n%s", what, err, r)
		}
		t.Logf("%s:\n%s", what, r)
		return r
	}
}

// The fence agent between two nodes on two real tgtd arrays: issue 11's
// proof cases 2 (a frozen old owner gets a reservation conflict and no
// write of it lands) and 6 (one array dead during the takeover; fenced when
// it returns), plus the clean rejoin, a network blip that must not look
// like a fence, a clean release and hand-over.
func TestFenceTwoNodesTwoArrays(t *testing.T) {
	l := newLab(t)
	n1, n2 := l.nodes["node1"], l.nodes["node2"]
	a, b := l.arrays[0], l.arrays[1]
	both := []string{a.Name, b.Name}

	// Both nodes register at start-up; each array lists both keys, from
	// all four sessions.
	mustOK(t, "node1 register")(n1.fence.Register(ctx(t)))
	mustOK(t, "node2 register")(n2.fence.Register(ctx(t)))
	mustOK(t, "node2 register again (idempotent)")(n2.fence.Register(ctx(t)))
	for _, arr := range both {
		_, all, _ := n1.vol[arr].ReadKeys()
		if want := []uint64{n1.key, n2.key}; !slices.Equal(keysOn(t, n1.vol[arr]), sorted(want)) || len(all) != 4 {
			t.Fatalf("%s keys %x, want both nodes' keys from four sessions", arr, all)
		}
	}

	// node1 becomes active (clean start) and writes; node2's disk
	// heartbeat writes too (registrants only).
	r := mustOK(t, "node1 acquire")(n1.fence.Acquire(ctx(t)))
	if !slices.Equal(r.Fenced(), both) || !r.Arrays[0].Holder || !r.Arrays[1].Holder {
		t.Fatalf("node1 acquire: %+v", r)
	}
	for _, arr := range both {
		l.mustWrite(n1, "vol", arr, 0x11)
		l.mustWrite(n1, "hb", arr, 0x12)
		l.mustWrite(n2, "hb", arr, 0x22)
	}
	if err := n1.fence.Monitor(ctx(t)); err != nil {
		t.Fatalf("node1 monitor while active: %v", err)
	}

	// node1 freezes; node2 takes over with node1 as the victim. tgtd
	// refuses PREEMPT AND ABORT, so PREEMPT does it.
	r = mustOK(t, "node2 takeover")(n2.fence.Takeover(ctx(t), n1.key))
	if !slices.Equal(r.Fenced(), both) || len(r.Unreachable()) != 0 {
		t.Fatalf("takeover fenced %v, unreachable %v", r.Fenced(), r.Unreachable())
	}
	for _, ar := range r.Arrays {
		if !slices.Equal(ar.Preempted, []uint64{n1.key}) || ar.Aborted || !ar.Holder {
			t.Fatalf("%s: preempted %x aborted %v holder %v; want node1's key removed by the PREEMPT fallback", ar.Array, ar.Preempted, ar.Aborted, ar.Holder)
		}
	}
	// node1 wakes up: its next write, data and disk slot alike, gets the
	// reservation conflict and does not land; node2 writes on.
	for _, arr := range both {
		l.mustBeFencedOff(n1, "vol", arr, 0x13)
		l.mustBeFencedOff(n1, "hb", arr, 0x14)
		l.mustWrite(n2, "vol", arr, 0x23)
		l.mustWrite(n2, "hb", arr, 0x24)
	}
	// node1 learns it was fenced, and never fights back.
	if _, err := n1.fence.Check(ctx(t)); !errors.Is(err, fence.ErrFenced) {
		t.Fatalf("node1 check after being fenced: %v, want ErrFenced", err)
	}
	if err := n1.fence.Monitor(ctx(t)); !errors.Is(err, fence.ErrFenced) {
		t.Fatalf("node1 monitor: %v", err)
	} else if !errors.Is(err, resources.ErrFenced) {
		// The group must stop everything at once, not restart the fence
		// as after a monitor failure (stopping the volume in order).
		t.Fatalf("node1 monitor: %v is not resources.ErrFenced: the group takes it for a failure", err)
	}
	if _, err := n1.fence.Takeover(ctx(t), n2.key); !errors.Is(err, fence.ErrFenced) {
		t.Fatalf("fenced node1's takeover: %v, want ErrFenced", err)
	}
	if keys := keysOn(t, n2.vol[a.Name]); !slices.Equal(keys, []uint64{n2.key}) {
		t.Fatalf("after the fenced node's attempt: keys %x", keys)
	}
	if err := n1.fence.Stop(ctx(t)); err != nil {
		t.Fatalf("a fenced node's stop: %v, want nil (nothing to release)", err)
	}

	// Clean rejoin: node1 registers again and its disk heartbeat writes.
	mustOK(t, "node1 rejoin")(n1.fence.Register(ctx(t)))
	for _, arr := range both {
		l.mustWrite(n1, "hb", arr, 0x15)
	}
	if err := n1.fence.Monitor(ctx(t)); !errors.Is(err, resources.ErrNotRunning) {
		t.Fatalf("node1 monitor as a registered standby: %v, want ErrNotRunning", err)
	}

	// A network blip on array A longer than the iSCSI timeout: every
	// session reconnects. tgtd forgets a session's registration with the
	// session; the sessions restore it, so nobody looks fenced.
	if err := a.Pause(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	if err := a.Resume(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*labNode{n1, n2} {
		for _, d := range []*iscsi.Disk{n.vol[a.Name], n.hb[a.Name]} {
			waitFor(t, d.Name()+" reconnects", func() bool { return d.Stats().Reconnects > 0 && d.Connected() })
		}
	}
	l.mustWrite(n1, "hb", a.Name, 0x16)
	l.mustWrite(n2, "vol", a.Name, 0x25)
	if st := n1.hb[a.Name].Stats(); st.Reregistrations == 0 || st.RegistrationsLost != 0 {
		t.Fatalf("node1's disk heartbeat session after the blip: %+v, want its registration restored", st)
	}
	mustOK(t, "node2 check after the blip")(n2.fence.Check(ctx(t)))
	mustOK(t, "node1 check after the blip")(n1.fence.Check(ctx(t)))

	// Clean stop of node2: its reservation on A is now held by a session
	// tgtd no longer has; Release still releases it, and node2 stays
	// registered (taking the stale reservation back drops the disk
	// heartbeat session's registration, which it restores by logging in
	// again). node1 then takes over cleanly, node2 kept.
	r = mustOK(t, "node2 release")(n2.fence.Release(ctx(t)))
	for _, arr := range both {
		if res, err := n1.vol[arr].ReadReservation(); err != nil || res.Held {
			t.Fatalf("%s after node2's release: %+v %v", arr, res, err)
		}
		waitFor(t, "node2's disk heartbeat session", n2.hb[arr].Connected)
		l.mustWrite(n2, "hb", arr, 0x26)
	}
	if !strings.Contains(r.String(), "tgtd") {
		t.Fatalf("release on A did not say it took back a stale reservation:\n%s", r)
	}
	mustOK(t, "node1 acquire")(n1.fence.Acquire(ctx(t)))
	for _, arr := range both {
		l.mustWrite(n1, "vol", arr, 0x17)
		l.mustWrite(n2, "hb", arr, 0x27)
	}

	// node1 dies with array B: node2 fences node1 on A and reports B
	// unreachable, which is not fatal.
	if err := b.Kill(); err != nil {
		t.Fatal(err)
	}
	r = mustOK(t, "node2 takeover with array B dead")(n2.fence.Takeover(ctx(t), n1.key))
	if !slices.Equal(r.Fenced(), []string{a.Name}) || !slices.Equal(r.Unreachable(), []string{b.Name}) {
		t.Fatalf("fenced %v unreachable %v", r.Fenced(), r.Unreachable())
	}
	l.mustBeFencedOff(n1, "vol", a.Name, 0x18)
	// With no array at all, a takeover must not succeed.
	if err := a.Pause(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node2's sessions to A drop", func() bool { return !n2.vol[a.Name].Connected() })
	if _, err := n2.fence.Takeover(ctx(t), n1.key); !errors.Is(err, fence.ErrNoArray) {
		t.Fatalf("takeover with no array reachable: %v, want ErrNoArray", err)
	}
	if err := a.Resume(); err != nil {
		t.Fatal(err)
	}

	// Array B returns with its reservations forgotten (tgtd keeps them in
	// memory). Before its leg is used again, node2 fences it: registered,
	// holding WE-RO, node1 off it.
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*iscsi.Disk{n2.vol[b.Name], n2.hb[b.Name], n1.vol[b.Name], n2.vol[a.Name]} {
		waitFor(t, d.Name()+" reconnects", d.Connected)
	}
	r = mustOK(t, "node2 takeover again, array B back")(n2.fence.Takeover(ctx(t), n1.key))
	if !slices.Equal(r.Fenced(), both) {
		t.Fatalf("fenced %v after array B returned", r.Fenced())
	}
	if keys := keysOn(t, n2.vol[b.Name]); !slices.Equal(keys, []uint64{n2.key}) {
		t.Fatalf("array B keys %x, want node2's alone", keys)
	}
	if res, err := n2.vol[b.Name].ReadReservation(); err != nil || res.Key != n2.key || res.Type != iscsi.WriteExclusiveRegistrantsOnly {
		t.Fatalf("array B reservation %+v %v", res, err)
	}
	l.mustBeFencedOff(n1, "vol", b.Name, 0x19)
	l.mustBeFencedOff(n1, "hb", b.Name, 0x1a)
	l.mustWrite(n2, "vol", b.Name, 0x28)
	l.mustWrite(n2, "hb", b.Name, 0x29)
	if _, err := n1.fence.Check(ctx(t)); !errors.Is(err, fence.ErrFenced) {
		t.Fatalf("node1 check: %v, want ErrFenced", err)
	}
}

func sorted(k []uint64) []uint64 {
	k = slices.Clone(k)
	slices.Sort(k)
	return k
}

// The fence agent as the resource group drives it: Start as SetStart said
// (acquire for a clean start, takeover after a peer's death), Monitor,
// Stop.
func TestFenceAgentStartStopMonitor(t *testing.T) {
	l := newLab(t)
	n1, n2 := l.nodes["node1"], l.nodes["node2"]
	var a1, a2 resources.Agent = n1.fence, n2.fence
	for _, n := range []*labNode{n1, n2} {
		mustOK(t, n.name+" register")(n.fence.Register(ctx(t)))
		if err := n.fence.Monitor(ctx(t)); !errors.Is(err, resources.ErrNotRunning) {
			t.Fatalf("%s monitor before start: %v, want ErrNotRunning", n, err)
		}
	}
	if err := a1.Start(ctx(t)); err != nil { // default: acquire
		t.Fatalf("node1 start: %v", err)
	}
	if err := a1.Start(ctx(t)); err != nil {
		t.Fatalf("node1 start again (idempotent): %v", err)
	}
	if err := a1.Monitor(ctx(t)); err != nil {
		t.Fatalf("node1 monitor: %v", err)
	}
	// A clean start of node2 while node1 holds the reservation: the arrays
	// cannot tell it from node1 having kept it on a clean stop (see
	// Release), so node2 writes under it, not holding it (the group only
	// starts node2 after node1's clean stop; the engine's MMP checks it
	// again). node2's stop is then a no-op: it holds nothing.
	r, err := n2.fence.Acquire(ctx(t))
	if err != nil || r.Arrays[0].Holder {
		t.Fatalf("node2 acquire under node1's WE-RO reservation: %v\n%s", err, r)
	}
	if err := a2.Stop(ctx(t)); err != nil {
		t.Fatalf("node2 stop, not the holder: %v", err)
	}
	if res, err := n1.vol[l.arrays[0].Name].ReadReservation(); err != nil || res.Key != n1.key {
		t.Fatalf("after node2's stop: %+v %v, want node1's reservation kept", res, err)
	}
	// node1 stops cleanly; node2 acquires; node1 stays registered and its
	// disk heartbeat writes.
	if err := a1.Stop(ctx(t)); err != nil {
		t.Fatalf("node1 stop: %v", err)
	}
	if err := a1.Monitor(ctx(t)); !errors.Is(err, resources.ErrNotRunning) {
		t.Fatalf("node1 monitor after stop: %v", err)
	}
	if err := a2.Start(ctx(t)); err != nil {
		t.Fatalf("node2 start after node1's clean stop: %v", err)
	}
	l.mustWrite(n1, "hb", l.arrays[0].Name, 0x31)
	// node2 dies; node1 starts with a takeover of every peer.
	n1.fence.SetStart(fence.StartTakeover)
	if err := a1.Start(ctx(t)); err != nil {
		t.Fatalf("node1 takeover start: %v", err)
	}
	if err := a2.Monitor(ctx(t)); !errors.Is(err, fence.ErrFenced) {
		t.Fatalf("node2 monitor after the takeover: %v, want ErrFenced", err)
	}
	if !n2.fence.Fenced() || n2.fence.Active() {
		t.Fatalf("node2 fenced %v active %v", n2.fence.Fenced(), n2.fence.Active())
	}
	if err := a2.Stop(ctx(t)); err != nil {
		t.Fatalf("a fenced node's stop: %v", err)
	}
	if err := a2.Start(ctx(t)); !errors.Is(err, fence.ErrFenced) {
		t.Fatalf("a fenced node's start: %v, want ErrFenced until it rejoins", err)
	}
	if _, err := n1.fence.Takeover(ctx(t), n1.key); err == nil {
		t.Fatal("a takeover naming this node's own key as the victim was accepted")
	}
}
