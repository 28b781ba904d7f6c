package resources

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// Fixed timings of the machine (not in the config file).
const (
	// WatchdogGrace is how long past an operation's timeout the machine
	// waits for the agent's answer before it treats the operation as
	// timed out itself. The agent's ctx deadline fires first; the grace
	// absorbs a loaded box.
	WatchdogGrace = 5 * time.Second
	// FenceRetry is the pause between fencing attempts that failed.
	FenceRetry = 10 * time.Second
	// StopAllNowTimeout bounds a stop without graceful stops (kills only).
	StopAllNowTimeout = 30 * time.Second
	// FenceTimeout bounds fencing when the group has no fence resource
	// (else its start_timeout applies).
	FenceTimeout = 30 * time.Second
)

// View is membership's view as the group needs it. The node builds it
// from heartbeat's status and app blobs.
type View struct {
	// Role is this node's role proposal.
	Role heartbeat.Role
	// Term is membership's takeover term of this node's claim (heartbeat
	// View.Term).
	Term  uint64
	Peers []PeerView
}

// PeerView is one peer as membership sees it.
type PeerView struct {
	ID    heartbeat.NodeID
	State heartbeat.NodeState
	// Role is the peer's own proposal as last heard (RoleNone when it is
	// not live or not heard).
	Role heartbeat.Role
	// Term is the highest takeover term the peer advertised: a peer that
	// proposes standby with a term below this node's has not heard this
	// node's claim yet, and may still be electing itself.
	Term uint64
	// App is the peer's app state blob as last received in a beat (nil:
	// none yet). The Group decodes it; a bad one counts as none.
	App []byte
}

// Options are what the node knows at start.
type Options struct {
	// Peers are the other configured nodes (at least one). A peer that a
	// View leaves out counts as unknown: fenced before a takeover, never
	// assumed stopped. Views naming other nodes are ignored.
	Peers []heartbeat.NodeID
	// Standby is the persisted standby flag (see EffectPersist).
	Standby bool
}

