package heartbeat

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sim is an in-memory network of state machines on a fake clock, driven
// by the scenario scripts in testdata/scenarios. Frames go through the
// real Codec (HMAC) so forged, corrupted and replayed frames can be fed
// exactly as they would arrive from a socket. It is a fake of the wire
// only: every decision is the real Machine's.
type sim struct {
	t       *testing.T
	where   string
	cfg     Config
	codec   *Codec
	now     time.Time
	nodes   map[NodeID]*simNode
	cut     map[string]bool // "medium" or "medium@node"
	slots   map[string]map[NodeID][]byte
	first   map[string][]byte // first frame ever from node on medium: "node/medium"
	last    map[string][]byte // latest frame from node on medium
	stopped map[NodeID]time.Time
	delay   map[string]time.Duration // medium -> added latency
	queue   []queued                 // delayed frames
	runs    uint64                   // node starts so far: makes each run nonce new
	capture map[NodeID]*capture      // frames being recorded, by sender
	replays []*replay                // captures being played back
	stalls  map[NodeID]time.Time     // node -> end of its stall (it does not run)
	paused  map[NodeID]time.Time     // node -> start of a stall its clock does not see (a paused VM)
	terms   map[NodeID]uint64        // each node's state_dir: the highest term it recorded (Ready.Term)
	held    map[NodeID][]queued      // frames that reached a stalled node, in order
}

// capture records every frame a node sends, with its time since the
// capture began, as an attacker on every medium would.
type capture struct {
	start  time.Time
	frames []captured
}

type captured struct {
	at     time.Duration
	medium string
	b      []byte
}

// replay plays a capture back to a node at the original pace, from the
// time it started; disk frames are written back into the sender's slot.
type replay struct {
	c     *capture
	from  NodeID
	to    NodeID
	start time.Time
	next  int
}

type queued struct {
	at     time.Time
	to     NodeID
	medium string
	b      []byte
}

type simNode struct {
	id     NodeID
	m      *Machine
	events []Event
	mark   int
	read   map[string][]byte // disk slot content last read, "medium/peer"
	// lag is how far the node's clock is behind the sim's: the time it
	// spent paused without its clock advancing ("pause").
	lag time.Duration
}

// ready takes what n's machine produced, as the runner would: it records
// a higher term first (its state_dir), keeps the events and returns the
// frames to send.
func (s *sim) ready(n *simNode) []Outbound {
	rd := n.m.Ready()
	if rd.Term != 0 {
		if rd.Term < s.terms[n.id] {
			s.errorf("%s records term %d after %d: terms only grow", n.id, rd.Term, s.terms[n.id])
		}
		s.terms[n.id] = rd.Term
	}
	n.events = append(n.events, rd.Events...)
	return rd.Send
}

// at is node n's clock reading now.
func (s *sim) at(n *simNode) time.Time { return s.now.Add(-n.lag) }

var simKey = []byte("0123456789abcdef0123456789abcdef")

func newSim(t *testing.T) *sim {
	c := DefaultConfig()
	c.Cluster, c.KeyFile = "simcluster", "/dev/null"
	return &sim{t: t, cfg: c, codec: NewCodec(c.Cluster, simKey), now: time.Unix(1_700_000_000, 0),
		nodes: map[NodeID]*simNode{}, cut: map[string]bool{}, slots: map[string]map[NodeID][]byte{},
		first: map[string][]byte{}, last: map[string][]byte{}, stopped: map[NodeID]time.Time{},
		delay: map[string]time.Duration{}, capture: map[NodeID]*capture{},
		stalls: map[NodeID]time.Time{}, paused: map[NodeID]time.Time{}, held: map[NodeID][]queued{},
		terms: map[NodeID]uint64{}}
}

func (s *sim) fatalf(format string, a ...any) {
	s.t.Fatalf("%s: "+format, append([]any{s.where}, a...)...)
}
func (s *sim) errorf(format string, a ...any) {
	s.t.Errorf("%s: "+format, append([]any{s.where}, a...)...)
}

func (s *sim) media() []Medium {
	self := s.cfg.Nodes[0]
	c := s.cfg
	c.Self = self.ID
	return c.MachineConfig(1).Media
}

func (s *sim) isDisk(medium string) bool {
	for _, d := range s.cfg.Disks {
		if d.Name == medium {
			return true
		}
	}
	return false
}

