package resources

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hamirror/hamirror/heartbeat"
)

// settle runs after every input: expire failures, take the next step
// towards what the group should be, schedule monitors, publish.
func (g *Group) settle() {
	g.expireFailures()
	g.watchPeers()
	g.yield()
	g.publishEligible()
	g.reconcile()
	g.reregister()
	g.watchShutdown()
	g.scheduleMonitors()
	g.publishEligible()
	g.publishApp()
}

// reconcile issues the next action, if any: one at a time.
func (g *Group) reconcile() {
	if g.action != nil || g.blocked != "" || g.fenced || g.maintenance && !g.shutdown {
		return
	}
	if g.restartFrom >= 0 {
		if i := g.highestNotStopped(g.restartFrom); i >= 0 {
			g.stop(i)
			return
		}
		g.restartFrom = -1
	}
	z, msg := g.zombie(), ""
	if z != "" && g.isEligible() {
		msg = fmt.Sprintf("%s claims the active role but this node fenced it: keeping the group here until it finds out", z)
	}
	g.note("zombie", msg, true)
	if !g.wantRun() {
		g.note("gate", "", false)
		if i := g.highestNotStopped(0); i >= 0 {
			g.stop(i)
			return
		}
		clear(g.fencedPeers) // the next takeover fences again
		return
	}
	for i, r := range g.res {
		switch r.state {
		case ResRunning:
			continue
		case ResFailed: // a failed start may have left half of it
			g.stop(i)
			return
		}
		if i == 0 && !g.gate() {
			return
		}
		g.start(i)
		return
	}
}

// wantRun: the group should run here.
func (g *Group) wantRun() bool {
	if !g.isEligible() {
		return false
	}
	return g.role == heartbeat.RoleActive || g.zombie() != ""
}

// zombie names the peer that took the active proposal from this node
// while the group runs here, if this node fenced it in this run: a
// zombie that will find itself fenced and stop. The group stays here
// rather than stop for nothing. "" when there is none (or another live
// peer claims the role too).
func (g *Group) zombie() heartbeat.NodeID {
	if g.role == heartbeat.RoleActive || !g.anyUp() {
		return ""
	}
	var claim heartbeat.NodeID
	for _, p := range g.peers {
		if live(p.state) && p.role == heartbeat.RoleActive {
			if !g.fencedPeers[p.id] {
				return ""
			}
			claim = p.id
		}
	}
	return claim
}

func (g *Group) isEligible() bool {
	return !g.standby && !g.moving && !g.shutdown && !g.fenced && !g.rejoin && g.yieldTo == "" && g.worst() < g.cfg.MigrationThreshold
}

// YieldGrace is how long a peer that gave up the active role while it
// runs the group is given to publish that it stops, before this node,
// proposed active, yields to it as to a runner that keeps the group. Its
// "stopping" follows its role change by one heartbeat frame; a runner
// that keeps the group (it fenced this node) keeps publishing running.
const YieldGrace = 500 * time.Millisecond

// yield turns this node ineligible while membership proposes it active,
// nothing of the group runs or starts here, and a live, eligible peer
// that does not claim the active role publishes a running or starting
// group (it keeps the group because it fenced this node, or it is in the
// middle of a local restart): waiting at the gate would wait forever, so
// membership must elect the runner instead. It ends once that peer claims
// the active role (elected: stickiness keeps it there with this node
// eligible again), or is clean, or is no longer live.
func (g *Group) yield() {
	if id := g.yieldTo; id != "" {
		p := g.peers[slices.IndexFunc(g.peers, func(p peer) bool { return p.id == id })]
		why := ""
		switch {
		case !live(p.state) || !p.hasApp:
			why = fmt.Sprintf("%s is %s", id, p.state)
		case p.app.State.Clean():
			why = fmt.Sprintf("%s's group is %s", id, p.app.State)
		case p.role == heartbeat.RoleActive:
			why = fmt.Sprintf("%s is active", id)
		default:
			return
		}
		g.yieldTo = ""
		g.log("%s: this node is eligible again", why)
	}
	if g.role != heartbeat.RoleActive || g.anyUp() || !g.isEligible() {
		return
	}
	for _, p := range g.peers {
		if live(p.state) && p.hasApp && p.app.Eligible && p.role != heartbeat.RoleActive &&
			(p.app.State == GroupRunning || p.app.State == GroupStarting) && g.now.Sub(p.gaveUpActive) >= YieldGrace {
			g.yieldTo = p.id
			g.log("%s runs the group (%s) while membership proposes this node active and nothing runs here: yielding to it (ineligible until it is elected, stops or dies)", p.id, p.app.State)
			return
		}
	}
}