// Group is the pure group machine of one node: membership views, agent
// results, ticks and operator commands in; effects out (Ready). It does
// no I/O, starts no goroutine and reads no clock: every input carries
// now. Not safe for concurrent use.
//
// Rules (each enforced here, each exercised by testdata/scenarios):
//   - Want: the group runs here only while membership proposes this node
//     active and the node is eligible: not in standby, not moving the
//     group away, not shutting down, not fenced, not yielding to a peer
//     that runs the group, and no resource at migration_threshold
//     failures within failure_timeout. Otherwise it is stopped here.
//     Start-up roles are membership's (R19).
//   - Yield to a runner: a node proposed active that runs nothing (no
//     resource running or starting) while a live, eligible peer that does
//     not claim the active role publishes a running or starting group
//     (it fenced this node and keeps the group, see below) turns
//     ineligible, so membership elects the runner; it is eligible again
//     once that peer claims the active role (stickiness keeps it there),
//     or is clean, or is no longer live. A peer that is only stopping is
//     waited for at the gate (its start-up cleanup must not cost the
//     preferred node its role), and so is one that gave up the active
//     role less than YieldGrace ago: it is handing the group over (ipfail,
//     a move) and its "stopping" is on its way; yielding to it would
//     leave it the only candidate, and it would take the role back.
//   - One action at a time (fence, start, stop, stop-all-now); start in
//     config order, stop in reverse. At start every resource is unknown
//     and is stopped (idempotent) unless the group should run: whatever a
//     crashed run left behind is cleaned up first.
//   - The takeover gate, before the first resource starts: every live
//     peer (alive, suspect, partitioned) must publish a clean group state
//     (stopped, failed, fenced; never blocked, never running) and not
//     propose itself active, or the machine waits; a partitioned peer
//     that runs the group is an alarm, never a takeover. An alive, clean
//     peer must also have yielded (propose standby, or be ineligible): a
//     peer that proposes nothing yet may be electing itself at this very
//     moment. Every peer that is not alive-clean-and-yielding (dead,
//     unknown, suspect, partitioned) is fenced first; the first resource
//     (the fence, then the volume) starts only after a successful Fence
//     of all of them. A failed fence is an alarm and is retried every
//     FenceRetry; nothing starts. Right before a fence, a node whose
//     group is fully stopped here (nothing runs, no volume open)
//     registers its key again (EffectReregister): a peer's earlier
//     takeover may have preempted it while it was a clean standby, and
//     its own fence would otherwise find it fenced. Never in the fenced
//     state: what ran here when the key went needs a cleanup first. So
//     of two simultaneous takeovers (each node thinks the other dead) the
//     later fence wins and the earlier node is fenced at its next array
//     operation; when their steps interleave across two arrays, neither
//     may win (both fenced: cleanup on one); never both.
//   - Never two writers: besides the gate, a node that runs the group and
//     loses the active proposal to a peer it fenced in this run keeps the
//     group (that peer is a fenced zombie and will stop, or runs nothing
//     and yields); otherwise the group stops here before a peer may start
//     it (the peer waits for a clean state). A fenced peer is forgotten
//     once it is alive, clean and not claiming the active role, or once
//     membership shows it restarted (its app state gone, then back: its
//     mirrord registered its key again) and it does not claim the role.
//   - Monitors every monitor_interval while the group runs. A failed
//     monitor (failed, timed out, not running) counts a failure; below
//     migration_threshold within failure_timeout the resource and those
//     above it are stopped and started again; at the threshold the group
//     stops here and the node turns ineligible (the group moves), until
//     cleanup or the failures expire. A failed or timed-out start is
//     fatal here (group.start_failure_is_fatal, default true, as
//     Pacemaker's start-failure-is-fatal): the resource's count goes to
//     migration_threshold at once and the group moves; with it off, a
//     start failure counts one failure like a monitor. A start failure
//     stops the failed resource before any new start.
//   - A stop that fails or times out blocks the group: nothing more is
//     done, the state published is blocked (peers wait) until cleanup.
//   - Shutdown (SIGTERM): ineligible, the group stops here and a peer
//     takes it without fencing; the node exits once Idle. A blocked group
//     is not Idle: mirrord stays, with an alarm, until cleanup lets the
//     stops finish (or a second SIGTERM makes the node exit anyway).
//   - Fenced (the arrays refused this node, or any agent reports Fenced):
//     stop everything at once (no graceful stop), ineligible, state
//     fenced; out until Cleanup (which re-registers once everything here
//     is known stopped) or a restart.
//   - Maintenance pauses monitors and actions (in-flight answers are
//     still recorded); leaving it monitors every running resource at once.
//     Being fenced and shutting down override it.
//   - An operation whose answer never comes is timed out by the machine
//     WatchdogGrace after its timeout; a late answer is ignored (Op).
type Group struct {
	cfg  Config
	self heartbeat.NodeID
	now  time.Time
	res  []*resource

	role  heartbeat.Role
	term  uint64 // membership's takeover term of this node
	peers []peer

	nextOp      uint64
	action      *op         // the one fence/start/stop/stop-all-now in flight
	monitors    map[int]*op // resource index -> monitor in flight
	restartFrom int         // >= 0: stop resources from here up, then start them again

	// fencedPeers were fenced for the takeover under way; reset once the
	// group is stopped here, and per peer once it is seen clean and not
	// claiming the active role, or restarted (its key registered again).
	fencedPeers  map[heartbeat.NodeID]bool
	fenceRetryAt time.Time
	// yieldTo is the live peer that runs the group while membership
	// proposes this node active and nothing runs here: this node is
	// ineligible until membership elects that peer, or it is clean or
	// gone (see the Group doc).
	yieldTo heartbeat.NodeID

	standby, maintenance, moving, shutdown bool
	fenced                                 bool   // this node was fenced; until Cleanup
	fencedWhy                              string // what said so
	rejoin                                 bool   // fenced state cleaned up: re-register once everything here is stopped
	blocked                                string // why the group is blocked ("" when not)
	blockedRes                             int    // the resource whose stop failed, -1: all (stop-all-now)

	vol VolumeKnowledge
	ack uint64

	published    []byte
	eligible     bool
	eligibleSent bool
	notes        map[string]string // topic -> last message, so each is said once
	effects      []Effect
}

type resource struct {
	spec        Resource
	state       ResourceState
	failures    []time.Time // within failure_timeout, oldest first
	lastErr     string
	lastMonitor time.Time
	nextMonitor time.Time
}

