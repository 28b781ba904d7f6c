package heartbeat

import (
	"bytes"
	"fmt"
	"time"
)

// What nodes advertise in their heartbeats besides liveness: the role,
// eligibility for the active role and the app state, an opaque blob of
// the resources layer (group state, volume knowledge; docs/HA.md). A
// peer's advertisement is taken only from its beats (frames that echo
// this node's run nonce, Machine.Receive), in round order.

// takeHeartbeat takes the payload of a beat from p, unless a payload of a
// newer round was taken already (this frame was delayed on a slower
// medium: the disk slot is polled, the serial line is slow).
func (m *Machine) takeHeartbeat(now time.Time, p *peer, hb Heartbeat) {
	first := p.beat.IsZero()
	p.beat = now
	if first {
		p.runSince = now
	}
	if hb.Round < p.round {
		return
	}
	p.round = hb.Round
	if hb.PingScore != p.hb.PingScore || hb.HasPing != p.hb.HasPing {
		p.pingSince = now
	}
	if hb.Eligible && !p.hb.Eligible {
		p.eligSince = now
	}
	if hb.TableVersion < m.table.Version && m.coordinator() == m.cfg.Self {
		m.tableDue = true
	}
	changed := first || !bytes.Equal(hb.App, p.hb.App)
	p.hb = hb
	if changed {
		m.emit(Event{At: now, Kind: EventApp, Node: p.id, App: bytes.Clone(hb.App)})
	}
}

// SetEligible says whether this node may hold the active role. An
// ineligible node never elects itself and yields the active role at once
// (standby, with an EventRole); it advertises its eligibility in every
// heartbeat, so peers leave it out of elections. A node that turns
// eligible again is a candidate timing.warn later, once every peer has
// heard it (a peer still deciding on the old value could elect itself
// too); an active peer stays active meanwhile and after.
func (m *Machine) SetEligible(now time.Time, ok bool) {
	if ok == m.eligible {
		return
	}
	m.eligible = ok
	m.nextSend = now // tell the peers at once
	if ok {
		m.eligibleSince = now
		return
	}
	if m.role == RoleActive {
		m.setRole(now, RoleStandby, "this node is not eligible: it yields the active role")
	}
}

// Eligible reports this node's own eligibility.
func (m *Machine) Eligible() bool { return m.eligible }

// SetAppState sets the opaque blob (at most MaxAppState bytes) this node
// advertises in every heartbeat frame from now on, on every medium, disk
// slots included. A change goes out at the next Tick, or at the first
// Tick keepalive/4 after the previous send if that one was more recent
// (with Ticks every keepalive/4: within keepalive/2), so a burst of
// changes costs at most four sends per keepalive. The blob is copied.
func (m *Machine) SetAppState(b []byte) error {
	if len(b) > MaxAppState {
		return fmt.Errorf("heartbeat: app state of %d bytes exceeds the %d byte limit", len(b), MaxAppState)
	}
	if bytes.Equal(b, m.app) {
		return nil
	}
	m.app = bytes.Clone(b)
	if due := m.lastSend.Add(m.cfg.Timing.Keepalive / 4); due.Before(m.nextSend) {
		m.nextSend = due
	}
	return nil
}

// PeerApp returns the app state of peer id from its latest beat in its
// current run and when that beat came; ok is false until one came (after
// the peer restarts, until its new run's first beat).
func (m *Machine) PeerApp(id NodeID) (b []byte, at time.Time, ok bool) {
	p := m.peers[id]
	if p == nil || p.beat.IsZero() {
		return nil, time.Time{}, false
	}
	return bytes.Clone(p.hb.App), p.beat, true
}
