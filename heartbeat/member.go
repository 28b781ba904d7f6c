package heartbeat

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"sync"
	"sync/atomic"
	"time"
)

// MemberOptions are the runner's optional collaborators.
type MemberOptions struct {
	Clock Clock // default SystemClock
	// Logf logs events and (rate-limited) refused frames; default log.Printf.
	Logf func(format string, args ...any)
	// OnEvent sees every event, in order, from the runner's goroutine; it
	// must not block (the resources layer queues them).
	OnEvent func(Event)
	// Boot is this boot's ID; default the start time in nanoseconds, which
	// grows across restarts as long as the clock does.
	Boot uint64
	// Pinger, if set, measures public connectivity (see NewPinger).
	Pinger *Pinger
	// StateDir is where the highest takeover term this node has seen is
	// kept across restarts (cluster.state_dir; LoadTerm, SaveTerm): it is
	// read at NewMember and written before a higher term is used. Empty
	// (tests): kept in memory only, and a restarted node has forgotten
	// the terms it had seen (roles.go says what that costs).
	StateDir string
}

// Member runs one node: it reads every link, feeds the state machine,
// ticks it every keepalive/4 and sends what it asks for. All I/O of the
// heartbeat happens here and in the links. Before every tick it hands the
// machine every frame that has arrived, so the machine judges on all it
// could know.
type Member struct {
	cfg   Config
	codec *Codec
	links map[string]Link
	opt   MemberOptions
	kick  chan struct{} // SetAppState/SetEligible: tick now

	mu sync.Mutex // guards m
	m  *Machine
	// lastStep is the clock's reading at the last completed step, for the
	// watchdog. It is kept as a time.Time so that SystemClock's monotonic
	// reading survives: a wall clock stepped back (NTP, an operator) can
	// then neither hide a hung loop nor, stepped forward, fake one.
	lastStep atomic.Pointer[time.Time]

	limMu   sync.Mutex // guards lim and sendErr; never held with mu
	lim     rateLimiter
	sendErr map[string]uint64
}

type inbound struct {
	medium string
	frame  []byte
}

// NewNode prepares a member for cfg.Self over links (one per medium the
// machine config lists; see OpenLinks).
func NewMember(cfg Config, key []byte, links []Link, opt MemberOptions) (*Member, error) {
	if opt.Clock == nil {
		opt.Clock = SystemClock{}
	}
	if opt.Logf == nil {
		opt.Logf = log.Printf
	}
	if opt.OnEvent == nil {
		opt.OnEvent = func(Event) {}
	}
	now := opt.Clock.Now()
	if opt.Boot == 0 {
		opt.Boot = uint64(now.UnixNano())
	}
	mc := cfg.MachineConfig(opt.Boot)
	if opt.StateDir != "" {
		t, err := LoadTerm(opt.StateDir)
		if err != nil {
			return nil, fmt.Errorf("heartbeat: %w", err)
		}
		mc.Term = t
	}
	nonce, err := runNonce()
	if err != nil {
		return nil, err
	}
	mc.Nonce = nonce
	n := &Member{cfg: cfg, codec: NewCodec(cfg.Cluster, key), links: map[string]Link{}, opt: opt, kick: make(chan struct{}, 1),
		lim:     rateLimiter{every: 10 * time.Second, last: map[string]time.Time{}, held: map[string]int{}},
		sendErr: map[string]uint64{}}
	for _, l := range links {
		n.links[l.Medium()] = l
	}
	for _, md := range mc.Media {
		if n.links[md.Name] == nil {
			return nil, fmt.Errorf("heartbeat: medium %q is configured but has no link", md.Name)
		}
	}
	m, err := NewMachine(mc, now)
	if err != nil {
		return nil, err
	}
	n.m = m
	return n, nil
}

// runNonce draws this run's nonce (see Machine.Receive): 64 random bits,
// never zero. Unlike the boot ID it needs no state_dir and no right clock
// to be new.
func runNonce() (uint64, error) {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("heartbeat: drawing the run nonce: %w", err)
		}
		if n := binary.BigEndian.Uint64(b[:]); n != 0 {
			return n, nil
		}
	}
}