// gate reports whether the first resource may start: see the Group doc.
// It issues the fence when one is needed.
func (g *Group) gate() bool {
	var victims []heartbeat.NodeID
	var wait []string
	alarm := false
	for _, p := range g.peers {
		switch {
		case p.state == heartbeat.NodeAlive && p.hasApp && p.app.State.Clean() && g.yields(p):
			// cleanly stopped, heard, and it will not start the group
		case p.state == heartbeat.NodeDead || p.state == heartbeat.NodeUnknown:
			victims = append(victims, p.id)
		case !p.hasApp:
			wait = append(wait, fmt.Sprintf("%s is %s and has published no group state yet", p.id, p.state))
		case p.app.State == GroupBlocked:
			wait = append(wait, fmt.Sprintf("%s is %s and its group is blocked (%s): run `mirrorctl cleanup` on %s once that is fixed", p.id, p.state, p.app.Reason, p.id))
		case !p.app.State.Clean():
			wait = append(wait, fmt.Sprintf("%s is %s and its group is %s", p.id, p.state, p.app.State))
			if p.state == heartbeat.NodePartitioned {
				alarm = true
				wait[len(wait)-1] += ": no takeover from a partitioned node (check the private links and the serial line)"
			}
		case p.role == heartbeat.RoleActive:
			wait = append(wait, fmt.Sprintf("%s also proposes the active role", p.id))
		case p.state == heartbeat.NodeAlive:
			wait = append(wait, fmt.Sprintf("%s has not taken the standby role yet", p.id))
		default: // suspect or partitioned, clean as last heard: fence it first
			victims = append(victims, p.id)
		}
	}
	if len(wait) > 0 {
		g.note("gate", "not starting the group: "+strings.Join(wait, "; "), alarm)
		return false
	}
	var todo []heartbeat.NodeID
	for _, v := range victims {
		if !g.fencedPeers[v] {
			todo = append(todo, v)
		}
	}
	if len(todo) == 0 {
		g.note("gate", "", false)
		g.note("fence", "", false)
		return true
	}
	if g.now.Before(g.fenceRetryAt) {
		return false
	}
	g.note("gate", fmt.Sprintf("fencing %s before starting the group here", joinIDs(todo)), false)
	timeout := FenceTimeout
	if len(g.res) > 0 && g.res[0].spec.Type == TypeFence {
		timeout = g.res[0].spec.StartTimeout
	}
	if g.allIn(ResStopped) {
		// Nothing runs here and no volume is open: a peer's earlier
		// takeover may have preempted this node's key while it was a
		// clean standby, and nothing told it. Register again first, or the
		// fence would find this node "fenced" by its own attempt. Never in
		// the fenced state (reconcile does nothing then): what ran here
		// when the key went needs a cleanup first.
		g.emit(Effect{Kind: EffectReregister})
	}
	g.action = g.issue(EffectFence, -1, todo, timeout)
	return false
}

