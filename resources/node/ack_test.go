package node

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/mirror"
	"github.com/hamirror/hamirror/resources"
)

// groupOf is a group machine for node self with one exec resource.
func groupOf(t *testing.T, self, peer heartbeat.NodeID) *resources.Group {
	t.Helper()
	cfg := resources.DefaultConfig()
	r, err := resources.DefaultResource("app", resources.TypeExec)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Resources = []resources.Resource{r}
	g, err := resources.New(cfg, self, resources.Options{Peers: []heartbeat.NodeID{peer}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func marshal(t *testing.T, a resources.AppState) []byte {
	t.Helper()
	b, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The active node's engine counts a leg-state change durable only once
// the live standby acknowledged its knowledge. A standby whose state_dir
// cannot be written (full, read-only, gone) must still acknowledge what
// it holds: only knowledge received in this run is ever trusted, so the
// file is not what makes it sound; withholding the ack freezes every
// metadata write of the active node (all its I/O to clean chunks) for as
// long as the standby lives.
func TestStandbyThatCannotPersistStillAcknowledges(t *testing.T) {
	// The standby, b, with its state_dir gone after it started.
	dir := filepath.Join(t.TempDir(), "state-b")
	b := &Node{self: "b", log: slog.New(slog.DiscardHandler), inbox: make(chan func(time.Time), 256), vol: &volumeRes{}}
	if err := b.openVolumeState(dir); err != nil {
		t.Fatal(err)
	}
	b.group = groupOf(t, "b", "a")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}

	// The active node, a: its witness sees b live.
	seqs, err := openSeq(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	published := make(chan resources.VolumeKnowledge, 4)
	w := newWitness(seqs, func(k resources.VolumeKnowledge) { published <- k })
	viewOfB := func() heartbeat.View {
		app := marshal(t, b.group.AppState())
		return heartbeat.View{Peers: []heartbeat.PeerView{{ID: "b", State: heartbeat.NodeAlive, HasApp: true, App: app}}}
	}
	w.observe(viewOfB())
	done := make(chan struct{})
	ks := mirror.KnownState{VolumeUUID: [16]byte{7}, Generation: 3, Events: 10, LegStates: [2]string{"in_sync", "failed"}}
	go func() { w.Publish(ks); close(done) }()
	vk := <-published
	if !vk.Witnessing {
		t.Fatalf("a publishes %+v with b live: want witnessing", vk)
	}

	// b hears it; a hears b's answer.
	app := marshal(t, resources.AppState{State: resources.GroupRunning, Volume: vk})
	for range 3 {
		b.takeKnowledge(time.Now(), heartbeat.View{Peers: []heartbeat.PeerView{{ID: "a", State: heartbeat.NodeAlive, HasApp: true, App: app}}})
		w.observe(viewOfB())
	}
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		w.close()
		t.Fatalf("a's metadata write still waits for b, which holds the knowledge but acknowledges %d, not %d", b.group.AppState().Ack, vk.Seq)
	}
	last, err := resources.UnmarshalAppState(app)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.know.trusted("a", last); !ok {
		t.Fatal("b does not trust the knowledge it acknowledged in this run")
	}
}

// A live peer whose app state this node cannot decode (a newer mirrord
// during a rolling upgrade, or a garbled blob) can never be seen to
// acknowledge: the witness must not wait for it (the engine's metadata
// writes would stop), and must not claim to be witnessing.
func TestUndecodablePeerIsNotWaitedFor(t *testing.T) {
	seqs, err := openSeq(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	published := make(chan resources.VolumeKnowledge, 4)
	w := newWitness(seqs, func(k resources.VolumeKnowledge) { published <- k })
	newer := []byte("HG\x02 a state of a newer version")
	w.observe(heartbeat.View{Peers: []heartbeat.PeerView{{ID: "b", State: heartbeat.NodeAlive, HasApp: true, App: newer}}})
	done := make(chan struct{})
	go func() {
		w.Publish(mirror.KnownState{VolumeUUID: [16]byte{7}, Generation: 3, LegStates: [2]string{"in_sync", "failed"}})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		w.close()
		t.Fatal("the engine's metadata write waits for a peer whose acknowledgements cannot be read")
	}
	if vk := <-published; vk.Witnessing {
		t.Fatalf("published %+v as witnessing, with the only peer unreadable", vk)
	}
}
