package registry

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/channel"
)

// Options configure a node's registry runner.
type Options struct {
	Config
	Dir  string // the table is saved as Dir/table.json
	Net  channel.Net
	View func() map[heartbeat.NodeID]heartbeat.NodeState // membership (heartbeat.Member.Status)
	// Storage reports this node's storage for its registration.
	Storage func() Storage
	// OnTable sees every new table (the traffic service follows it).
	OnTable func(Table)
	// Note records what the coordinator decided (the management log).
	Note  func(msg string)
	Clock func() time.Time
	Tick  time.Duration // default 250ms
	// Run identifies this start of the node (random; 0: drawn by New).
	Run uint64
	// Timeout bounds one request to a peer (default 2s).
	Timeout time.Duration
	Logf    func(string, ...any)
}

// Registry runs the coordinator machine of one node: registration, table
// distribution, hand-over and catch-up, removal.
type Registry struct {
	opt  Options
	path string

	saveMu  sync.Mutex // one save at a time
	mu      sync.Mutex
	m       *Machine
	acked   map[heartbeat.NodeID]Table // newest table each node confirmed
	lastReg time.Time
}

const (
	opTable    = "registry.table"
	opGet      = "registry.get"
	opRegister = "registry.register"
	opFailed   = "registry.target_failed"
	opRemove   = "registry.remove"
	opHandback = "registry.handback"
)

// New loads the saved table and registers the request handlers.
func New(opt Options) (*Registry, error) {
	if opt.Clock == nil {
		opt.Clock = time.Now
	}
	if opt.Tick <= 0 {
		opt.Tick = 250 * time.Millisecond
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 2 * time.Second
	}
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	if opt.Note == nil {
		opt.Note = func(string) {}
	}
	if opt.OnTable == nil {
		opt.OnTable = func(Table) {}
	}
	if opt.Storage == nil {
		opt.Storage = func() Storage { return Storage{} }
	}
	for opt.Run == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		opt.Run = binary.BigEndian.Uint64(b[:])
	}
	path := filepath.Join(opt.Dir, "table.json")
	saved, err := loadTable(path)
	if err != nil {
		return nil, err
	}
	r := &Registry{opt: opt, path: path, m: NewMachine(opt.Config, saved), acked: map[heartbeat.NodeID]Table{}}
	h := opt.Net.Handle
	h(opTable, r.handleTable)
	h(opGet, func(heartbeat.NodeID, []byte) ([]byte, error) { return json.Marshal(r.Table()) })
	h(opRegister, r.handleRegister)
	h(opFailed, r.handleFailed)
	h(opRemove, r.handleRemove)
	h(opHandback, func(from heartbeat.NodeID, _ []byte) ([]byte, error) {
		return nil, r.apply(func(m *Machine) error { return m.Handback(from) })
	})
	return r, nil
}

// Table returns the current table.
func (r *Registry) Table() Table {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m.Table()
}

// IsCoordinator reports whether this node holds the role now.
func (r *Registry) IsCoordinator() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m.IsCoordinator()
}

// CaughtUp reports whether the catch-up after start has finished.
func (r *Registry) CaughtUp() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m.CaughtUp()
}

// SetCaughtUp lets the machine decide (see Machine).
func (r *Registry) SetCaughtUp() {
	r.mu.Lock()
	r.m.SetCaughtUp(true)
	r.mu.Unlock()
}

// apply runs fn on the machine and carries out the effects.
func (r *Registry) apply(fn func(*Machine) error) error {
	r.mu.Lock()
	err := fn(r.m)
	rd := r.m.Ready()
	t := r.m.Table()
	r.mu.Unlock()
	r.effects(rd, t)
	return err
}

func (r *Registry) effects(rd Ready, t Table) {
	for _, e := range rd.Events {
		r.opt.Note(e)
	}
	if rd.Changed {
		// Saves are serialised and always write the newest table, so two
		// changes carried out at once never save the older one last.
		r.saveMu.Lock()
		t = r.Table()
		if err := t.save(r.path); err != nil {
			r.opt.Logf("registry: saving the index table: %v", err)
		}
		r.saveMu.Unlock()
		r.opt.OnTable(t)
	}
}

