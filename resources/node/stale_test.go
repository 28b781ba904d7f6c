package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/mirror"
	"github.com/hamirror/hamirror/mirror/legtest"
	"github.com/hamirror/hamirror/resources"
	"github.com/hamirror/hamirror/resources/volume"
)

// memArrays are two in-memory legs standing for the two arrays, shared by
// the nodes of a test; an array can be taken away (its leg cannot be
// opened) and given back.
type memArrays struct {
	mu    sync.Mutex
	legs  [2]*legtest.MemLeg
	gone  [2]bool
	specs [2]string
}

func newMemArrays(t *testing.T) *memArrays {
	t.Helper()
	m := &memArrays{specs: [2]string{"array-a", "array-b"}}
	var ml [2]mirror.Leg
	for i := range m.legs {
		m.legs[i] = legtest.NewMemLeg(m.specs[i], 8<<20)
		ml[i] = m.legs[i]
	}
	if _, err := mirror.Create(ml, mirror.CreateOptions{ChunkSize: 64 << 10, NodeID: "b"}); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *memArrays) set(i int, gone bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gone[i] = gone
}

func (m *memArrays) open(spec string) (mirror.Leg, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, s := range m.specs {
		if s == spec {
			if m.gone[i] {
				return nil, fmt.Errorf("%s does not answer", spec)
			}
			m.legs[i].Reopen()
			return m.legs[i], nil
		}
	}
	return nil, fmt.Errorf("no array %s", spec)
}

// volumeNode is the part of a node that assembles the volume: its state
// in dir (peer knowledge, sequence, witness, as New opens them) and the
// volume resource over the shared arrays, its engine publishing through
// the witness as newVolume wires it.
func volumeNode(t *testing.T, self, dir string, arr *memArrays) *Node {
	t.Helper()
	n := &Node{self: heartbeat.NodeID(self), log: slog.New(slog.DiscardHandler), inbox: make(chan func(time.Time), 256)}
	if err := n.openVolumeState(dir); err != nil {
		t.Fatal(err)
	}
	mo := mirror.DefaultOptions()
	mo.NodeID = self
	mo.Publish = n.wit.Publish
	n.vol = &volumeRes{name: "volume", agent: volume.New(volume.Options{Legs: arr.specs, OpenLeg: arr.open, Mirror: mo})}
	return n
}

// A node that took the group over on a lone leg with the peer's knowledge
// ran the volume itself since: the peer's knowledge, which the stopped
// peer keeps advertising, is older than what this node wrote. When the
// arrays swap (the leg it ran on goes away, the other comes back before
// it was re-added), a later start here (a local restart of the volume,
// or a restart of mirrord) must refuse the lone stale leg, not prove it
// newest with that old knowledge.
func TestPeerKnowledgeOlderThanThisNodesRunProvesNoLoneLeg(t *testing.T) {
	arr := newMemArrays(t)
	ctx := context.Background()

	// Node b runs the volume on both legs, writes 0x11, stops cleanly; it
	// publishes its knowledge (both legs in sync) and keeps advertising it.
	var mu sync.Mutex
	var known mirror.KnownState
	mo := mirror.DefaultOptions()
	mo.NodeID = "b"
	mo.Publish = func(k mirror.KnownState) { mu.Lock(); known = k; mu.Unlock() }
	la, _ := arr.open("array-a")
	lb, _ := arr.open("array-b")
	vb, err := mirror.Assemble([2]mirror.Leg{la, lb}, mo)
	if err != nil {
		t.Fatal(err)
	}
	old := bytes.Repeat([]byte{0x11}, 64<<10)
	if err := vb.WriteAt(old, 0, true); err != nil {
		t.Fatal(err)
	}
	if err := vb.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	kb := toKnowledge(known, 7, true)
	mu.Unlock()
	if kb.LegStates != [2]resources.LegState{resources.LegInSync, resources.LegInSync} {
		t.Fatalf("b's knowledge %+v: want both legs in sync", kb)
	}
	app, err := resources.AppState{State: resources.GroupStopped, Eligible: true, Volume: kb}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	view := heartbeat.View{Peers: []heartbeat.PeerView{{ID: "b", State: heartbeat.NodeAlive, HasApp: true, App: app}}}

	// Node a takes the group over with array a unreachable: b's knowledge
	// proves leg b newest (right), a runs on it and acknowledges 0x22.
	dir := t.TempDir()
	na := volumeNode(t, "a", dir, arr)
	if _, err := na.know.receive("b", kb); err != nil {
		t.Fatal(err)
	}
	arr.set(0, true)
	na.prepareVolume(view)
	if err := na.vol.agent.Start(ctx); err != nil {
		t.Fatalf("takeover on leg b alone with b's knowledge: %v", err)
	}
	acked := bytes.Repeat([]byte{0x22}, 64<<10)
	if err := na.vol.agent.Mirror().WriteAt(acked, 0, true); err != nil {
		t.Fatal(err)
	}
	if err := na.vol.agent.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	// The arrays swap: b goes away, a answers again (not re-added yet).
	arr.set(0, false)
	arr.set(1, true)
	check := func(when string) {
		t.Helper()
		na.prepareVolume(view)
		err := na.vol.agent.Start(ctx)
		if err == nil {
			got := make([]byte, len(acked))
			rerr := na.vol.agent.Mirror().ReadAt(got, 0)
			na.vol.agent.Stop(ctx)
			t.Fatalf("%s: the volume started on stale leg a alone (reads %#x, read err %v; 0x22 was acknowledged on leg b)", when, got[0], rerr)
		}
		var lone *mirror.LoneLegError
		if !errors.As(err, &lone) {
			t.Fatalf("%s: start refused with %v, want a lone-leg refusal", when, err)
		}
	}
	check("local restart of the volume")

	// mirrord restarts on a: b still advertises the same knowledge.
	na = volumeNode(t, "a", dir, arr)
	if _, err := na.know.receive("b", kb); err != nil {
		t.Fatal(err)
	}
	check("after a restart of mirrord")
}