type op struct {
	id       uint64
	kind     EffectKind
	res      int // resource index; -1 for fence and stop-all-now
	victims  []heartbeat.NodeID
	timeout  time.Duration
	deadline time.Time
}

type peer struct {
	id     heartbeat.NodeID
	state  heartbeat.NodeState
	role   heartbeat.Role
	term   uint64 // the highest takeover term it advertised
	raw    []byte
	app    AppState
	hasApp bool
	// restarted: its app state went away while membership still showed
	// it (heartbeat drops a peer's app state when the peer restarts).
	restarted bool
	// gaveUpActive is when it last stopped proposing itself active.
	gaveUpActive time.Time
}

// New returns the group machine of node self at now. Its first Ready
// holds the initial SetEligible and Publish, and the stops of the
// start-up cleanup.
func New(cfg Config, self heartbeat.NodeID, opt Options, now time.Time) (*Group, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if self == "" {
		return nil, fmt.Errorf("resources: the node has no ID")
	}
	if len(opt.Peers) == 0 {
		return nil, fmt.Errorf("resources: no peer given (Options.Peers): a cluster has two nodes or more")
	}
	g := &Group{cfg: cfg, self: self, now: now, restartFrom: -1, blockedRes: -1, standby: opt.Standby,
		monitors: map[int]*op{}, fencedPeers: map[heartbeat.NodeID]bool{}, notes: map[string]string{}}
	for _, r := range cfg.Resources {
		g.res = append(g.res, &resource{spec: r})
	}
	for _, id := range opt.Peers {
		if id == self || slices.ContainsFunc(g.peers, func(p peer) bool { return p.id == id }) {
			return nil, fmt.Errorf("resources: peer %q is this node or listed twice", id)
		}
		g.peers = append(g.peers, peer{id: id, state: heartbeat.NodeUnknown})
	}
	if opt.Standby {
		g.log("standby (persisted): this node does not run the group until `mirrorctl unstandby`")
	}
	g.settle()
	return g, nil
}

// Ready returns and clears the effects produced since the last call, in
// order.
func (g *Group) Ready() []Effect {
	e := g.effects
	g.effects = nil
	return e
}

// Membership takes membership's current view.
func (g *Group) Membership(now time.Time, v View) {
	g.now = now
	defer g.settle()
	if v.Role != g.role {
		g.log("membership proposes this node %s (was %s)", v.Role, g.role)
		g.role = v.Role
	}
	g.term = v.Term
	for i := range g.peers {
		p := &g.peers[i]
		k := slices.IndexFunc(v.Peers, func(pv PeerView) bool { return pv.ID == p.id })
		if k < 0 { // left out: unknown, its state forgotten
			*p = peer{id: p.id, state: heartbeat.NodeUnknown}
			continue
		}
		pv := v.Peers[k]
		if p.role == heartbeat.RoleActive && pv.Role != heartbeat.RoleActive {
			p.gaveUpActive = now
		}
		p.state, p.role, p.term = pv.State, pv.Role, pv.Term
		if bytes.Equal(p.raw, pv.App) && (p.raw == nil) == (pv.App == nil) {
			continue
		}
		p.restarted = p.restarted || p.raw != nil && pv.App == nil
		p.raw, p.app, p.hasApp = pv.App, AppState{}, false
		if pv.App == nil {
			continue
		}
		a, err := UnmarshalAppState(pv.App)
		p.app, p.hasApp = a, err == nil
		msg := ""
		if err != nil {
			msg = fmt.Sprintf("the group state %s publishes cannot be read (%v): it counts as unknown", p.id, err)
		}
		g.note("app:"+string(p.id), msg, false)
	}
	for _, pv := range v.Peers {
		if !slices.ContainsFunc(g.peers, func(p peer) bool { return p.id == pv.ID }) {
			g.note("stranger:"+string(pv.ID), fmt.Sprintf("membership reports %s, which is not a configured peer: ignored", pv.ID), true)
		}
	}
}