func (r *Registry) call(ctx context.Context, to heartbeat.NodeID, op string, req, reply any) error {
	return channel.CallJSON(ctx, r.opt.Net, r.opt.Timeout, to, op, req, reply)
}

func (r *Registry) handleTable(from heartbeat.NodeID, body []byte) ([]byte, error) {
	var t Table
	if err := channel.DecodeJSON(body, &t); err != nil {
		return nil, err
	}
	if t.Coordinator != from {
		return nil, fmt.Errorf("registry: %s sent a table of coordinator %s", from, t.Coordinator)
	}
	r.apply(func(m *Machine) error { m.Receive(t); return nil })
	return json.Marshal(r.Table())
}

func (r *Registry) handleRegister(from heartbeat.NodeID, body []byte) ([]byte, error) {
	var reg Registration
	if err := channel.DecodeJSON(body, &reg); err != nil {
		return nil, err
	}
	if reg.ID != from {
		return nil, fmt.Errorf("registry: %s cannot register %s", from, reg.ID)
	}
	now := r.opt.Clock()
	return nil, r.apply(func(m *Machine) error { return m.Register(reg, now) })
}

type failedReq struct {
	Node   heartbeat.NodeID `json:"node"`
	Target heartbeat.NodeID `json:"target"`
	// TargetRun is the target's run in the reporter's table (0: unknown).
	TargetRun uint64 `json:"target_run,omitempty"`
}

func (r *Registry) handleFailed(from heartbeat.NodeID, body []byte) ([]byte, error) {
	var req failedReq
	if err := channel.DecodeJSON(body, &req); err != nil {
		return nil, err
	}
	if req.Node != from {
		return nil, fmt.Errorf("registry: %s reported for %s", from, req.Node)
	}
	now := r.opt.Clock()
	return nil, r.apply(func(m *Machine) error { return m.TargetFailed(req.Node, req.Target, req.TargetRun, now) })
}

type removeReq struct {
	ID heartbeat.NodeID `json:"id"`
}

func (r *Registry) handleRemove(_ heartbeat.NodeID, body []byte) ([]byte, error) {
	var req removeReq
	if err := channel.DecodeJSON(body, &req); err != nil {
		return nil, err
	}
	return nil, r.apply(func(m *Machine) error { return m.Remove(req.ID) })
}

// toCoordinator runs a request on the coordinator: here if this node holds
// the role, else over the channel.
func (r *Registry) toCoordinator(ctx context.Context, op string, req any, local func(*Machine) error) error {
	t := r.Table()
	if t.Version == 0 {
		return errors.New("registry: no index table yet (no coordinator elected): try again in a few seconds")
	}
	if t.Coordinator == r.opt.Self {
		return r.apply(local)
	}
	if err := r.call(ctx, t.Coordinator, op, req, nil); err != nil {
		return fmt.Errorf("coordinator %s: %w", t.Coordinator, err)
	}
	return nil
}

// ReportTargetFailed tells the coordinator that this node's backup target
// failed (R9).
func (r *Registry) ReportTargetFailed(ctx context.Context, target heartbeat.NodeID) error {
	now := r.opt.Clock()
	row, _ := r.Table().Row(target)
	req := failedReq{Node: r.opt.Self, Target: target, TargetRun: row.Run}
	return r.toCoordinator(ctx, opFailed, req, func(m *Machine) error { return m.TargetFailed(r.opt.Self, target, row.Run, now) })
}

// Remove removes node id for good (R14), through the coordinator.
func (r *Registry) Remove(ctx context.Context, id heartbeat.NodeID) error {
	if err := r.toCoordinator(ctx, opRemove, removeReq{ID: id}, func(m *Machine) error { return m.Remove(id) }); err != nil {
		return err
	}
	r.PullTables(ctx)
	return nil
}

