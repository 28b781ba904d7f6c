package heartbeat

import (
	"fmt"
	"time"
)

// Stalls of this node (issue 10, finding 8).
//
// Tick expects to be called every keepalive/4 (the runner's ticker). A gap
// of more than timing.keepalive since the previous Tick means this node
// did not run: its process was stopped (SIGSTOP), its VM paused, or it was
// starved (a swap storm, a machine overloaded). Its peers may have sent
// all along; their frames wait in socket buffers, in a disk slot and in
// the runner's queue, and after the stall the runner may reach its tick
// before its link readers have handed them over. Judging then would take
// this node's own stall for the peers' silence and declare a live peer
// dead, or elect this node beside an active peer. So, after every stall:
//
//   - for one keepalive no node or medium state changes and no role is
//     decided: every medium gets a keepalive to deliver what the peers
//     sent (each peer sends on every medium every keepalive; the disk
//     slots are polled every keepalive/4) before this node judges again;
//   - the start of timing.initdead moves forward by the stall: a node
//     that did not run has not listened for its peers. For the same
//     reason it counts from the first Tick, not from NewMachine.
//
// A stall long enough to make a live peer look dead by itself (timing.dead
// less one keepalive, the normal spacing of frames) is moreover not
// counted as anyone's silence: every peer's last-heard time on every
// medium moves forward by it (never past now), so each medium has as much
// time to deliver after the stall as it had left before it. A slow medium
// (a disk slot behind an iSCSI session that must reconnect after a paused
// VM) then keeps a partitioned peer partitioned. Shorter stalls are
// counted, so that a starved node still finds a dead peer dead in time.
//
// A peer that really died during a long stall is declared dead
// timing.dead after its last frame counted in time this node was running:
// later than without the stall, never sooner. A node stalled for longer
// than timing.dead has been declared dead by its peers, which may have
// fenced it and taken over; the alarm says so (the resources layer learns
// it from the fence: RESERVATION CONFLICT). If it was active, it yields
// the role the moment it hears the takeover's later term (roles.go), even
// while it holds; a paused VM whose clock stood still notices no stall at
// all and yields the same way.
type stallState struct {
	lastTick  time.Time     // the previous Tick (zero: none yet)
	holdUntil time.Time     // no verdict before this
	count     uint64        // stalls noticed
	longest   time.Duration // the longest gap between two ticks
}

// noticeStall is the first thing Tick does.
func (m *Machine) noticeStall(now time.Time) {
	last := m.stall.lastTick
	m.stall.lastTick = now
	if last.IsZero() {
		// The first tick: this node listens from now on. Time between
		// NewMachine and the runner's first tick (start-up work, a
		// SetEligible before Run) is not listening: were initdead counted
		// from NewMachine, a late first tick would find every live peer
		// dead before hearing it and elect this node beside it.
		m.initFrom = later(m.initFrom, now)
		return
	}
	gap := now.Sub(last)
	t := m.cfg.Timing
	if gap <= t.Keepalive {
		return
	}
	m.stall.count++
	m.stall.longest = max(m.stall.longest, gap)
	m.stall.holdUntil = now.Add(t.Keepalive)
	lost := gap - t.Keepalive/4
	shift := func(at time.Time) time.Time {
		if at.IsZero() {
			return at
		}
		if at = at.Add(lost); at.After(now) {
			return now
		}
		return at
	}
	m.initFrom = shift(m.initFrom)
	long := gap >= t.Dead-t.Keepalive
	if long {
		for _, p := range m.peers {
			for md, h := range p.heard {
				p.heard[md] = shift(h)
			}
		}
	}
	if gap < t.Warn {
		return
	}
	msg := fmt.Sprintf("this node did not run for %v (process stopped, VM paused or starved): no node state or role changes for %v while the media deliver what queued", gap.Round(time.Millisecond), t.Keepalive)
	if long {
		msg += "; that time is not counted as the peers' silence"
	}
	if gap >= t.Dead {
		msg += "; its peers have declared this node dead meanwhile and may have fenced it and taken over"
	}
	m.emit(Event{At: now, Kind: EventAlarm, Msg: msg})
}

// holding reports whether verdicts are held after a stall.
func (m *Machine) holding(now time.Time) bool { return now.Before(m.stall.holdUntil) }