// Knowledge the peer publishes after this node ran the volume (it ran the
// volume again since) is trusted again; the floor survives a restart, and
// a damaged floor trusts nothing rather than everything.
func TestPeerKnowledgeFloor(t *testing.T) {
	dir := t.TempDir()
	k := resources.VolumeKnowledge{Seq: 7, VolumeUUID: [16]byte{1}, Generation: 5, Events: 9, Witnessing: true}
	last := func(k resources.VolumeKnowledge) resources.AppState { return resources.AppState{Volume: k} }
	s, err := openKnowledge(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.receive("b", k); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.trusted("b", last(k)); !ok {
		t.Fatal("fresh knowledge not trusted")
	}
	if err := s.supersede(); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.trusted("b", last(k)); ok {
		t.Fatal("knowledge trusted after this node published its own")
	}
	s, err = openKnowledge(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.receive("b", k); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.trusted("b", last(k)); ok {
		t.Fatal("superseded knowledge trusted again after a restart")
	}
	k.Seq, k.Generation = 8, 6
	if _, err := s.receive("b", k); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.trusted("b", last(k)); !ok {
		t.Fatal("knowledge the peer published later is not trusted")
	}
	if err := os.WriteFile(filepath.Join(dir, knowledgeFloorFile), []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = openKnowledge(dir)
	if err == nil || s == nil {
		t.Fatalf("damaged floor: store %v, err %v; want a store and an error", s, err)
	}
	k.Seq, k.Generation = 9, 7
	if _, err := s.receive("b", k); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.trusted("b", last(k)); ok {
		t.Fatal("knowledge trusted with a damaged floor")
	}
}

// A peer-volume file that cannot be read (here a directory; EIO alike)
// is no knowledge: the node runs, takes the peer's knowledge as it comes
// and trusts none from before. It must not crash the loop.
func TestUnreadablePeerKnowledgeFileIsNoKnowledge(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, knowledgeFile), 0o700); err != nil {
		t.Fatal(err)
	}
	n := &Node{self: "a", log: slog.New(slog.DiscardHandler), inbox: make(chan func(time.Time), 256)}
	if err := n.openVolumeState(dir); err != nil {
		t.Fatal(err)
	}
	k := resources.VolumeKnowledge{Seq: 3, VolumeUUID: [16]byte{1}, Generation: 5, Witnessing: true}
	seq, _ := n.know.receive("b", k)
	if seq != 3 {
		t.Fatalf("receive acknowledges %d, want 3", seq)
	}
	if _, ok := n.know.trusted("b", resources.AppState{Volume: k}); !ok {
		t.Fatal("knowledge received in this run is not trusted")
	}
}

// Knowledge a peer advertises that the engine cannot use (no volume UUID
// or generation: a garbled or hostile blob that decodes) is no
// knowledge: the takeover assembles as without it, both legs here, and
// does not fail the volume's start over it.
func TestUnusablePeerKnowledgeIsIgnored(t *testing.T) {
	arr := newMemArrays(t)
	n := volumeNode(t, "a", t.TempDir(), arr)
	k := resources.VolumeKnowledge{Seq: 4, Witnessing: true}
	if _, err := n.know.receive("b", k); err != nil {
		t.Fatal(err)
	}
	app, err := resources.AppState{State: resources.GroupRunning, Volume: k}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	n.prepareVolume(heartbeat.View{Peers: []heartbeat.PeerView{{ID: "b", State: heartbeat.NodeDead, HasApp: true, App: app}}})
	if err := n.vol.agent.Start(context.Background()); err != nil {
		t.Fatalf("start with both legs and the peer's unusable knowledge: %v", err)
	}
	n.vol.agent.Stop(context.Background())
}
