package heartbeat

import (
	"fmt"
	"time"
)

// Roles (R19) and the index table's owner. Rules, in order:
//   - an ineligible node (SetEligible(false): standby, failures, fenced, a
//     move away) never holds the active role: it yields at once;
//   - an active node yields at once to a live peer whose claim of the
//     active role is later than its own: a higher term, or the same term
//     and the peer ranks first (split brain healed, with an alarm); even
//     while it waits after a stall of its own (stall.go);
//   - otherwise an active node stays active, unless an alive peer reaches
//     more public ping targets than this node for timing.dead (ipfail;
//     with cluster.failback, a preferred node's score that improved less
//     than cluster.failback_delay ago waits like a fail-back, unless this
//     node reaches none), or cluster.failback is on and the preferred
//     node is alive, eligible and in its current run, all for
//     max(timing.warn, cluster.failback_delay), with a ping score
//     unchanged for the delay and no lower than this node's (fail-back);
//   - a node that sees a live active peer is standby;
//   - while any peer is suspect, or unknown within timing.initdead, nobody
//     is elected (its fate is open), nor for one keepalive after this node
//     stalled (stall.go);
//   - otherwise the best candidate becomes active, in a new term: this
//     node if it is eligible (and has been for timing.warn, if it was
//     ineligible during this run), and every live peer (alive, suspect or
//     partitioned) that advertises eligibility; better public
//     connectivity first (once both scores have been unchanged for
//     timing.warn, so every node has heard them), then the preferred
//     node, then the smallest node ID. Every node computes the same winner
//     from the same view, so simultaneous starts agree. With no candidate,
//     an ineligible node is standby (and says, once, that no node is
//     eligible).
// A partitioned peer is live: a standby never takes over from it.
//
// Terms. A node that becomes active claims a new term: the highest it
// knows plus one. It knows every term it claimed or heard (each authentic
// heartbeat carries its sender's term: its claim's while it proposes
// active, else the highest it knows) and keeps the highest across
// restarts (Ready.Term, recorded in state_dir before use; LoadTerm). So a
// takeover's term is later than every claim its node had heard of, above
// all the claim of the node it took over from, and the later claim wins
// where two meet:
//   - a node that stalls or is paused while active (SIGSTOP, a paused VM,
//     even one whose clock stood still, so that it notices nothing) comes
//     back claiming its old term. Its peer found it dead, fenced it and
//     took over in a later term: the stale claim yields the moment it
//     hears that, and the service does not go back to the fenced node
//     (rank alone would give it back whenever the stale node ranks first);
//   - after a partition in which each found the other dead, the claim
//     made knowing the other's term wins; claims made without hearing of
//     each other (a full cut) may be equal, and then rank decides;
//   - nodes that elect themselves at the same moment knew the same terms,
//     claim the same one, and rank decides, as every node computes alike.
// A later claim is not a later fence. Claims made during a cut never
// heard of each other, and a claim's fence may land long after it (a
// failed fence is retried every resources.FenceRetry, the arrays are
// fenced one by one) or never (no array reachable). Only the arrays know
// whose fence landed last, and the resources layer goes by them: a node
// that fenced a peer in this run keeps running the group while that peer
// claims the role (a zombie: resources.Group), and a fenced node meets
// RESERVATION CONFLICT, or the new owner's MMP block, within
// volume.mmp_interval, stops at once and turns ineligible, which hands
// the role to the other in a later term. So where a later term or rank
// picks the fenced node, the role follows the writes one detection later,
// never two writers (testdata/scenarios/equal_term_*.txt); where a
// claim's fence never landed, its later term still takes the role from a
// healthy active node: a move, and a move back if the claimant's start
// fails too (failed_claim_meets_active.txt).
//
// For the same reason a standby defers to every live peer that claims
// the active role, even one whose claim is older than a term it knows (it
// took over itself and restarted since, or heard of a later claim): the
// term proves no fence landed (failed_claim_*.txt), and deferring costs
// at most one step where one did, since a node proposed active waits at
// its gate for a live peer to be clean before it starts, and a fenced
// peer is clean only once it found the fence and turned ineligible
// (stale_claim_*.txt).
//
// The limit: a node takes over in a term later than the claims it has
// heard of. One that was down while its peer took over, and comes back
// while that peer is stopped or paused (or has lost its state_dir), knows
// no later claim; the peer's stale claim may then win when it runs again.
// That peer was fenced, so it finds itself fenced (RESERVATION CONFLICT),
// stops and turns ineligible, while this node, which fenced it in this
// run, keeps the group running and claims the role again: never two
// writers.
//
// What the resources layer must assume. Two live nodes may both propose
// active for a while: after a partition in which each found the other
// dead (each fences before it starts anything), and when both become
// candidates together while the news travels slower than timing.warn
// (each elects itself before it can hear that the other turned eligible
// too: testdata/scenarios/eligible_together_over_slow_links.txt). Nothing
// resolves that before the claims reach each other; then the earlier
// claim yields at its first tick (within keepalive/4). So a proposal of
// active is not a lease: the resources layer must never start the group
// while a live peer proposes active (its gate already refuses to), and
// must take a live peer's standby for a yield to this node's claim only
// once the peer has heard the claim, PeerView.Term >= View.Term: a
// standby advertised before it says nothing about what the peer does next
// (it may be electing itself right now, as this node did).