// Run serves until ctx ends, then closes the links.
func (n *Member) Run(ctx context.Context) error {
	in := make(chan inbound, 64)
	var wg sync.WaitGroup
	out := map[string]chan []byte{}
	for name, l := range n.links {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for {
				f, err := l.Receive()
				if errors.Is(err, ErrClosed) || ctx.Err() != nil {
					return
				}
				if err != nil {
					n.logLimited("recv "+name, "heartbeat %s: receive: %v", name, err)
					select {
					case <-ctx.Done():
						return
					case <-time.After(100 * time.Millisecond):
					}
					continue
				}
				select {
				case in <- inbound{name, f}:
				case <-ctx.Done():
					return
				}
			}
		}()
		// One sender per link, so a slow disk or serial line never stalls
		// the others; a full queue drops the oldest frame (newer is better).
		q := make(chan []byte, 4)
		out[name] = q
		go func() {
			defer wg.Done()
			for f := range q {
				if err := l.Send(f); err != nil {
					n.limMu.Lock()
					n.sendErr[name]++
					n.limMu.Unlock()
					n.logLimited("send "+name, "heartbeat %s: send: %v", name, err)
				}
			}
		}()
	}
	tick, stop := n.opt.Clock.NewTicker(n.cfg.Timing.Keepalive / 4)
	defer func() {
		stop()
		for _, l := range n.links {
			l.Close()
		}
		for _, q := range out {
			close(q)
		}
		wg.Wait()
	}()
	if n.opt.Pinger != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.pingLoop(ctx)
		}()
	}
	n.tick(in, out)
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg := <-in:
			n.step(func(now time.Time) { n.receive(now, msg) }, out)
		case <-tick:
			n.tick(in, out)
		case <-n.kick:
			n.tick(in, out)
		}
	}
}

// tick hands the machine every frame queued so far, then ticks it, in one
// step: after a stall (SIGSTOP, a paused VM) the ticker and the frames
// that queued meanwhile are ready together, and the machine must judge
// with those frames, not before them. Frames still in a link (a socket
// buffer, a slot not yet polled) are the machine's care (stall.go).
func (n *Member) tick(in chan inbound, out map[string]chan []byte) {
	var queued []inbound
drain:
	for len(queued) < cap(in) {
		select {
		case msg := <-in:
			queued = append(queued, msg)
		default:
			break drain
		}
	}
	n.step(func(now time.Time) {
		for _, msg := range queued {
			n.receive(now, msg)
		}
		n.m.Tick(now)
	}, out)
}

// poke makes the loop tick now (without waiting for its ticker).
func (n *Member) poke() {
	select {
	case n.kick <- struct{}{}:
	default: // a tick is pending already
	}
}

// SetAppState sets the opaque blob (at most MaxAppState bytes) this node
// advertises in every heartbeat, on every medium, disk slots included. A
// change is sent at once; within a burst of changes, within keepalive/2
// (at most four sends per keepalive).
// Peers see it as PeerApp, View, Status and an EventApp. Safe to call from
// any goroutine, before Run too.
func (n *Member) SetAppState(b []byte) error {
	n.mu.Lock()
	err := n.m.SetAppState(b)
	n.mu.Unlock()
	if err != nil {
		return err
	}
	n.poke()
	return nil
}

// SetEligible says whether this node may hold the active role (see
// Machine.SetEligible): an ineligible node yields the active role at once
// (the EventRole follows from the loop) and advertises it to its peers.
// Safe to call from any goroutine, before Run too (a persisted standby).
func (n *Member) SetEligible(ok bool) {
	n.mu.Lock()
	n.m.SetEligible(n.opt.Clock.Now(), ok)
	n.mu.Unlock()
	n.poke()
}

// PeerApp returns peer id's latest app state, when the beat carrying it
// came, and whether one came in the peer's current run.
func (n *Member) PeerApp(id NodeID) (b []byte, at time.Time, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m.PeerApp(id)
}

// View returns one consistent snapshot of membership (see View).
func (n *Member) View() View {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m.View(n.opt.Clock.Now())
}

func (n *Member) pingLoop(ctx context.Context) {
	tick, stop := n.opt.Clock.NewTicker(n.cfg.PingInterval)
	defer stop()
	for {
		score, err := n.opt.Pinger.Round()
		note := ""
		if err != nil {
			n.logLimited("ping", "heartbeat: %v", err)
			note = err.Error()
		}
		n.mu.Lock()
		n.m.SetPingScore(score)
		n.m.SetPingNote(note)
		n.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
	}
}

