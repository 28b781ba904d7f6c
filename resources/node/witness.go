package node

import (
	"bytes"
	"context"
	"errors"
	"sync"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/mirror"
	"github.com/hamirror/hamirror/resources"
)

// The witness makes the peer's knowledge of the volume sound.
//
// Publisher side (the node running the volume): the engine calls
// publish after each metadata write that changed a leg state or started a
// generation, and counts that write durable only when publish returns.
// publish hands the new state to the group (which advertises it in every
// heartbeat) and waits until every live peer acknowledged it as
// persisted. A peer that is not live (dead, or not heard in this run) is
// not waited for; the advertised state then says Witnessing false, and a
// peer that trusts knowledge only from a witnessing publisher (below)
// will not use what it holds. So no write that missed a leg is
// acknowledged before the peer knows that leg failed, unless the peer
// cannot use what it knows.
//
// Peer side: a peer's knowledge received in this run is persisted
// (fsynced; if that fails, it is still held and acknowledged, see
// receive) before it is acknowledged, and is trusted at a takeover only
// when the publisher's last app state carried that very sequence with
// Witnessing set. Knowledge loaded from disk after a restart is never
// trusted: while this node was down the publisher did not wait for it.
type witness struct {
	mu      sync.Mutex
	cond    *sync.Cond
	seqs    *seqStore
	seq     uint64                      // last sequence published
	known   *mirror.KnownState          // last state published
	acks    map[heartbeat.NodeID]uint64 // each peer's ack of our knowledge
	live    map[heartbeat.NodeID]bool
	closed  bool
	publish func(k resources.VolumeKnowledge) // posts to the group (loop)
	// supersede runs before each publication: this node runs the volume,
	// so the peer's knowledge it held is superseded (knowledgeStore).
	supersede func()
}

func newWitness(seqs *seqStore, publish func(resources.VolumeKnowledge)) *witness {
	w := &witness{seqs: seqs, acks: map[heartbeat.NodeID]uint64{}, live: map[heartbeat.NodeID]bool{}, publish: publish}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// witnessing (mu held): every peer is live, so a change waits for acks.
func (w *witness) witnessing() bool {
	for _, l := range w.live {
		if !l {
			return false
		}
	}
	return len(w.live) > 0
}

// observe takes a membership view: which peers are live and what they
// acknowledged. It re-publishes when the witnessing flag changed.
func (w *witness) observe(v heartbeat.View) {
	w.mu.Lock()
	was := w.witnessing()
	for _, p := range v.Peers {
		// A peer whose app state cannot be read (a newer version, a
		// garbled blob) cannot be seen to acknowledge: not waited for.
		a, err := resources.UnmarshalAppState(p.App)
		readable := p.HasApp && err == nil
		w.live[p.ID] = readable && (p.State == heartbeat.NodeAlive || p.State == heartbeat.NodeSuspect || p.State == heartbeat.NodePartitioned)
		if readable {
			w.acks[p.ID] = a.Ack
		}
	}
	now := w.witnessing()
	var k *resources.VolumeKnowledge
	if now != was && w.known != nil {
		vk := toKnowledge(*w.known, w.seq, now)
		k = &vk
	}
	w.cond.Broadcast()
	w.mu.Unlock()
	if k != nil {
		w.publish(*k)
	}
}

// Publish is the engine's Options.Publish.
//
// If the sequence cannot be persisted the state is still published (the
// peer must learn it) but with the previous run's risk: the witness then
// waits for a strictly newer acknowledgement, which the peer gives only
// for this publication.
func (w *witness) Publish(ks mirror.KnownState) {
	if w.supersede != nil {
		w.supersede()
	}
	seq, err := w.seqs.next()
	w.mu.Lock()
	if err != nil {
		seq = max(w.seq+1, seq)
	}
	w.seq = seq
	w.known = &ks
	vk := toKnowledge(ks, seq, w.witnessing())
	w.mu.Unlock()
	w.publish(vk)
	w.wait(context.Background(), seq)
}

// wait returns once every live peer acknowledged seq (or the witness is
// closed, or ctx ends).
func (w *witness) wait(ctx context.Context, seq uint64) {
	stop := context.AfterFunc(ctx, func() {
		w.mu.Lock()
		w.cond.Broadcast()
		w.mu.Unlock()
	})
	defer stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	for !w.closed && ctx.Err() == nil {
		done := true
		for id, l := range w.live {
			if l && w.acks[id] < seq {
				done = false
			}
		}
		if done {
			return
		}
		w.cond.Wait()
	}
}

func (w *witness) close() {
	w.mu.Lock()
	w.closed = true
	w.cond.Broadcast()
	w.mu.Unlock()
}

// peerKnowledge is what this node holds of a publishing peer's volume.
type peerKnowledge struct {
	from heartbeat.NodeID
	k    resources.VolumeKnowledge
}

// receive takes a peer's newer knowledge (on the loop goroutine), persists
// it where it can, and returns the sequence to acknowledge (0: nothing
// new). What it holds is acknowledged even when the file cannot be
// written (the error says so): only knowledge received in this run is
// trusted, so the file only shows the last knowledge after a restart,
// and a withheld ack would stall the publisher's metadata writes.
func (s *knowledgeStore) receive(from heartbeat.NodeID, k resources.VolumeKnowledge) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = max(s.seen, k.Seq)
	rec := encodeKnowledge(from, k)
	if s.confirmed && bytes.Equal(rec, s.rec) {
		return 0, nil
	}
	err := s.save(rec)
	s.rec, s.confirmed = append(s.rec[:0], rec...), true
	return k.Seq, err
}