// rank orders nodes for deterministic ties: the preferred node first,
// then by node ID.
func (m *Machine) before(a, b NodeID) bool {
	if (a == m.cfg.Preferred) != (b == m.cfg.Preferred) {
		return a == m.cfg.Preferred
	}
	return a < b
}

// pingOf is a candidate's ping score and whether it is settled: unchanged
// for timing.warn, so that every node has heard it. A score that just
// moved is seen differently by each node for up to a keepalive, and two
// nodes deciding on different scores could both elect themselves.
func (m *Machine) pingOf(id NodeID, now time.Time) (has bool, score uint8, settled bool) {
	if id == m.cfg.Self {
		return m.cfg.HasPing, m.ping, now.Sub(m.pingSince) >= m.cfg.Timing.Warn
	}
	p := m.peers[id]
	return p.hb.HasPing, p.hb.PingScore, now.Sub(p.pingSince) >= m.cfg.Timing.Warn
}

// better compares two candidates for the active role when none is
// active: better public connectivity first (ipfail) while both scores are
// settled, then rank. ipfail's handover (checkPing) moves the role later
// if the rank-elected node turns out to reach fewer targets.
func (m *Machine) better(a, b NodeID, now time.Time) bool {
	ha, pa, sa := m.pingOf(a, now)
	hb, pb, sb := m.pingOf(b, now)
	if ha && hb && sa && sb && pa != pb {
		return pa > pb
	}
	return m.before(a, b)
}

func (m *Machine) setRole(now time.Time, r Role, why string) {
	if r == m.role {
		return
	}
	if r == RoleActive && m.term >= maxTerm {
		// A claim above maxTerm would be malformed to every peer and
		// refused by LoadTerm at the next start. Terms grow by one per
		// takeover, so only a corrupt or forged term gets here.
		if !m.termAlarm {
			m.termAlarm = true
			m.emit(Event{At: now, Kind: EventAlarm, Msg: fmt.Sprintf("cannot take the active role: the takeover term is at its limit %d (a corrupt or forged term): stop mirrord on every node, remove %s from each state_dir, start again", uint64(maxTerm), termFile)})
		}
		return
	}
	m.claim = 0
	if r == RoleActive {
		m.learnTerm(now, m.term+1)
		m.claim = m.term
		why += fmt.Sprintf("; term %d", m.claim)
	}
	m.emit(Event{At: now, Kind: EventRole, From: m.role.String(), To: r.String(), Msg: why})
	m.role = r
	m.nextSend = now // tell the peers at once
}

