package registry

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// Config is what the coordinator machine needs.
type Config struct {
	Self      heartbeat.NodeID
	Nodes     []heartbeat.NodeID // configured order: the backup ring
	Preferred heartbeat.NodeID
	Addresses map[heartbeat.NodeID][]string
	// Failback: a node that ranks first and returns after another took the
	// coordinator role over takes it back once it has caught up. Default
	// false: the role stays where it is (like resource stickiness).
	Failback bool
	// RejoinHold keeps a node that another reported as a failed backup
	// target Failed for this long even if it registers (it is alive, but
	// the sender could not reach it): a broken link between two nodes then
	// flips the table at most once per hold, not every second.
	RejoinHold time.Duration
}

// ErrNotCoordinator is returned by requests only the coordinator serves.
var ErrNotCoordinator = errors.New("registry: not the coordinator")

// Machine is the coordinator's decisions, pure: membership views, tables
// and requests in, a table to persist and send out.
//
// Rules:
//   - Nothing is decided before the node has caught up (SetCaughtUp): a
//     node that returns carries an old table and must first learn the
//     current one (and the logs and traffic data it missed).
//   - No table yet: the first-ranked live node builds it (the preferred
//     node, else the smallest ID), once no node's fate is unknown.
//   - The table's coordinator keeps the role while it is live (alive,
//     suspect or partitioned); when it is dead or removed, the first-ranked
//     live Normal node takes over with the full table it holds, in a new
//     term, and marks the old one Failed (R13).
//   - The coordinator marks dead nodes Failed and re-assigns their
//     dependants (R9); a node reported by another as a failed backup
//     target is marked Failed too, unless the reporter is Failed itself. A Failed node is Normal again only when
//     it registers while live (a node that sees itself Failed registers),
//     and, if it was reported, not before Config.RejoinHold has passed
//     unless it restarted since (a new run).
//   - Handback: with Failback, a caught-up node that ranks first asks the
//     coordinator for the role; the coordinator hands it over in a new term.
type Machine struct {
	cfg      Config
	table    Table
	view     map[heartbeat.NodeID]heartbeat.NodeState
	caughtUp bool
	reported map[heartbeat.NodeID]report // Failed on another's report
	changed  bool
	handback bool // ask the coordinator for the role
	events   []string
}

type report struct {
	at  time.Time
	run uint64 // the reported node's run then: a new run ends the hold
}

// NewMachine starts from the table saved on disk (or an empty one).
func NewMachine(cfg Config, saved Table) *Machine {
	return &Machine{cfg: cfg, table: saved.Clone(), view: map[heartbeat.NodeID]heartbeat.NodeState{},
		reported: map[heartbeat.NodeID]report{}}
}

// Table returns a copy of the current table.
func (m *Machine) Table() Table { return m.table.Clone() }

// IsCoordinator reports whether this node holds the role.
func (m *Machine) IsCoordinator() bool {
	return m.table.Version > 0 && m.table.Coordinator == m.cfg.Self
}

// Before ranks nodes: the preferred node first, then by ID.
func (m *Machine) Before(a, b heartbeat.NodeID) bool {
	if (a == m.cfg.Preferred) != (b == m.cfg.Preferred) {
		return a == m.cfg.Preferred
	}
	return a < b
}

func (m *Machine) live(id heartbeat.NodeID) bool {
	if id == m.cfg.Self {
		return true
	}
	switch m.view[id] {
	case heartbeat.NodeAlive, heartbeat.NodeSuspect, heartbeat.NodePartitioned:
		return true
	}
	return false
}

// SetView takes membership's current states of the other nodes.
func (m *Machine) SetView(v map[heartbeat.NodeID]heartbeat.NodeState) {
	m.view = v
}

// SetCaughtUp records that the node has the current table, logs and data.
func (m *Machine) SetCaughtUp(ok bool) { m.caughtUp = ok }

// CaughtUp reports whether SetCaughtUp(true) was called.
func (m *Machine) CaughtUp() bool { return m.caughtUp }

