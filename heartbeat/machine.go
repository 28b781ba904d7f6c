package heartbeat

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Medium describes one medium to the state machine.
type Medium struct {
	Name string
	Disk bool // a disk slot: proves liveness, never carries the table
}

// MachineConfig is everything the pure state machine needs.
type MachineConfig struct {
	Self      NodeID
	Nodes     []NodeID // configured order: index table ring and tie-breaks
	Preferred NodeID
	Failback  bool // hand the active role back to Preferred (cluster.failback)
	// FailbackDelay: Preferred must have been steady this long first
	// (cluster.failback_delay).
	FailbackDelay time.Duration
	Timing        Timing
	Media         []Medium
	Addresses     map[NodeID][]string // shown in the index table
	Boot          uint64              // this boot's ID; must grow across restarts
	// Nonce is this run's nonce: random, non-zero, never reused (crypto/rand
	// in Member). Peers echo it; only frames that do are beats.
	Nonce   uint64
	HasPing bool // ping targets configured
	// Term is the highest takeover term this node had seen before this
	// run (LoadTerm: state_dir); 0 for a node that never saw one.
	Term uint64
}

// MachineConfig derives the state machine's settings for c.Self.
func (c *Config) MachineConfig(boot uint64) MachineConfig {
	mc := MachineConfig{Self: c.Self, Preferred: c.Preferred, Failback: c.Failback, FailbackDelay: c.FailbackDelay, Timing: c.Timing, Boot: boot,
		Addresses: map[NodeID][]string{}, HasPing: len(c.PingTargets) > 0}
	seen := map[string]bool{}
	self, _ := c.NodeByID(c.Self)
	for _, n := range c.Nodes {
		mc.Nodes = append(mc.Nodes, n.ID)
		if n.Address != "" {
			mc.Addresses[n.ID] = append(mc.Addresses[n.ID], n.Address)
		}
		for _, l := range n.Links {
			mc.Addresses[n.ID] = append(mc.Addresses[n.ID], l.Address)
		}
	}
	for _, l := range self.Links {
		if !seen[l.Medium] {
			seen[l.Medium] = true
			mc.Media = append(mc.Media, Medium{Name: l.Medium})
		}
	}
	if self.Serial != "" {
		mc.Media = append(mc.Media, Medium{Name: SerialMedium})
	}
	for _, d := range c.Disks {
		mc.Media = append(mc.Media, Medium{Name: d.Name, Disk: true})
	}
	return mc
}

// Outbound is a frame the runner must sign and send on Medium.
type Outbound struct {
	Medium string
	Frame  Frame
}

// Ready is what one step produced: events to report and frames to send.
type Ready struct {
	// Term, when not zero, is the highest takeover term this node now
	// knows: the runner records it (SaveTerm) before it reports the
	// events or sends the frames, which may carry it.
	Term   uint64
	Events []Event
	Send   []Outbound
}

// Machine is the pure membership state machine of one node: frames and
// clock ticks in, events and frames out. It does no I/O and reads no
// clock; the runner (Member) feeds it. Not safe for concurrent use.
//
// Ordering rules:
//   - Receive is given only frames that passed Codec.Decode (the HMAC);
//     it rejects replays itself (older boot, sequence not newer) and
//     counts a frame as a beat only if it echoes this run's nonce. A
//     heartbeat's payload (role, eligibility, ping score, app state) is
//     taken only from a beat whose round is not older than the last one
//     taken from that peer's run; its takeover term from any authentic
//     frame that passed the replay checks (a term only ever grows).
//   - Tick is called every keepalive/4; the runner hands it every frame
//     that arrived before it first. Tick notices a stall of this node
//     (stall.go), recomputes every medium and node state from the times
//     frames were last accepted, then decides the role, then emits due
//     frames. While it holds after a stall it decides nothing but that
//     this node yields to a later claim.
//   - Ready.Term, when set, is recorded durably before the events and
//     frames of that Ready are carried out (Member does).
//   - A peer is dead only when every medium has been silent for
//     timing.dead AND no disk slot has advanced for timing.dead, counted
//     in time this node was running.
//   - SetEligible(false) yields the active role at once; SetAppState's
//     blob goes out at the next Tick, or at the first Tick keepalive/4
//     after the previous send.
type Machine struct {
	cfg       MachineConfig
	start     time.Time
	initFrom  time.Time // timing.initdead counts from here (the first Tick, moved on by stalls)
	seq       map[string]uint64
	nextSend  time.Time
	lastSend  time.Time
	round     uint64 // send rounds so far: Heartbeat.Round of the latest
	role      Role
	peers     map[NodeID]*peer
	table     Table
	tableDue  bool
	ping      uint8
	pingMoved bool      // SetPingScore changed the score since the last Tick
	pingNote  string    // SetPingNote
	pingSince time.Time // when this node's score last changed
	counters  Counters
	ready     Ready
	dualAlarm bool
	noneAlarm bool // the "no node is eligible" alarm is up
	termAlarm bool // the "no term left to claim" alarm was raised
	// eligible: this node may be elected (SetEligible). eligibleSince is
	// when it last turned eligible after being ineligible (zero: eligible
	// since the start); it is a candidate again only timing.warn later.
	eligible      bool
	eligibleSince time.Time
	app           []byte // this node's app state, in every heartbeat
	stall         stallState
	// term is the highest takeover term this node knows: its own claims
	// and every term heard (roles.go); claim is the term of its active
	// claim, 0 unless it proposes active.
	term  uint64
	claim uint64
}