func (s *sim) start(id NodeID) {
	c := s.cfg
	c.Self = id
	if err := c.Validate(); err != nil {
		s.fatalf("config: %v", err)
	}
	s.runs++
	mc := c.MachineConfig(uint64(s.now.UnixNano()))
	mc.Nonce = 0x9e3779b97f4a7c15 * s.runs // distinct and non-zero for any sane run count
	mc.Term = s.terms[id]
	m, err := NewMachine(mc, s.now)
	if err != nil {
		s.fatalf("%v", err)
	}
	s.nodes[id] = &simNode{id: id, m: m, read: map[string][]byte{}}
	delete(s.stopped, id)
}

func (s *sim) running(id NodeID) bool {
	_, stopped := s.stopped[id]
	return s.nodes[id] != nil && !stopped
}

func (s *sim) isCut(medium string, id NodeID) bool {
	return s.cut[medium] || s.cut[medium+"@"+string(id)]
}

// deliverOrHold delivers, or holds the frame while id is stalled: it
// waits in a socket buffer until the node runs again.
func (s *sim) deliverOrHold(id NodeID, medium string, b []byte) {
	if _, stalled := s.stalls[id]; stalled {
		s.held[id] = append(s.held[id], queued{s.now, id, medium, b})
		return
	}
	s.deliver(id, medium, b)
}

// deliver hands raw bytes to node id as if they arrived on medium.
func (s *sim) deliver(id NodeID, medium string, b []byte) {
	n := s.nodes[id]
	f, end, err := s.codec.Decode(b)
	if err == nil && end != len(b) {
		err = ErrMalformed
	}
	if err != nil {
		n.m.Reject(err)
	} else {
		n.m.Receive(s.at(n), medium, f)
	}
	if sends := s.ready(n); len(sends) > 0 {
		s.fatalf("%s sent frames from Receive", id)
	}
}

func (s *sim) step() {
	due := s.queue[:0:0]
	for _, q := range s.queue {
		if !q.at.After(s.now) {
			if s.running(q.to) {
				s.deliverOrHold(q.to, q.medium, q.b)
			}
		} else {
			due = append(due, q)
		}
	}
	s.queue = due
	s.playReplays()
	for _, c := range s.cfg.Nodes {
		id := c.ID
		if !s.running(id) {
			continue
		}
		n := s.nodes[id]
		if until, stalled := s.stalls[id]; stalled {
			if s.now.Before(until) {
				continue // it does not run: no slot reads, no tick, no sends
			}
			// It runs again. The worst order a runner can meet: its tick
			// comes before its link readers hand over what queued.
			delete(s.stalls, id)
			if from, ok := s.paused[id]; ok {
				// Its clock stood still: to it, no time has passed
				// since its last tick but one step.
				n.lag += s.now.Sub(from)
				delete(s.paused, id)
			}
			s.tickNode(id, n)
			for _, q := range s.held[id] {
				s.deliver(id, q.medium, q.b)
			}
			delete(s.held, id)
			s.readSlots(id, n)
			continue
		}
		// Disk slots are read before the tick, as the runner's poller does.
		s.readSlots(id, n)
		s.tickNode(id, n)
	}
}

// readSlots delivers every peer slot that changed since id last read it.
func (s *sim) readSlots(id NodeID, n *simNode) {
	for _, d := range s.cfg.Disks {
		if s.isCut(d.Name, id) {
			continue
		}
		for peer, b := range s.slots[d.Name] {
			key := d.Name + "/" + string(peer)
			last, seen := n.read[key]
			if peer == id || bytes.Equal(last, b) {
				continue
			}
			n.read[key] = b
			if seen { // the first read is a baseline, as in DiskLink.scan
				s.deliver(id, d.Name, b)
			}
		}
	}
}

// tickNode ticks node id and carries out what it sends.
func (s *sim) tickNode(id NodeID, n *simNode) {
	n.m.Tick(s.at(n))
	for _, o := range s.ready(n) {
		b, err := s.codec.Encode(o.Frame)
		if err != nil {
			s.fatalf("encode: %v", err)
		}
		key := string(id) + "/" + o.Medium
		if s.first[key] == nil {
			s.first[key] = b
		}
		s.last[key] = b
		if c := s.capture[id]; c != nil {
			c.frames = append(c.frames, captured{s.now.Sub(c.start), o.Medium, b})
		}
		if s.isCut(o.Medium, id) {
			continue
		}
		if s.isDisk(o.Medium) {
			if s.slots[o.Medium] == nil {
				s.slots[o.Medium] = map[NodeID][]byte{}
			}
			s.slots[o.Medium][id] = b
			continue
		}
		for _, peer := range s.cfg.Nodes {
			if peer.ID != id && s.running(peer.ID) && !s.isCut(o.Medium, peer.ID) && !s.cut["rx:"+o.Medium+"@"+string(peer.ID)] {
				if d := s.delay[o.Medium]; d > 0 {
					s.queue = append(s.queue, queued{s.now.Add(d), peer.ID, o.Medium, b})
					continue
				}
				s.deliverOrHold(peer.ID, o.Medium, b)
			}
		}
	}
}