// yields: the peer will not start the group: it proposes standby having
// heard this node's claim (its term is at least this node's: a standby
// still showing an older term may be electing itself this very moment,
// over links slower than timing.warn), or it is not eligible. A peer that
// proposes nothing yet may be electing itself too.
func (g *Group) yields(p peer) bool {
	return p.role == heartbeat.RoleStandby && p.term >= g.term || p.role != heartbeat.RoleActive && !p.app.Eligible
}

func (g *Group) start(i int) {
	g.res[i].state = ResStarting
	g.action = g.issue(EffectStart, i, nil, g.res[i].spec.StartTimeout)
}

func (g *Group) stop(i int) {
	g.res[i].state = ResStopping
	g.action = g.issue(EffectStop, i, nil, g.res[i].spec.StopTimeout)
}

// finish applies the answer to the action o.
func (g *Group) finish(o *op, r Result) {
	if r.Outcome == Fenced {
		g.becomeFenced(fmt.Sprintf("%s: %s", g.opName(o), r.Err))
		return
	}
	switch o.kind {
	case EffectFence:
		if r.Outcome == OK {
			g.note("fence", "", false)
			for _, v := range o.victims {
				g.fencedPeers[v] = true
			}
			g.fenceRetryAt = g.now
			g.log("fenced %s: its keys are preempted on the arrays", joinIDs(o.victims))
			return
		}
		g.fenceRetryAt = g.now.Add(FenceRetry)
		g.note("fence", fmt.Sprintf("fencing %s %s (%s): the group does not start here while it may still run there; retrying every %v. Check that this node reaches the arrays",
			joinIDs(o.victims), r.Outcome, r.Err, FenceRetry), true)
	case EffectStart:
		res := g.res[o.res]
		if r.Outcome != OK {
			g.failure(o.res, "start", r)
			return
		}
		res.state = ResRunning
		res.nextMonitor = g.now.Add(res.spec.MonitorInterval)
	case EffectStop:
		res := g.res[o.res]
		if r.Outcome == OK || r.Outcome == NotRunning {
			res.state = ResStopped
			return
		}
		res.state = ResBlocked
		res.lastErr = fmt.Sprintf("stop %s: %s", r.Outcome, r.Err)
		g.blocked, g.blockedRes = fmt.Sprintf("stop of %s %s: %s", res.spec.Name, r.Outcome, r.Err), o.res
		g.restartFrom = -1
		g.alarm("the group is blocked on %s: %s. Nothing more is done here and no peer starts the group. Stop %s by hand (make sure nothing of it is left), then run `mirrorctl cleanup %s` on %s", g.self, g.blocked, res.spec.Name, res.spec.Name, g.self)
	case EffectStopAllNow:
		if r.Outcome == OK || r.Outcome == NotRunning {
			for _, res := range g.res {
				res.state = ResStopped
			}
			g.blocked, g.blockedRes = "", -1
			g.log("everything is stopped after this node was fenced")
			return
		}
		for _, res := range g.res {
			res.state = ResUnknown
		}
		g.blocked, g.blockedRes = fmt.Sprintf("fenced, and stopping everything at once %s: %s", r.Outcome, r.Err), -1
		g.alarm("%s: stop every resource of the group on %s by hand, then run `mirrorctl cleanup` there", g.blocked, g.self)
	}
}

// monitored applies a monitor's answer.
func (g *Group) monitored(i int, r Result) {
	res := g.res[i]
	res.lastMonitor = g.now
	res.nextMonitor = g.now.Add(res.spec.MonitorInterval)
	switch {
	case r.Outcome == OK || res.state != ResRunning:
	case r.Outcome == Fenced:
		g.becomeFenced(fmt.Sprintf("monitor %s: %s", res.spec.Name, r.Err))
	default:
		g.failure(i, "monitor", r)
	}
}