// Receive takes a table from another node; it reports whether it was newer.
func (m *Machine) Receive(t Table) bool {
	if !t.Newer(m.table, m.Before) {
		return false
	}
	was := m.table.Coordinator
	m.table = t.Clone()
	m.changed = true
	if was != t.Coordinator {
		m.note("coordinator is now %s (term %d)", t.Coordinator, t.Term)
	}
	return true
}

func (m *Machine) note(format string, a ...any) {
	m.events = append(m.events, fmt.Sprintf(format, a...))
}

func (m *Machine) bump() {
	m.table.Version++
	m.changed = true
}

// Register takes a node's registration (coordinator only).
func (m *Machine) Register(r Registration, now time.Time) error {
	if !m.IsCoordinator() {
		return fmt.Errorf("%w: ask %s", ErrNotCoordinator, m.table.Coordinator)
	}
	if rm, gone := m.table.IsRemoved(r.ID); gone {
		return fmt.Errorf("registry: %s was removed from the cluster for good (its data is on %s); give a new node a new ID", r.ID, rm.BackupTarget)
	}
	i := slices.IndexFunc(m.table.Nodes, func(n Node) bool { return n.ID == r.ID })
	if i < 0 {
		return fmt.Errorf("registry: %s is not a node of this cluster's configuration", r.ID)
	}
	n := &m.table.Nodes[i]
	n.Storage, n.Registered, n.Run = r.Storage, now, r.Run
	if len(r.Addresses) > 0 {
		n.Addresses = slices.Clone(r.Addresses)
	}
	if rp, held := m.reported[r.ID]; held && rp.run == r.Run && now.Sub(rp.at) < m.cfg.RejoinHold {
		m.bump() // storage updated; stays Failed until the hold ends
		return nil
	}
	delete(m.reported, r.ID)
	if n.State == heartbeat.Failed && m.live(r.ID) {
		m.table.Rejoin(r.ID)
		m.note("%s registered again: Normal", r.ID)
	}
	m.bump()
	return nil
}

// TargetFailed takes node's report that its backup target failed (R9).
// targetRun is the target's run in the reporter's table (0: unknown): a
// report about a run the target has since left behind (it restarted and
// registered again) is stale.
func (m *Machine) TargetFailed(node, target heartbeat.NodeID, targetRun uint64, now time.Time) error {
	if !m.IsCoordinator() {
		return fmt.Errorf("%w: ask %s", ErrNotCoordinator, m.table.Coordinator)
	}
	row, ok := m.table.Row(node)
	if !ok || row.BackupTarget != target {
		return nil // stale: the table has moved on
	}
	if t, _ := m.table.Row(target); targetRun != 0 && t.Run != 0 && t.Run != targetRun {
		return nil // about the target's previous run: it restarted since
	}
	if row.State == heartbeat.Failed {
		// The reporter is the suspect itself (another node could not
		// reach it): its failed send says nothing about its target, whose
		// own death the coordinator sees anyway.
		m.note("%s, itself Failed, reports its backup target %s failed: not acted on", node, target)
		return nil
	}
	if target == m.cfg.Self {
		return fmt.Errorf("registry: %s reports this node, the coordinator, as its failed backup target; it answers here: check the traffic data folder's disk", node)
	}
	if m.table.Fail(target) {
		t, _ := m.table.Row(target)
		m.reported[target] = report{at: now, run: t.Run}
		m.note("%s reports its backup target %s failed: %s marked Failed, %s now backs up to %s", node, target, target, node, m.target(node))
		m.bump()
	}
	return nil
}

func (m *Machine) target(id heartbeat.NodeID) heartbeat.NodeID {
	r, _ := m.table.Row(id)
	return r.BackupTarget
}

// Remove removes id for good (coordinator only).
func (m *Machine) Remove(id heartbeat.NodeID) error {
	if !m.IsCoordinator() {
		return fmt.Errorf("%w: ask %s", ErrNotCoordinator, m.table.Coordinator)
	}
	if id == m.cfg.Self {
		return errors.New("registry: the coordinator cannot remove itself: move the role first (stop this node, or remove it from another node once it is dead)")
	}
	if _, gone := m.table.IsRemoved(id); gone {
		return nil
	}
	if !m.table.Remove(id) {
		return fmt.Errorf("registry: no node %s in the index table", id)
	}
	m.note("%s removed for good", id)
	m.bump()
	return nil
}