func (n *Member) receive(now time.Time, msg inbound) {
	f, end, err := n.codec.Decode(msg.frame)
	if err == nil && end != len(msg.frame) {
		err = fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(msg.frame)-end)
	}
	if err != nil {
		n.m.Reject(err)
		n.logLimited("reject "+msg.medium, "heartbeat %s: refused a frame: %v", msg.medium, err)
		return
	}
	if err := n.m.Receive(now, msg.medium, f); err != nil {
		n.logLimited("refuse "+msg.medium, "heartbeat %s: refused a frame: %v", msg.medium, err)
	}
}

// step runs fn on the machine and carries out what it produced: a higher
// takeover term is recorded first, then the events are reported and the
// frames sent.
//
// The term is recorded after the machine is unlocked, so View and Status
// may show it a moment before its fsync ends (no peer learns it before:
// frames go after). Holding the lock through the fsync instead would let
// a hung state_dir disk freeze the resources loop too (View, SetEligible):
// a node demoted by a later takeover could not stop its group and drop
// the VIP until the disk answered. A crash inside that window restarts
// with the earlier term, so a claim can be made twice in one term; equal
// terms are settled by rank and the arrays' fence (roles.go).
func (n *Member) step(fn func(time.Time), out map[string]chan []byte) {
	n.mu.Lock()
	fn(n.opt.Clock.Now())
	rd := n.m.Ready()
	n.mu.Unlock()
	if rd.Term != 0 && n.opt.StateDir != "" {
		if err := SaveTerm(n.opt.StateDir, rd.Term); err != nil {
			// Refusing the term would leave a claim unmade or unsaid:
			// carry on with it in memory and say what that risks.
			rd.Events = append([]Event{{At: n.opt.Clock.Now(), Kind: EventAlarm, Msg: fmt.Sprintf(
				"%v; this node goes on with term %d in memory, but after a restart its first takeover may claim an earlier term than one it had seen and lose the role to a node it fenced: fix %s",
				err, rd.Term, n.opt.StateDir)}}, rd.Events...)
		}
	}
	now := n.opt.Clock.Now()
	n.lastStep.Store(&now)
	for _, e := range rd.Events {
		n.opt.Logf("heartbeat %s: %s", n.cfg.Self, e)
		n.opt.OnEvent(e)
	}
	for _, o := range rd.Send {
		b, err := n.codec.Encode(o.Frame)
		if err != nil {
			n.logLimited("encode", "heartbeat: %v", err)
			continue
		}
		q := out[o.Medium]
		select {
		case q <- b:
		default:
			select {
			case <-q:
			default:
			}
			select {
			case q <- b:
			default:
			}
		}
	}
}

func (n *Member) logLimited(key, format string, args ...any) {
	n.limMu.Lock()
	held, ok := n.lim.allow(key, n.opt.Clock.Now())
	n.limMu.Unlock()
	if !ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if held > 0 {
		msg += fmt.Sprintf(" (and %d more like it)", held)
	}
	n.opt.Logf("%s", msg)
}

// Healthy reports whether the member's loop has stepped within maxAge:
// mirrord sends systemd's WATCHDOG=1 only while it has. The age is
// measured on the clock's monotonic reading (SystemClock keeps one), so
// wall clock steps do not count. A clock without one (a test's fake) that
// runs backwards cannot vouch for the loop: that counts as unhealthy.
func (n *Member) Healthy(maxAge time.Duration) bool {
	last := n.lastStep.Load()
	if last == nil {
		return false
	}
	age := n.opt.Clock.Now().Sub(*last)
	return age >= 0 && age <= maxAge
}

// Status is the node's current view, for the control socket.
func (n *Member) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.m.Status(n.opt.Clock.Now())
	s.Cluster = n.cfg.Cluster
	for _, l := range n.links {
		if g, ok := l.(garbageCounter); ok {
			s.Rejected.SerialGarbage += g.Garbage()
		}
	}
	return s
}

// rateLimiter lets one message per key through every `every`, counting
// the ones it held back.
type rateLimiter struct {
	every time.Duration
	last  map[string]time.Time
	held  map[string]int
}

func (r *rateLimiter) allow(key string, now time.Time) (held int, ok bool) {
	if t, seen := r.last[key]; seen && now.Sub(t) < r.every {
		r.held[key]++
		return 0, false
	}
	r.last[key] = now
	held = r.held[key]
	r.held[key] = 0
	return held, true
}