// playReplays sends every replayed frame that is due: network frames to
// the target, disk frames into the sender's slot (where the target's
// slot reading finds them, as it would a rewritten slot on the array).
func (s *sim) playReplays() {
	for _, r := range s.replays {
		for ; r.next < len(r.c.frames) && r.c.frames[r.next].at <= s.now.Sub(r.start); r.next++ {
			f := r.c.frames[r.next]
			switch {
			case s.isDisk(f.medium):
				s.slots[f.medium][r.from] = f.b
			case s.running(r.to):
				s.deliverOrHold(r.to, f.medium, f.b)
			}
		}
	}
}

func (s *sim) tick(d time.Duration) {
	step := s.cfg.Timing.Keepalive / 4
	for end := s.now.Add(d); s.now.Before(end); s.now = s.now.Add(step) {
		s.step()
	}
}

func (s *sim) node(name string) *simNode {
	n := s.nodes[NodeID(name)]
	if n == nil {
		s.fatalf("node %s was never started", name)
	}
	return n
}

func (s *sim) sinceMark(n *simNode) []string {
	var out []string
	for _, e := range n.events[n.mark:] {
		out = append(out, e.String())
	}
	return out
}

func dur(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return d
}

// run executes one scenario line.
func (s *sim) run(args []string) {
	switch cmd := args[0]; cmd {
	case "cluster":
		for i, id := range args[1:] {
			n := Node{ID: NodeID(id), Address: fmt.Sprintf("192.0.2.%d", i+1)}
			for k := 1; k <= 2; k++ {
				n.Links = append(n.Links, NIC{Medium: fmt.Sprintf("nic%d", k), Address: fmt.Sprintf("10.0.%d.%d", k, i+1)})
			}
			if len(args) == 3 {
				n.Serial = "/dev/ttyS1"
			}
			s.cfg.Nodes = append(s.cfg.Nodes, n)
		}
		s.cfg.Disks = []Disk{{Name: "disk-a", SlotSize: 1024, Slots: 8}}
	case "nodisk":
		s.cfg.Disks = nil
	case "preferred":
		s.cfg.Preferred = NodeID(args[1])
	case "failback": // failback on|off: cluster.failback for nodes started from now on
		s.cfg.Failback = args[1] == "on"
	case "failbackdelay": // failbackdelay DURATION: cluster.failback_delay, likewise
		s.cfg.FailbackDelay = dur(args[1])
	case "eligible": // eligible NODE yes|no
		n := s.node(args[1])
		n.m.SetEligible(s.at(n), yes(args[2]))
		s.ready(n) // a yield is at once

	case "app": // app NODE TEXT | - (empty) | size=N (N bytes)
		if err := s.node(args[1]).m.SetAppState(appArg(args[2])); err != nil {
			s.errorf("app state: %v", err)
		}
	case "stall": // stall NODE DURATION: the node does not run (SIGSTOP, a paused VM)
		s.stalls[NodeID(args[1])] = s.now.Add(dur(args[2]))
	case "pause": // pause NODE DURATION: a stall its clock does not see (a VM paused with its monotonic clock)
		s.node(args[1])
		s.stalls[NodeID(args[1])] = s.now.Add(dur(args[2]))
		s.paused[NodeID(args[1])] = s.now
	case "pingtargets":
		s.cfg.PingTargets = args[1:]
	case "timing":
		for _, kv := range args[1:] {
			k, v, _ := strings.Cut(kv, "=")
			d := dur(v)
			switch k {
			case "keepalive":
				s.cfg.Timing.Keepalive = d
			case "warn":
				s.cfg.Timing.Warn = d
			case "dead":
				s.cfg.Timing.Dead = d
			case "initdead":
				s.cfg.Timing.InitDead = d
			}
		}
	case "start":
		for _, id := range args[1:] {
			s.start(NodeID(id))
		}
	case "stop":
		for _, id := range args[1:] {
			s.stopped[NodeID(id)] = s.now
		}
	case "cut-rx", "heal-rx": // cut-rx MEDIUM NODE: NODE stops receiving on MEDIUM only
		s.cut["rx:"+args[1]+"@"+args[2]] = cmd == "cut-rx"
	case "cut", "heal":
		key := args[1]
		if len(args) > 2 {
			key += "@" + args[2]
		}
		keys := []string{key}
		if args[1] == "network" { // every medium but the disks
			keys = nil
			for _, md := range s.media() {
				if !md.Disk {
					keys = append(keys, md.Name)
				}
			}
		}
		for _, k := range keys {
			s.cut[k] = cmd == "cut"
		}
	case "delay": // delay MEDIUM DURATION: added latency on a network medium
		s.delay[args[1]] = dur(args[2])
	case "tick":
		s.tick(dur(args[1]))
	case "mark":
		for _, n := range s.nodes {
			n.mark = len(n.events)
		}
	case "ping": // ping NODE SCORE
		s.node(args[1]).m.SetPingScore(atoi(args[2]))
	case "expect":
		s.expect(args[1:])
	case "detect": // detect OBSERVER PEER MAX: dead event within MAX of stop
		n, peer := s.node(args[1]), NodeID(args[2])
		stoppedAt, ok := s.stopped[peer]
		if !ok {
			s.fatalf("%s was not stopped", peer)
		}
		for _, e := range n.events {
			if e.Kind == EventNode && e.Node == peer && e.To == "dead" && !e.At.Before(stoppedAt) {
				if got := e.At.Sub(stoppedAt); got > dur(args[3]) {
					s.errorf("%s saw %s dead %v after it stopped, want at most %s", args[1], peer, got, args[3])
				}
				return
			}
		}
		s.errorf("%s never saw %s dead", args[1], peer)
	case "forge": // forge TO MEDIUM FROM: a frame signed with the wrong key
		f := Frame{Type: MsgHeartbeat, Boot: uint64(s.now.UnixNano()) + 1, Seq: 1 << 40, Nonce: 1, From: NodeID(args[3]), Medium: args[2],
			Payload: Heartbeat{Role: RoleActive}.MarshalBinary()}
		b, _ := NewCodec(s.cfg.Cluster, []byte("not the cluster key, an attacker")).Encode(f)
		s.deliver(NodeID(args[1]), args[2], b)
	case "corrupt", "replay", "replay-first", "cross": // OP TO MEDIUM FROM [SOURCE-MEDIUM]
		src := args[2]
		if cmd == "cross" {
			src = args[4]
		}
		key := args[3] + "/" + src
		b := slices.Clone(s.last[key])
		if cmd == "replay-first" {
			b = slices.Clone(s.first[key])
		}
		if b == nil {
			s.fatalf("no frame captured from %s", key)
		}
		if cmd == "corrupt" {
			b[20] ^= 0x40 // in the sequence number: well-formed, fails the HMAC
		}
		s.deliver(NodeID(args[1]), args[2], b)
	case "capture": // capture NODE: record all NODE sends from now on
		s.capture[NodeID(args[1])] = &capture{start: s.now}
	case "replay-capture": // replay-capture FROM TO: play FROM's capture back to TO
		c := s.capture[NodeID(args[1])]
		if c == nil || len(c.frames) == 0 {
			s.fatalf("nothing captured from %s", args[1])
		}
		delete(s.capture, NodeID(args[1]))
		s.replays = append(s.replays, &replay{c: c, from: NodeID(args[1]), to: NodeID(args[2]), start: s.now})
	case "garbage": // garbage TO MEDIUM: random bytes
		s.deliver(NodeID(args[1]), args[2], []byte("HMHB\x01\x01\x00\x05garbage garbage garbage garbage"))
	default:
		s.fatalf("unknown command %q", cmd)
	}
}