// Done takes an agent's answer. An answer for an operation the machine
// gave up on (watchdog) or superseded is logged and ignored.
func (g *Group) Done(now time.Time, r Result) {
	g.now = now
	defer g.settle()
	if o := g.action; o != nil && o.id == r.Op {
		g.action = nil
		g.finish(o, r)
		return
	}
	for i, o := range g.monitors {
		if o.id == r.Op {
			delete(g.monitors, i)
			g.monitored(i, r)
			return
		}
	}
	g.log("ignored the late answer (%s) to operation %d: it was given up on or superseded", r.Outcome, r.Op)
}

// Tick advances time: the watchdog of operations in flight, failure
// expiry, due monitors, fence retries.
func (g *Group) Tick(now time.Time) {
	g.now = now
	defer g.settle()
	if o := g.action; o != nil && !now.Before(o.deadline) {
		g.action = nil
		g.alarm("%s got no answer within %v (timeout %v + grace %v): treated as timed out", g.opName(o), now.Sub(o.deadline)+o.timeout+WatchdogGrace, o.timeout, WatchdogGrace)
		g.finish(o, Result{Op: o.id, Outcome: TimedOut, Err: "no answer from the agent (watchdog)"})
	}
	for i := range g.res {
		if o := g.monitors[i]; o != nil && !now.Before(o.deadline) {
			delete(g.monitors, i)
			g.monitored(i, Result{Op: o.id, Outcome: TimedOut, Err: "no answer from the agent (watchdog)"})
		}
	}
}

// Fenced reports that the arrays refused this node (the volume saw
// RESERVATION CONFLICT, or the fence monitor found this node's key
// preempted): why says which.
func (g *Group) Fenced(now time.Time, why string) {
	g.now = now
	defer g.settle()
	g.becomeFenced(why)
}

// SetVolume takes the volume knowledge this node publishes (the engine's
// newest known state, with a Seq that grows). Knowledge the app state
// cannot carry (an unknown leg state) or older than the one published
// (calls delivered out of order) is refused with an alarm: it must never
// stop the group state from being published, nor take back what the
// peer was told.
func (g *Group) SetVolume(now time.Time, k VolumeKnowledge) {
	g.now = now
	defer g.settle()
	switch {
	case k.LegStates[0] > legStateMax || k.LegStates[1] > legStateMax:
		g.alarm("volume knowledge %d refused: leg state %v cannot be published; the peer keeps knowledge %d (a bug in the node: report it)", k.Seq, k.LegStates, g.vol.Seq)
	case k.Seq < g.vol.Seq:
		g.alarm("volume knowledge %d refused: older than knowledge %d, already published (delivered out of order: a bug in the node, report it)", k.Seq, g.vol.Seq)
	default:
		g.vol = k
	}
}

// SetAck records the Seq of the peer's volume knowledge this node has
// persisted.
func (g *Group) SetAck(now time.Time, seq uint64) {
	g.now = now
	defer g.settle()
	g.ack = seq
}

func (g *Group) emit(e Effect) { g.effects = append(g.effects, e) }

func (g *Group) log(format string, a ...any) {
	g.emit(Effect{Kind: EffectLog, Msg: fmt.Sprintf(format, a...)})
}

func (g *Group) alarm(format string, a ...any) {
	g.emit(Effect{Kind: EffectAlarm, Msg: fmt.Sprintf(format, a...)})
}

// note says msg once per topic, and again only when it changes; "" ends
// the topic silently.
func (g *Group) note(topic, msg string, alarm bool) {
	if g.notes[topic] == msg {
		return
	}
	g.notes[topic] = msg
	switch {
	case msg == "":
	case alarm:
		g.alarm("%s", msg)
	default:
		g.log("%s", msg)
	}
}

// issue starts an operation and emits its effect.
func (g *Group) issue(kind EffectKind, i int, victims []heartbeat.NodeID, timeout time.Duration) *op {
	g.nextOp++
	o := &op{id: g.nextOp, kind: kind, res: i, victims: victims, timeout: timeout, deadline: g.now.Add(timeout + WatchdogGrace)}
	e := Effect{Kind: kind, Op: o.id, Timeout: timeout, Victims: victims}
	if i >= 0 {
		e.Resource = g.res[i].spec.Name
	}
	g.emit(e)
	return o
}

func (g *Group) opName(o *op) string {
	e := Effect{Kind: o.kind, Victims: o.victims}
	if o.res >= 0 {
		e.Resource = g.res[o.res].spec.Name
	}
	return e.String()
}