// trusted returns the knowledge a takeover may use: received in this run
// from publisher, matching its last advertised state, which said it was
// witnessing, and published after this node last ran the volume (above
// the floor, knowledge.go). last is the publisher's last app state (kept
// by membership after its death).
func (s *knowledgeStore) trusted(publisher heartbeat.NodeID, last resources.AppState) (*mirror.KnownState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.confirmed || s.rec == nil {
		return nil, false
	}
	from, k, err := decodeKnowledge(s.rec)
	if err != nil || from != publisher || !last.Volume.Witnessing || last.Volume.Seq != k.Seq || last.Volume.Generation != k.Generation ||
		k.Seq <= s.floor {
		return nil, false
	}
	ks := fromKnowledge(k)
	if ks.Validate() != nil {
		return nil, false // the engine could not use it: no knowledge
	}
	return &ks, true
}

// toKnowledge converts the engine's state for the app state.
func toKnowledge(ks mirror.KnownState, seq uint64, witnessing bool) resources.VolumeKnowledge {
	k := resources.VolumeKnowledge{Seq: seq, VolumeUUID: ks.VolumeUUID, Generation: ks.Generation, Events: ks.Events,
		LegUUIDs: ks.LegUUIDs, Witnessing: witnessing}
	for i, s := range ks.LegStates {
		k.LegStates[i] = legStateOf(s)
	}
	return k
}

func fromKnowledge(k resources.VolumeKnowledge) mirror.KnownState {
	ks := mirror.KnownState{VolumeUUID: k.VolumeUUID, Generation: k.Generation, Events: k.Events, LegUUIDs: k.LegUUIDs}
	for i, s := range k.LegStates {
		ks.LegStates[i] = s.String()
	}
	return ks
}

// legStateOf maps the engine's leg state names to the app state's.
func legStateOf(s string) resources.LegState {
	var st resources.LegState
	if st.UnmarshalText([]byte(s)) != nil {
		return resources.LegFailed // unknown: count it failed, never in sync
	}
	return st
}

// encodeKnowledge is the persisted record: the publisher's node ID and
// its knowledge in the app state's strict encoding.
func encodeKnowledge(from heartbeat.NodeID, k resources.VolumeKnowledge) []byte {
	app, _ := resources.AppState{Volume: k}.Marshal()
	b := append([]byte{byte(len(from))}, from...)
	return append(b, app...)
}

func decodeKnowledge(b []byte) (heartbeat.NodeID, resources.VolumeKnowledge, error) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return "", resources.VolumeKnowledge{}, errors.New("short knowledge record")
	}
	from := heartbeat.NodeID(b[1 : 1+b[0]])
	a, err := resources.UnmarshalAppState(b[1+b[0]:])
	if err != nil {
		return "", resources.VolumeKnowledge{}, err
	}
	if a.Volume.Seq == 0 {
		return "", resources.VolumeKnowledge{}, errors.New("knowledge record without a volume")
	}
	return from, a.Volume, nil
}