// failure counts a failed start or monitor of resource i and decides:
// restart it (and those above it) here, or give the group away.
func (g *Group) failure(i int, what string, r Result) {
	res := g.res[i]
	res.state = ResFailed
	res.failures = append(res.failures, g.now)
	res.lastErr = fmt.Sprintf("%s %s", what, r.Outcome)
	if r.Err != "" {
		res.lastErr += ": " + r.Err
	}
	clear(g.monitors)
	n, limit := len(res.failures), g.cfg.MigrationThreshold
	if what == "start" && g.cfg.StartFailureIsFatal {
		for len(res.failures) < limit {
			res.failures = append(res.failures, g.now)
		}
		g.restartFrom = -1
		g.alarm("%s of %s on %s (%s): a failed start is fatal on this node (group.start_failure_is_fatal): failure count %d of %d, the group leaves this node (ineligible until `mirrorctl cleanup %s`%s)",
			what, res.spec.Name, g.self, res.lastErr, len(res.failures), limit, res.spec.Name, g.expiry())
		return
	}
	if n >= limit {
		g.restartFrom = -1
		g.alarm("%s of %s on %s (%s): failure %d of %d%s: migration threshold reached, the group leaves this node (ineligible until `mirrorctl cleanup %s`%s)",
			what, res.spec.Name, g.self, res.lastErr, n, limit, g.window(), res.spec.Name, g.expiry())
		return
	}
	g.alarm("%s of %s on %s (%s): failure %d of %d%s: restarting %s and the resources above it", what, res.spec.Name, g.self, res.lastErr, n, limit, g.window(), res.spec.Name)
	if g.restartFrom < 0 || i < g.restartFrom {
		g.restartFrom = i
	}
}

func (g *Group) window() string {
	if g.cfg.FailureTimeout == 0 {
		return ""
	}
	return fmt.Sprintf(" within %v", g.cfg.FailureTimeout)
}

func (g *Group) expiry() string {
	if g.cfg.FailureTimeout == 0 {
		return ""
	}
	return fmt.Sprintf(" or until the failures are %v old", g.cfg.FailureTimeout)
}

// becomeFenced: stop everything at once, ineligible, out until Cleanup.
func (g *Group) becomeFenced(why string) {
	if g.fenced {
		return
	}
	g.fenced, g.fencedWhy, g.rejoin = true, why, false
	g.action, g.restartFrom = nil, -1 // answers to what was in flight are ignored
	clear(g.monitors)
	g.alarm("this node was fenced (%s): a peer has taken the arrays over. Stopping everything at once; %s stays out of the cluster until `mirrorctl cleanup` (or a restart of mirrord) once the cause is understood", why, g.self)
	if g.allIn(ResStopped) {
		return
	}
	for _, r := range g.res {
		r.state = ResStopping
	}
	g.action = g.issue(EffectStopAllNow, -1, nil, StopAllNowTimeout)
}

// reregister ends a cleanup of the fenced state: this node's key goes
// back on the arrays only once every resource here is known stopped (a
// failed stop-all-now may have left the volume open: with the key back,
// its writes would land beside the new owner's). Until then the node is
// ineligible.
func (g *Group) reregister() {
	if !g.rejoin || g.action != nil || !g.allIn(ResStopped) {
		return
	}
	g.rejoin = false
	g.emit(Effect{Kind: EffectReregister})
	g.log("everything is stopped here: re-registering this node's key on the arrays")
}

// scheduleMonitors issues the due monitors while the group runs.
func (g *Group) scheduleMonitors() {
	if g.action != nil || g.maintenance || g.fenced || g.blocked != "" || g.restartFrom >= 0 || !g.allIn(ResRunning) {
		return
	}
	for i, r := range g.res {
		if r.spec.MonitorInterval > 0 && g.monitors[i] == nil && !g.now.Before(r.nextMonitor) {
			g.monitors[i] = g.issue(EffectMonitor, i, nil, r.spec.MonitorTimeout)
		}
	}
}