// Register sends this node's registration to the coordinator (R11).
func (r *Registry) Register(ctx context.Context) error {
	reg := Registration{ID: r.opt.Self, Addresses: r.opt.Addresses[r.opt.Self], Storage: r.opt.Storage(), Run: r.opt.Run}
	now := r.opt.Clock()
	r.mu.Lock()
	r.lastReg = now
	r.mu.Unlock()
	err := r.toCoordinator(ctx, opRegister, reg, func(m *Machine) error { return m.Register(reg, now) })
	if err == nil {
		r.PullTables(ctx)
	}
	return err
}

// PullTables asks every live peer for its table and keeps the newest: a
// returning node learns the current table before it decides anything.
func (r *Registry) PullTables(ctx context.Context) {
	view := r.opt.View()
	var wg sync.WaitGroup
	for _, id := range r.opt.Nodes {
		if id == r.opt.Self || !liveState(view[id]) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var t Table
			if err := r.call(ctx, id, opGet, struct{}{}, &t); err != nil {
				return
			}
			r.apply(func(m *Machine) error { m.Receive(t); return nil })
		}()
	}
	wg.Wait()
}

func liveState(s heartbeat.NodeState) bool {
	return s == heartbeat.NodeAlive || s == heartbeat.NodeSuspect || s == heartbeat.NodePartitioned
}

// Run steps the machine every Tick until ctx ends: membership in,
// decisions out; the coordinator sends the table to every live node that
// has not confirmed it; a node that is not registered, or sees itself
// Failed while it runs, registers.
func (r *Registry) Run(ctx context.Context) {
	t := time.NewTicker(r.opt.Tick)
	defer t.Stop()
	for {
		r.step(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Registry) step(ctx context.Context) {
	view := r.opt.View()
	now := r.opt.Clock()
	r.mu.Lock()
	r.m.SetView(view)
	r.m.Tick(now)
	rd := r.m.Ready()
	tb := r.m.Table()
	caught := r.m.CaughtUp()
	regDue := now.Sub(r.lastReg) > 4*r.opt.Tick
	r.mu.Unlock()
	r.effects(rd, tb)
	handback := rd.Handback
	if tb.Version == 0 || !caught {
		return
	}
	if _, gone := tb.IsRemoved(r.opt.Self); gone {
		return // removed for good: nothing to register or coordinate
	}
	if row, ok := tb.Row(r.opt.Self); ok && (row.Registered.IsZero() || row.State == heartbeat.Failed) && regDue {
		if err := r.Register(ctx); err != nil {
			r.opt.Logf("registry: registering with %s: %v", tb.Coordinator, err)
		}
	}
	if handback && regDue {
		r.mu.Lock()
		r.lastReg = now
		r.mu.Unlock()
		if err := r.call(ctx, tb.Coordinator, opHandback, struct{}{}, nil); err != nil {
			r.opt.Logf("registry: asking %s for the coordinator role: %v", tb.Coordinator, err)
		} else {
			r.PullTables(ctx)
		}
	}
	if tb.Coordinator == r.opt.Self {
		r.broadcast(ctx, tb, view)
	}
}

// broadcast sends t to every live node that has not confirmed it.
func (r *Registry) broadcast(ctx context.Context, t Table, view map[heartbeat.NodeID]heartbeat.NodeState) {
	var wg sync.WaitGroup
	targets := slices.Clone(r.opt.Nodes)
	for _, rm := range t.Removed {
		if !slices.Contains(targets, rm.ID) {
			targets = append(targets, rm.ID)
		}
	}
	for _, id := range targets {
		r.mu.Lock()
		a := r.acked[id]
		r.mu.Unlock()
		if id == r.opt.Self || !liveState(view[id]) || (a.Term == t.Term && a.Version == t.Version) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got Table
			if err := r.call(ctx, id, opTable, t, &got); err != nil {
				return
			}
			r.mu.Lock()
			r.acked[id] = Table{Term: got.Term, Version: got.Version}
			r.mu.Unlock()
			if got.Newer(t, r.m.Before) {
				r.apply(func(m *Machine) error { m.Receive(got); return nil })
			}
		}()
	}
	wg.Wait()
}