// Handback gives the role to from (coordinator only), if from ranks first.
func (m *Machine) Handback(from heartbeat.NodeID) error {
	if !m.IsCoordinator() {
		return fmt.Errorf("%w: ask %s", ErrNotCoordinator, m.table.Coordinator)
	}
	if !m.live(from) || m.Before(m.cfg.Self, from) {
		return fmt.Errorf("registry: %s does not rank before %s", from, m.cfg.Self)
	}
	m.table.Term++
	m.table.Coordinator = from
	m.note("coordinator role handed back to %s (term %d)", from, m.table.Term)
	m.bump()
	return nil
}

// firstLive is the first-ranked live node that is Normal (or not yet in
// the table) and not removed.
func (m *Machine) firstLive() heartbeat.NodeID {
	best := heartbeat.NodeID("")
	for _, id := range m.cfg.Nodes {
		if _, gone := m.table.IsRemoved(id); gone || !m.live(id) {
			continue
		}
		if r, ok := m.table.Row(id); ok && r.State == heartbeat.Failed {
			continue
		}
		if best == "" || m.Before(id, best) {
			best = id
		}
	}
	return best
}

func (m *Machine) unknown() bool {
	for _, id := range m.cfg.Nodes {
		if _, gone := m.table.IsRemoved(id); !gone && id != m.cfg.Self && m.view[id] == heartbeat.NodeUnknown {
			return true
		}
	}
	return false
}

// Tick decides: build, take over, maintain the table, ask for handback.
func (m *Machine) Tick(now time.Time) {
	m.handback = false
	if !m.caughtUp {
		return
	}
	c := m.table.Coordinator
	_, cRemoved := m.table.IsRemoved(c)
	switch {
	case m.table.Version == 0:
		if m.unknown() || m.firstLive() != m.cfg.Self {
			return
		}
		m.table = Table{Term: 1, Coordinator: m.cfg.Self}
		for _, id := range m.cfg.Nodes {
			m.table.Nodes = append(m.table.Nodes, Node{Row: heartbeat.Row{ID: id, Addresses: slices.Clone(m.cfg.Addresses[id])}})
		}
		h := heartbeat.BuildTable(m.cfg.Nodes, m.cfg.Addresses, m.cfg.Self, 0)
		m.table.setRows(h)
		m.note("index table built by %s", m.cfg.Self)
		m.bump()
	case c == m.cfg.Self:
	case cRemoved || !m.live(c):
		if m.unknown() || m.firstLive() != m.cfg.Self {
			return
		}
		m.table.Term++
		m.table.Coordinator = m.cfg.Self
		m.note("%s took over the coordinator role from %s with the full table (term %d)", m.cfg.Self, c, m.table.Term)
		m.bump()
	default:
		if m.cfg.Failback && m.firstLive() == m.cfg.Self && m.Before(m.cfg.Self, c) {
			m.handback = true
		}
		return
	}
	m.maintain(now)
}

func (m *Machine) maintain(now time.Time) {
	for _, n := range m.table.Nodes {
		if m.view[n.ID] == heartbeat.NodeDead {
			// Dead, not merely unreachable from one node: no hold when it
			// returns (it registers after its restart).
			delete(m.reported, n.ID)
		}
		switch {
		case n.ID == m.cfg.Self:
		case m.view[n.ID] == heartbeat.NodeDead && n.State == heartbeat.Normal:
			m.table.Fail(n.ID)
			m.note("%s is dead: marked Failed; its dependants back up elsewhere", n.ID)
			m.bump()
		}
	}
	if r, _ := m.table.Row(m.cfg.Self); r.State == heartbeat.Failed {
		m.table.Rejoin(m.cfg.Self)
		m.bump()
	}
}

// Ready is what the runner must do after a step.
type Ready struct {
	Changed  bool     // persist the table; the coordinator sends it to every node
	Handback bool     // ask the coordinator for the role
	Events   []string // for the management log
}

// Ready returns and clears the pending effects.
func (m *Machine) Ready() Ready {
	r := Ready{Changed: m.changed, Handback: m.handback, Events: m.events}
	m.changed, m.events = false, nil
	return r
}
