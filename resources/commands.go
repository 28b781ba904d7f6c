package resources

import (
	"fmt"
	"time"
)

// Operator commands. Each acts on this node only; the node forwards a
// command that names another node to that node. A refused command
// returns an error that says why and what to do, and changes nothing.

// Move gives the group away: it stops here and this node stays
// ineligible until a peer runs the group, then it is eligible again (the
// group stays there: stickiness). If no peer takes it, the node is
// eligible again with an alarm.
func (g *Group) Move(now time.Time) error {
	g.now = now
	defer g.settle()
	switch {
	case g.maintenance:
		return fmt.Errorf("maintenance is on on %s: run `mirrorctl maintenance off` first", g.self)
	case g.moving:
		return fmt.Errorf("the group is already moving away from %s", g.self)
	case !g.anyUp() && !(g.action != nil && g.action.kind == EffectFence):
		return fmt.Errorf("the group does not run on %s: run the move on the node that runs it", g.self)
	case g.candidate() == "":
		return fmt.Errorf("no peer can take the group (%s): nothing moved", g.whyNoCandidate())
	}
	g.moving = true
	g.log("moving the group away from %s: stopping it here; eligible again once a peer runs it", g.self)
	return nil
}

// Standby sets or clears the persistent standby flag: a node in standby
// never runs the group (it stops here if it runs). The flag is persisted
// by the node (EffectPersist) and given back in Options at start.
func (g *Group) Standby(now time.Time, on bool) error {
	g.now = now
	defer g.settle()
	if on == g.standby {
		return nil
	}
	g.standby = on
	g.emit(Effect{Kind: EffectPersist, Standby: on})
	if on {
		g.log("standby on: %s does not run the group until `mirrorctl unstandby`", g.self)
	} else {
		g.log("standby off: %s may run the group again", g.self)
	}
	return nil
}

// Maintenance pauses (on) or resumes (off) monitors and actions here.
// Resources are left as they are; answers to operations already in
// flight are still recorded. Being fenced overrides it. Leaving
// maintenance monitors every running resource at once.
func (g *Group) Maintenance(now time.Time, on bool) error {
	g.now = now
	defer g.settle()
	if on == g.maintenance {
		return nil
	}
	g.maintenance = on
	if on {
		clear(g.monitors)
		g.log("maintenance on: monitors and actions paused on %s; resources are left as they are", g.self)
		return nil
	}
	for _, r := range g.res {
		r.nextMonitor = now
	}
	g.log("maintenance off: checking every running resource now")
	return nil
}

// Restart stops the named resource and those above it, then starts them
// again. It counts no failure.
func (g *Group) Restart(now time.Time, name string) error {
	g.now = now
	defer g.settle()
	i := g.cfg.index(name)
	switch {
	case i < 0:
		return fmt.Errorf("no resource %q in the group", name)
	case g.maintenance:
		return fmt.Errorf("maintenance is on on %s: run `mirrorctl maintenance off` first", g.self)
	case g.action != nil || g.restartFrom >= 0 || !g.allIn(ResRunning):
		s, _ := g.state()
		return fmt.Errorf("the group is %s on %s, not running: nothing to restart", s, g.self)
	}
	clear(g.monitors)
	g.restartFrom = i
	g.log("restarting %s and the resources above it (operator)", name)
	return nil
}

// Cleanup forgets the failures of the named resource ("" for all); if
// the group is blocked by that resource (any, for ""), it unblocks it:
// the resources left as they were become unknown and are stopped (or
// started) again, idempotently. A cleanup of all also ends the fenced
// state: once every resource here is known stopped, the node re-registers
// its key (EffectReregister) and is eligible again.
func (g *Group) Cleanup(now time.Time, name string) error {
	g.now = now
	defer g.settle()
	if name != "" {
		i := g.cfg.index(name)
		if i < 0 {
			return fmt.Errorf("no resource %q in the group", name)
		}
		g.forget(i)
		if g.blocked != "" && g.blockedRes == i {
			g.unblock()
		}
		g.log("cleanup of %s: failures forgotten", name)
		return nil
	}
	if g.fenced && g.action != nil {
		return fmt.Errorf("%s is still stopping everything after being fenced: try again in a moment", g.self)
	}
	for i := range g.res {
		g.forget(i)
	}
	if g.blocked != "" {
		g.unblock()
	}
	g.fenceRetryAt = time.Time{}
	if g.fenced {
		g.fenced, g.fencedWhy, g.rejoin = false, "", true
		g.log("cleanup: the fenced state is cleared; this node's key is re-registered on the arrays once everything here is stopped")
	}
	g.log("cleanup: all failures forgotten")
	return nil
}

func (g *Group) forget(i int) {
	r := g.res[i]
	r.failures, r.lastErr = nil, ""
}

func (g *Group) unblock() {
	g.log("the group is no longer blocked (%s)", g.blocked)
	g.blocked, g.blockedRes = "", -1
	for _, r := range g.res {
		if r.state == ResBlocked {
			r.state = ResUnknown
		}
	}
}

// Shutdown hands the group over before mirrord exits (SIGTERM): this
// node turns ineligible and stops the group; a peer that sees it cleanly
// stopped starts the group without fencing. The node exits once Idle.
// It overrides maintenance: the volume lives in mirrord and goes when it
// exits, so what stands on it is stopped first. A blocked group (a stop
// failed, before or during the shutdown) is not Idle: mirrord stays,
// with an alarm, so that the address and the database are not left up
// on a volume that goes away; it exits once the operator has resolved
// the stop and run cleanup (the stops go on, then it is Idle). A second
// SIGTERM is the operator's way out: the node then exits without waiting
// for Idle, leaving what runs here as it is (the node implements that,
// not the Group).
func (g *Group) Shutdown(now time.Time) {
	g.now = now
	defer g.settle()
	if !g.shutdown {
		g.shutdown = true
		g.log("shutting down: stopping the group here and handing it over")
	}
}

// Idle reports that mirrord may exit: nothing is in flight and nothing
// of the group runs here (stopped, failed or fenced). Blocked is not
// idle: what a failed stop left (an address, a database) would stay up
// without its volume.
func (g *Group) Idle() bool {
	s, _ := g.state()
	return g.action == nil && s.Clean()
}

// watchShutdown says, while shutting down, that a blocked group keeps
// mirrord from exiting.
func (g *Group) watchShutdown() {
	msg := ""
	if g.shutdown && g.blocked != "" {
		msg = fmt.Sprintf("shutting down, but the group is blocked on %s (%s): mirrord stays, or what runs here would be left up without its volume. Stop it by hand and run `mirrorctl cleanup` on %s (the hand-over goes on, then mirrord exits), or send SIGTERM again to exit leaving it as it is", g.self, g.blocked, g.self)
	}
	g.note("shutdown", msg, true)
}