func (m *Machine) decideRole(now time.Time) {
	var active []NodeID
	waiting := false // a peer's fate is open: suspect, or unknown within initdead
	for _, id := range m.cfg.Nodes {
		p := m.peers[id]
		if p == nil {
			continue
		}
		if p.state.live() && p.hb.Role == RoleActive {
			active = append(active, id)
		}
		if p.state == NodeSuspect || p.state == NodeUnknown {
			waiting = true
		}
	}
	if m.role == RoleActive && !m.eligible {
		m.setRole(now, RoleStandby, "this node is not eligible: it yields the active role")
		return
	}
	if m.role == RoleActive {
		if m.yieldToLaterClaim(now) {
			return
		}
		m.dualAlarm = false
		m.noneAlarm = false
		m.checkPing(now)
		m.checkFailback(now)
		return
	}
	if len(active) > 0 {
		m.noneAlarm = false
		m.setRole(now, RoleStandby, fmt.Sprintf("%s is active", active[0]))
		return
	}
	if waiting {
		return
	}
	winner := m.elect(now)
	switch {
	case winner == m.cfg.Self:
		m.setRole(now, RoleActive, "no node is active and this node ranks first")
	case winner != "":
		m.setRole(now, RoleStandby, fmt.Sprintf("%s ranks first", winner))
	case !m.eligible:
		m.setRole(now, RoleStandby, "this node is not eligible")
		if !m.noneAlarm {
			m.emit(Event{At: now, Kind: EventAlarm, Msg: "no live node is eligible for the active role: the service runs nowhere (standby, failures or fencing on every node; mirrorctl unstandby or cleanup)"})
		}
		m.noneAlarm = true
		return
	}
	// No candidate but this node, eligible again for less than
	// timing.warn: it waits until every peer has heard that.
	m.noneAlarm = false
}

// Term is this node's takeover term as it advertises it: while it
// proposes active, the term of that claim; otherwise the highest it knows.
func (m *Machine) Term() uint64 {
	if m.role == RoleActive {
		return m.claim
	}
	return m.term
}

// learnTerm raises the highest term this node knows to t: the runner
// records it (Ready.Term), and the peers hear it at once.
func (m *Machine) learnTerm(now time.Time, t uint64) {
	if t <= m.term {
		return
	}
	m.term, m.ready.Term = t, t
	m.nextSend = now
}

// yieldToLaterClaim makes an active node standby when a live peer claims
// the role later: in a higher term, or in the same term and ranking first.
// Of two claims that meet, exactly one is later, on both nodes alike.
func (m *Machine) yieldToLaterClaim(now time.Time) bool {
	if m.role != RoleActive {
		return false
	}
	for _, id := range m.cfg.Nodes {
		p := m.peers[id]
		if p == nil || !p.state.live() || p.hb.Role != RoleActive ||
			p.hb.Term < m.claim || p.hb.Term == m.claim && !m.before(id, m.cfg.Self) {
			continue
		}
		why := fmt.Sprintf("%s took the role later (term %d, this node's %d)", id, p.hb.Term, m.claim)
		if p.hb.Term == m.claim {
			why = fmt.Sprintf("%s claimed it in the same term %d and ranks first", id, m.claim)
		}
		if !m.dualAlarm {
			m.emit(Event{At: now, Kind: EventAlarm, Node: id, Msg: fmt.Sprintf("both %s and %s propose the active role; %s yields: %s (split brain must be fenced)", id, m.cfg.Self, m.cfg.Self, why)})
			m.dualAlarm = true
		}
		m.setRole(now, RoleStandby, why)
		return true
	}
	return false
}

// candidate reports whether this node may be elected now.
func (m *Machine) candidate(now time.Time) bool {
	return m.eligible && (m.eligibleSince.IsZero() || now.Sub(m.eligibleSince) >= m.cfg.Timing.Warn)
}

// elect returns the best candidate for the active role, "" if none: this
// node if it is a candidate, and every live peer that advertises that it
// is eligible.
func (m *Machine) elect(now time.Time) NodeID {
	var winner NodeID
	if m.candidate(now) {
		winner = m.cfg.Self
	}
	for _, id := range m.cfg.Nodes {
		p := m.peers[id]
		if p != nil && p.state.live() && p.hb.Eligible && (winner == "" || m.better(id, winner, now)) {
			winner = id
		}
	}
	return winner
}