func yes(s string) bool { return s == "yes" }

// appArg is an app state in a script: "-" is empty, "size=N" is N bytes.
func appArg(a string) []byte {
	if n, ok := strings.CutPrefix(a, "size="); ok {
		return bytes.Repeat([]byte{'x'}, atoi(n))
	}
	if a == "-" {
		return []byte{}
	}
	return []byte(a)
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

func (s *sim) expect(a []string) {
	n := s.node(a[0])
	switch a[1] {
	case "role": // expect N role ROLE
		if got := n.m.Role().String(); got != a[2] {
			s.errorf("%s role = %s, want %s", a[0], got, a[2])
		}
	case "node": // expect N node PEER STATE
		if got := n.m.NodeState(NodeID(a[2])).String(); got != a[3] {
			s.errorf("%s sees %s %s, want %s", a[0], a[2], got, a[3])
		}
	case "medium": // expect N medium PEER MEDIUM STATE
		if got := n.m.MediumState(NodeID(a[2]), a[3]).String(); got != a[4] {
			s.errorf("%s sees %s on %s %s, want %s", a[0], a[3], a[2], got, a[4])
		}
	case "table": // expect N table ROW STATE TARGET|-
		row, ok := n.m.Table().Row(NodeID(a[2]))
		target := string(row.BackupTarget)
		if target == "" {
			target = "-"
		}
		if !ok || row.State.String() != a[3] || target != a[4] {
			s.errorf("%s's table row %s = %+v (version %d), want state %s target %s", a[0], a[2], row, n.m.Table().Version, a[3], a[4])
		}
	case "counter": // expect N counter NAME VALUE
		c := n.m.Counters()
		got, ok := map[string]uint64{"malformed": c.Malformed, "bad_auth": c.BadAuth, "replayed": c.Replayed,
			"unknown_node": c.UnknownNode, "wrong_medium": c.WrongMedium, "unconfirmed": c.Unconfirmed,
			"accepted": c.Accepted}[a[2]]
		if !ok {
			s.fatalf("unknown counter %q", a[2])
		}
		if got != uint64(atoi(a[3])) {
			s.errorf("%s counter %s = %d, want %s", a[0], a[2], got, a[3])
		}
	case "app": // expect N app PEER TEXT|-|size=N|unknown: the peer's app state as N sees it
		b, _, ok := n.m.PeerApp(NodeID(a[2]))
		if a[3] == "unknown" {
			if ok {
				s.errorf("%s knows %s's app state %q, want unknown", a[0], a[2], b)
			}
			return
		}
		if want := appArg(a[3]); !ok || !bytes.Equal(b, want) {
			s.errorf("%s sees %s's app state %q (known %v), want %q", a[0], a[2], b, ok, want)
		}
	case "term": // expect N term [PEER] T: N's term, or PEER's as N sees it
		v := n.m.View(s.at(n))
		got := v.Term
		if len(a) > 3 {
			p, _ := v.Peer(NodeID(a[2]))
			got = p.Term
		}
		if want := uint64(atoi(a[len(a)-1])); got != want {
			s.errorf("%s: term %d, want %d", strings.Join(a[:len(a)-1], " "), got, want)
		}
	case "eligible": // expect N eligible PEER yes|no: as N sees it
		v, _ := n.m.View(s.at(n)).Peer(NodeID(a[2]))
		if v.Eligible != yes(a[3]) {
			s.errorf("%s sees %s eligible=%v, want %s", a[0], a[2], v.Eligible, a[3])
		}
	case "active-at-most": // expect N active-at-most DURATION: no claim of the active role since the last mark lasted longer
		var from time.Time
		longest := time.Duration(0)
		for _, e := range n.events[n.mark:] {
			switch {
			case e.Kind == EventRole && e.To == "active":
				from = e.At
			case e.Kind == EventRole && e.From == "active" && !from.IsZero():
				longest, from = max(longest, e.At.Sub(from)), time.Time{}
			}
		}
		if !from.IsZero() {
			longest = max(longest, s.at(n).Sub(from))
		}
		if longest > dur(a[2]) {
			s.errorf("%s claimed the active role for %v, want at most %s", a[0], longest, a[2])
		}
	case "event", "no-event": // expect N event TEXT...: since the last mark
		want := strings.Join(a[2:], " ")
		evs := s.sinceMark(n)
		found := slices.ContainsFunc(evs, func(e string) bool { return strings.Contains(e, want) })
		if found != (a[1] == "event") {
			s.errorf("%s: event %q found=%v, events since mark:\n  %s", a[0], want, found, strings.Join(evs, "\n  "))
		}
	default:
		s.fatalf("unknown expectation %q", a[1])
	}
}

// TestScenarios runs every script in testdata/scenarios. A script is one
// command per line; '#' starts a comment.
func TestScenarios(t *testing.T) {
	files, _ := filepath.Glob("testdata/scenarios/*.txt")
	if len(files) == 0 {
		t.Fatal("no scenarios found")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			s := newSim(t)
			for i, line := range strings.Split(string(data), "\n") {
				line, _, _ = strings.Cut(line, "#")
				f := strings.Fields(line)
				if len(f) == 0 {
					continue
				}
				s.where = fmt.Sprintf("%s:%d", file, i+1)
				s.run(f)
			}
		})
	}
}