// expireFailures forgets failures older than failure_timeout.
func (g *Group) expireFailures() {
	if g.cfg.FailureTimeout == 0 {
		return
	}
	was := g.worst() >= g.cfg.MigrationThreshold
	for _, r := range g.res {
		k := 0
		for k < len(r.failures) && g.now.Sub(r.failures[k]) >= g.cfg.FailureTimeout {
			k++
		}
		r.failures = r.failures[k:]
	}
	if was && g.worst() < g.cfg.MigrationThreshold {
		g.log("failures older than %v expired: below migration_threshold again, this node may run the group", g.cfg.FailureTimeout)
	}
}

// watchPeers notices what peers do: dual running, the end of a move, a
// fenced peer that came back clean.
func (g *Group) watchPeers() {
	for i := range g.peers {
		p := &g.peers[i]
		clean := p.hasApp && p.app.State.Clean()
		// alive, as the gate wants it to spare a peer: a partitioned one is
		// fenced even when clean, so forgetting it would fence it again
		if g.fencedPeers[p.id] && p.state == heartbeat.NodeAlive && clean && p.role != heartbeat.RoleActive {
			delete(g.fencedPeers, p.id)
		}
		// restarted: its mirrord registered its key again and stops what
		// its old run left. Not while it claims the active role: its new
		// run may be yielding to this node right now, and forgetting it
		// would stop the group here (it is no zombie to keep it from).
		if p.restarted && p.hasApp && p.role != heartbeat.RoleActive {
			p.restarted = false
			if g.fencedPeers[p.id] {
				delete(g.fencedPeers, p.id)
				g.log("%s restarted: its mirrord registered its key again; it no longer counts as fenced by this node", p.id)
			}
		}
		dual := ""
		if g.anyUp() && live(p.state) && p.hasApp && (p.app.State == GroupRunning || p.app.State == GroupStarting) {
			dual = fmt.Sprintf("both %s and %s run the group (%s is %s)", g.self, p.id, p.id, p.app.State)
		}
		g.note("dual:"+string(p.id), dual, true)
	}
	if !g.moving {
		return
	}
	for _, p := range g.peers {
		if live(p.state) && p.hasApp && p.app.State == GroupRunning {
			g.moving = false
			g.log("%s runs the group: the move is done, this node is eligible again (the group stays there)", p.id)
			return
		}
	}
	if g.action == nil && g.allIn(ResStopped) && g.candidate() == "" {
		g.moving = false
		g.alarm("the move failed: no peer can take the group (%s); this node is eligible again", g.whyNoCandidate())
	}
}

// candidate is a peer that can take the group, or "".
func (g *Group) candidate() heartbeat.NodeID {
	for _, p := range g.peers {
		if canTake(p) {
			return p.id
		}
	}
	return ""
}

func canTake(p peer) bool {
	a := p.app
	return p.state == heartbeat.NodeAlive && p.hasApp && a.Eligible && !a.Standby && !a.Maintenance &&
		a.State != GroupBlocked && a.State != GroupFenced && a.State != GroupFailed
}

func (g *Group) whyNoCandidate() string {
	var why []string
	for _, p := range g.peers {
		a := p.app
		switch {
		case p.state != heartbeat.NodeAlive:
			why = append(why, fmt.Sprintf("%s is %s", p.id, p.state))
		case !p.hasApp:
			why = append(why, fmt.Sprintf("%s publishes no group state", p.id))
		case a.Standby:
			why = append(why, fmt.Sprintf("%s is in standby", p.id))
		case a.Maintenance:
			why = append(why, fmt.Sprintf("%s is in maintenance", p.id))
		case !a.Eligible || !canTake(p):
			why = append(why, fmt.Sprintf("%s is %s and not eligible", p.id, a.State))
		}
	}
	if len(why) == 0 {
		return "no peer"
	}
	return strings.Join(why, ", ")
}

// publishEligible emits SetEligible when eligibility changed.
func (g *Group) publishEligible() {
	if el := g.isEligible(); !g.eligibleSent || el != g.eligible {
		g.eligible, g.eligibleSent = el, true
		g.emit(Effect{Kind: EffectSetEligible, Eligible: el})
	}
}