// peer is what this node knows about another node.
// Invariant: boot only grows; nonce and lastSeq belong to that boot only.
type peer struct {
	id          NodeID
	boot        uint64
	nonce       uint64    // its run nonce in boot: echoed in our frames
	unconfirmed time.Time // last authentic frame that did not echo our nonce
	lastSeq     map[string]uint64
	heard       map[string]time.Time // medium -> last accepted frame (disk: last advance)
	media       map[string]MediumState
	state       NodeState
	hb          Heartbeat // payload of the newest round taken from its current run
	round       uint64    // hb.Round; a payload of an older round is not taken
	beat        time.Time // last heartbeat beat of its current run (zero: none yet)
	betterSince time.Time // since when its ping score beats ours (zero: it does not)
	pingSince   time.Time // when its advertised ping score last changed
	aliveSince  time.Time // when it last turned alive (zero: not alive)
	eligSince   time.Time // when its advertised eligibility last turned true
	runSince    time.Time // its current run's first beat (a restart starts it over)
	// partitionAlarmed: the partition alarm was raised for the current
	// spell of NodePartitioned (reset when the state changes).
	partitionAlarmed bool
}

// NewMachine starts a node's state machine at now.
func NewMachine(cfg MachineConfig, now time.Time) (*Machine, error) {
	if !slices.Contains(cfg.Nodes, cfg.Self) {
		return nil, fmt.Errorf("heartbeat: %w: %q", ErrNoSelf, cfg.Self)
	}
	if len(cfg.Media) == 0 {
		return nil, errors.New("heartbeat: no medium configured for this node")
	}
	if cfg.Nonce == 0 {
		return nil, errors.New("heartbeat: the run nonce must not be zero")
	}
	m := &Machine{cfg: cfg, start: now, initFrom: now, seq: map[string]uint64{}, nextSend: now,
		peers: map[NodeID]*peer{}, eligible: true, term: cfg.Term}
	for _, id := range cfg.Nodes {
		if id == cfg.Self {
			continue
		}
		p := &peer{id: id, lastSeq: map[string]uint64{}, heard: map[string]time.Time{}, media: map[string]MediumState{}}
		for _, md := range cfg.Media {
			p.media[md.Name] = MediumDown
		}
		m.peers[id] = p
	}
	return m, nil
}

func (m *Machine) medium(name string) (Medium, bool) {
	for _, md := range m.cfg.Media {
		if md.Name == name {
			return md, true
		}
	}
	return Medium{}, false
}

func (m *Machine) emit(e Event) { m.ready.Events = append(m.ready.Events, e) }

// Ready returns and clears what the machine produced since the last call.
func (m *Machine) Ready() Ready {
	r := m.ready
	m.ready = Ready{}
	return r
}

// Reject counts a frame the codec refused (err from Codec.Decode).
func (m *Machine) Reject(err error) {
	switch {
	case errors.Is(err, ErrAuth):
		m.counters.BadAuth++
	case errors.Is(err, ErrCluster):
		m.counters.WrongCluster++
	default:
		m.counters.Malformed++
	}
}

// SetPingNote records why the last ping round scored what it did ("":
// it went well), for Status.
func (m *Machine) SetPingNote(note string) { m.pingNote = note }

// SetPingScore records how many public ping targets this node reaches.
func (m *Machine) SetPingScore(n int) {
	if s := uint8(min(max(n, 0), 255)); s != m.ping {
		m.ping, m.pingMoved = s, true
	}
}