// checkFailback hands the active role back to the preferred node when
// cluster.failback is on and that node has been alive, eligible and in
// its current run for max(timing.warn, cluster.failback_delay), with a
// ping score unchanged for the delay (hysteresis: a node that flaps, or
// whose cable flaps, does not pull the service back and forth), unless
// this node reaches more public ping targets (ipfail would only move the
// role back) or the scores are not settled.
// The election that follows picks the preferred node on every node.
func (m *Machine) checkFailback(now time.Time) {
	pref := m.cfg.Preferred
	p := m.peers[pref]
	if !m.cfg.Failback || m.role != RoleActive || p == nil {
		return
	}
	w := max(m.cfg.Timing.Warn, m.cfg.FailbackDelay)
	if p.state != NodeAlive || now.Sub(p.aliveSince) < w || !p.hb.Eligible || now.Sub(p.eligSince) < w || now.Sub(p.runSince) < w {
		return
	}
	hs, ps, ss := m.pingOf(m.cfg.Self, now)
	hp, pp, sp := m.pingOf(pref, now)
	if hs && hp && (!ss || !sp || ps > pp) {
		return
	}
	if hp && now.Sub(p.pingSince) < m.cfg.FailbackDelay {
		return // its public link has not been steady for the delay
	}
	m.setRole(now, RoleStandby, fmt.Sprintf("failback: the preferred node %s is alive and eligible", pref))
}

// checkPing yields the active role when an alive, eligible peer has
// reached more public ping targets than this node for timing.dead
// (hysteresis). An ineligible peer would not take the role: yielding to
// it would only make this node elect itself again.
func (m *Machine) checkPing(now time.Time) {
	for _, id := range m.cfg.Nodes {
		p := m.peers[id]
		if p == nil {
			continue
		}
		if !(m.cfg.HasPing && p.state == NodeAlive && p.hb.Eligible && p.hb.HasPing && p.hb.PingScore > m.ping) {
			p.betterSince = time.Time{}
			continue
		}
		if p.betterSince.IsZero() {
			p.betterSince = now
		}
		if id == m.cfg.Preferred && m.cfg.Failback && m.ping > 0 && now.Sub(p.pingSince) < m.cfg.FailbackDelay {
			continue // its better score is new: a fail-back, dampened alike
		}
		if now.Sub(p.betterSince) >= m.cfg.Timing.Dead {
			m.emit(Event{At: now, Kind: EventAlarm, Node: id, Msg: fmt.Sprintf("%s reaches %d public ping targets, this node %d: handing over the active role", id, p.hb.PingScore, m.ping)})
			m.setRole(now, RoleStandby, "a peer has better public connectivity")
			p.betterSince = time.Time{}
			return
		}
	}
}

// coordinator is the node that owns the index table: the active node, or
// the first-ranked live node when none is active (start-up).
func (m *Machine) coordinator() NodeID {
	if m.role == RoleActive {
		return m.cfg.Self
	}
	best := m.cfg.Self
	for _, id := range m.cfg.Nodes {
		p := m.peers[id]
		if p == nil || !p.state.live() {
			continue
		}
		if p.hb.Role == RoleActive {
			return id
		}
		if m.before(id, best) {
			best = id
		}
	}
	return best
}

// maintainTable lets the coordinator build the table and re-assign it
// when nodes fail (R9) or come back.
func (m *Machine) maintainTable(now time.Time) {
	if m.coordinator() != m.cfg.Self || m.role != RoleActive {
		return
	}
	changed := false
	if m.table.Version == 0 {
		m.table = BuildTable(m.cfg.Nodes, m.cfg.Addresses, m.cfg.Self, 0)
		changed = true
	}
	if m.table.Coordinator != m.cfg.Self {
		m.table.Coordinator = m.cfg.Self
		changed = true
	}
	for _, id := range m.cfg.Nodes {
		p := m.peers[id]
		switch {
		case p == nil:
		case p.state == NodeDead:
			changed = m.table.Fail(id) || changed
		case p.state == NodeAlive || p.state == NodePartitioned:
			changed = m.table.Rejoin(id) || changed
		}
	}
	if changed {
		m.table = m.table.Clone()
		m.table.Version++
		m.tableDue = true
		m.emit(Event{At: now, Kind: EventTable, To: fmt.Sprintf("version %d built by %s", m.table.Version, m.cfg.Self)})
	}
}