// publishApp emits Publish when the app state changed.
func (g *Group) publishApp() {
	a := g.AppState()
	b, err := a.Marshal()
	if err != nil { // cannot happen with a validated config: say so loudly
		g.alarm("cannot encode this node's group state: %v", err)
		return
	}
	if !bytes.Equal(b, g.published) {
		g.published = b
		g.emit(Effect{Kind: EffectPublish, App: a, Data: b})
	}
}

// state is the group's state and the resource being acted on.
func (g *Group) state() (GroupState, string) {
	if g.blocked != "" {
		if g.blockedRes >= 0 {
			return GroupBlocked, g.res[g.blockedRes].spec.Name
		}
		return GroupBlocked, ""
	}
	if o := g.action; o != nil {
		name := ""
		if o.res >= 0 {
			name = g.res[o.res].spec.Name
		}
		switch o.kind {
		case EffectFence, EffectStart:
			return GroupStarting, name
		default:
			return GroupStopping, name
		}
	}
	switch {
	case g.fenced:
		return GroupFenced, ""
	case g.allIn(ResStopped) && g.worst() >= g.cfg.MigrationThreshold:
		return GroupFailed, ""
	case g.allIn(ResStopped):
		return GroupStopped, ""
	case g.allIn(ResRunning) && g.restartFrom < 0:
		return GroupRunning, ""
	case g.wantRun() && g.restartFrom < 0:
		return GroupStarting, ""
	}
	return GroupStopping, ""
}

// reason says why the group is blocked, fenced or failed.
func (g *Group) reason(s GroupState) string {
	switch s {
	case GroupBlocked:
		return g.blocked
	case GroupFenced:
		return "fenced: " + g.fencedWhy
	case GroupFailed:
		for _, r := range g.res {
			if len(r.failures) >= g.cfg.MigrationThreshold {
				return fmt.Sprintf("%s failed %d times%s (%s)", r.spec.Name, len(r.failures), g.window(), r.lastErr)
			}
		}
	}
	return ""
}

// AppState is what this node publishes now.
func (g *Group) AppState() AppState {
	s, cur := g.state()
	a := AppState{State: s, Current: cur, Eligible: g.isEligible(), Standby: g.standby, Maintenance: g.maintenance,
		Reason: cut(g.reason(s), MaxReasonBytes), Volume: g.vol, Ack: g.ack}
	for _, r := range g.res {
		a.Failures = append(a.Failures, uint8(min(len(r.failures), 255)))
	}
	return a
}

// cut makes s printable (valid UTF-8, each control character a space:
// an agent's error may hold a command's output) and shortens it to at
// most n bytes on a rune boundary.
func cut(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if control(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

func (g *Group) worst() int {
	n := 0
	for _, r := range g.res {
		n = max(n, len(r.failures))
	}
	return n
}

func (g *Group) allIn(s ResourceState) bool {
	for _, r := range g.res {
		if r.state != s {
			return false
		}
	}
	return true
}

// anyUp: some resource runs or is being started here.
func (g *Group) anyUp() bool {
	for _, r := range g.res {
		if r.state == ResRunning || r.state == ResStarting {
			return true
		}
	}
	return false
}

// highestNotStopped is the highest resource from index from up that is
// not known stopped, or -1.
func (g *Group) highestNotStopped(from int) int {
	for i := len(g.res) - 1; i >= from; i-- {
		if g.res[i].state != ResStopped {
			return i
		}
	}
	return -1
}

func live(s heartbeat.NodeState) bool {
	return s == heartbeat.NodeAlive || s == heartbeat.NodeSuspect || s == heartbeat.NodePartitioned
}

func joinIDs(ids []heartbeat.NodeID) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = string(id)
	}
	return strings.Join(s, " ")
}