// Receive takes one authenticated frame that arrived on medium arrived.
// It returns a non-nil error (already counted) when the frame is refused.
//
// Freshness. Boot IDs and sequence numbers stop replays only while this
// node remembers the highest it has seen, that is, within this run: after
// a restart, frames captured from a peer's earlier life would pass them
// and keep a dead peer "alive" (or feed stale roles and tables) for as
// long as the capture lasts. So every node draws a random run nonce at
// start, sends it in every frame, and echoes in every frame the nonces of
// the peers it has heard in their current boots. A frame is a beat (and
// its role, ping score and table are used) only if it echoes this node's
// current nonce: no capture taken before this run started contains it,
// and within the run the sequence check refuses replays. A frame that
// does not echo it yet is authentic but unconfirmed: it only teaches this
// node the sender's boot and nonce, so that this node echoes them, and is
// counted (Counters.Unconfirmed).
//
// Why not persist the highest (boot, sequence) per peer in state_dir
// instead: that needs an fsync per accepted frame, or a margin for the
// frames accepted since the last write that depends on timing and media;
// a lost or restored state_dir reopens the hole. The nonce needs no state
// and covers every medium alike, the disk slots included.
//
// Costs. At start a peer's frames count only after one exchange; a node
// that learns a peer's new nonce sends at its next step (keepalive/4), not
// its next keepalive, so the first beats come at most two steps later
// than without the check. A peer that cannot hear this node on any medium
// from this node's start cannot prove it is alive: it is declared dead
// after initdead, with an alarm naming the cause. (Once heard, a peer
// keeps echoing this node's nonce, so a later one-way failure is no
// different from before.)
func (m *Machine) Receive(now time.Time, arrived string, f Frame) error {
	p := m.peers[f.From]
	if p == nil {
		m.counters.UnknownNode++
		return fmt.Errorf("frame from %q, which is not a cluster member (or is this node)", f.From)
	}
	md, ok := m.medium(arrived)
	if !ok || f.Medium != arrived {
		m.counters.WrongMedium++
		return fmt.Errorf("frame from %s signed for medium %q arrived on %q", f.From, f.Medium, arrived)
	}
	switch {
	case f.Boot < p.boot:
		m.counters.Replayed++
		return fmt.Errorf("frame from %s carries an older boot ID: replay", f.From)
	case f.Boot > p.boot:
		p.boot, p.nonce = f.Boot, f.Nonce // the peer restarted: sequences start over
		clear(p.lastSeq)
		p.round = 0
		if !p.beat.IsZero() {
			// Its app state belonged to its previous run.
			p.beat, p.hb.App = time.Time{}, nil
			m.emit(Event{At: now, Kind: EventApp, Node: p.id, Msg: "unknown: it restarted"})
		}
		m.nextSend = now // echo its new nonce at once: its beats count only then
	case f.Nonce != p.nonce:
		m.counters.Replayed++
		return fmt.Errorf("frame from %s: boot ID %d with another run nonce: a replay, or two runs share a boot ID (was %s's state_dir lost and its clock set back?)", f.From, f.Boot, f.From)
	}
	if f.Seq <= p.lastSeq[arrived] {
		if md.Disk {
			return nil // the slot has not advanced: not a replay, just stale
		}
		m.counters.Replayed++
		return fmt.Errorf("frame from %s on %s: sequence %d is not newer than %d: replay", f.From, arrived, f.Seq, p.lastSeq[arrived])
	}
	var hb Heartbeat
	var tb Table
	var err error
	switch f.Type {
	case MsgHeartbeat:
		hb, err = UnmarshalHeartbeat(f.Payload)
	case MsgTable:
		tb, err = UnmarshalTable(f.Payload)
	}
	if err != nil {
		m.counters.Malformed++
		return err
	}
	p.lastSeq[arrived] = f.Seq
	if f.Type == MsgHeartbeat {
		// Any authentic frame teaches its term, beat or not: a term
		// only raises what this node knows, and its sender really used
		// it. (A node that hears a peer only one way still learns the
		// peer's claim before it finds the peer dead and takes over.)
		m.learnTerm(now, hb.Term)
	}
	if !slices.Contains(f.Echo, m.cfg.Nonce) {
		// Sent before the peer heard this run, or captured from an
		// earlier one: proves nothing about the peer now. No error: every
		// start-up sees a few.
		m.counters.Unconfirmed++
		p.unconfirmed = now
		return nil
	}
	m.counters.Accepted++
	p.heard[arrived] = now
	switch f.Type {
	case MsgHeartbeat:
		m.takeHeartbeat(now, p, hb)
	case MsgTable:
		if f.From == m.coordinator() && tb.Version > m.table.Version {
			m.table = tb
			m.emit(Event{At: now, Kind: EventTable, To: fmt.Sprintf("version %d from %s", tb.Version, f.From)})
		}
	}
	return nil
}

// Tick advances the machine to now: states, role, due frames. The runner
// calls it every keepalive/4, after handing it every frame that arrived.
func (m *Machine) Tick(now time.Time) {
	m.noticeStall(now)
	if m.pingMoved {
		m.pingMoved, m.pingSince = false, now
	}
	if m.holding(now) {
		// A later claim heard is news, not a verdict: it needs no wait.
		m.yieldToLaterClaim(now)
	} else {
		for _, id := range m.cfg.Nodes {
			if p := m.peers[id]; p != nil {
				m.update(now, p)
			}
		}
		m.decideRole(now)
	}
	m.maintainTable(now)
	m.send(now)
}

func (m *Machine) mediumState(now time.Time, last time.Time) MediumState {
	t := m.cfg.Timing
	switch {
	case last.IsZero():
		return MediumDown
	case now.Sub(last) < t.Warn:
		return MediumUp
	case now.Sub(last) < t.Dead:
		return MediumWarn
	}
	return MediumDown
}

func (m *Machine) update(now time.Time, p *peer) {
	var lastNet, lastDisk time.Time
	for _, md := range m.cfg.Media {
		h := p.heard[md.Name]
		if md.Disk {
			lastDisk = later(lastDisk, h)
		} else {
			lastNet = later(lastNet, h)
		}
		if s := m.mediumState(now, h); s != p.media[md.Name] {
			m.emit(Event{At: now, Kind: EventMedium, Node: p.id, Medium: md.Name, From: p.media[md.Name].String(), To: s.String()})
			p.media[md.Name] = s
		}
	}
	t := m.cfg.Timing
	fresh := func(last time.Time, d time.Duration) bool { return heardWithin(now, last, d) }
	var s NodeState
	switch {
	case fresh(lastNet, t.Warn):
		s = NodeAlive
	case fresh(lastNet, t.Dead):
		s = NodeSuspect
	case fresh(lastDisk, t.Dead):
		s = NodePartitioned
	case lastNet.IsZero() && lastDisk.IsZero() && now.Sub(m.initFrom) < t.InitDead:
		s = NodeUnknown
	default:
		s = NodeDead
	}
	if s != p.state {
		m.changeState(now, p, s)
	}
	// The partition alarm waits for proof that the peer runs: its disk
	// slot advanced a warn time after its network fell silent. A dead
	// node's last disk beat is often read a moment after its last network
	// frame (the slot is polled), which passes through partitioned on the
	// way to dead without being a partition.
	if s == NodePartitioned && !p.partitionAlarmed && lastDisk.Sub(lastNet) >= t.Warn {
		p.partitionAlarmed = true
		m.emit(Event{At: now, Kind: EventAlarm, Node: p.id, Msg: fmt.Sprintf(
			"%s is silent on every network medium but its disk slot still advances: network partition; no takeover (check the private NICs and the serial line)", p.id)})
	}
}

// changeState records p's new state s, with its event.
func (m *Machine) changeState(now time.Time, p *peer, s NodeState) {
	p.partitionAlarmed = false
	p.aliveSince = time.Time{}
	if s == NodeAlive {
		p.aliveSince = now
	}
	m.emit(Event{At: now, Kind: EventNode, Node: p.id, From: p.state.String(), To: s.String()})
	if s == NodeDead && heardWithin(now, p.unconfirmed, m.cfg.Timing.Dead) {
		m.emit(Event{At: now, Kind: EventAlarm, Node: p.id, Msg: fmt.Sprintf(
			"%s is dead to this node, yet authentic frames from it that do not echo this node's run keep coming: it cannot hear this node on any medium (a one-way link), or they are replays of an earlier capture", p.id)})
	}
	p.state = s
}

// heardWithin reports whether last is set and less than d before now.
func heardWithin(now, last time.Time, d time.Duration) bool {
	return !last.IsZero() && now.Sub(last) < d
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (m *Machine) send(now time.Time) {
	if now.Before(m.nextSend) {
		return
	}
	m.nextSend, m.lastSend = now.Add(m.cfg.Timing.Keepalive), now
	m.round++
	hb := Heartbeat{Round: m.round, Term: m.Term(), Role: m.role, HasPing: m.cfg.HasPing, Eligible: m.eligible, PingScore: m.ping,
		TableVersion: m.table.Version, App: m.app}
	var tb []byte
	if m.tableDue && m.table.Version > 0 {
		tb = m.table.MarshalBinary()
		m.tableDue = false
	}
	var echo []uint64
	for _, id := range m.cfg.Nodes {
		if p := m.peers[id]; p != nil && p.nonce != 0 && !slices.Contains(echo, p.nonce) {
			echo = append(echo, p.nonce)
		}
	}
	frame := func(t MsgType, medium string, payload []byte) Outbound {
		m.seq[medium]++
		return Outbound{Medium: medium, Frame: Frame{Type: t, Boot: m.cfg.Boot, Seq: m.seq[medium], Nonce: m.cfg.Nonce,
			From: m.cfg.Self, Medium: medium, Echo: echo, Payload: payload}}
	}
	for _, md := range m.cfg.Media {
		m.ready.Send = append(m.ready.Send, frame(MsgHeartbeat, md.Name, hb.MarshalBinary()))
		if tb != nil && !md.Disk {
			m.ready.Send = append(m.ready.Send, frame(MsgTable, md.Name, tb))
		}
	}
}
