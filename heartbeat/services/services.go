package services

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/channel"
	"github.com/hamirror/hamirror/heartbeat/mlog"
	"github.com/hamirror/hamirror/heartbeat/registry"
	"github.com/hamirror/hamirror/heartbeat/traffic"
)

// Membership is what the services need from the heartbeat
// (*heartbeat.Member has it): every node's state, for online state,
// take-over and whom to try.
type Membership interface {
	Status() heartbeat.Status
}

// Options are what the node passes in.
type Options struct {
	Cluster    heartbeat.Config // the heartbeat config, Self set
	Key        []byte           // the cluster key (the channel derives its own)
	Config     Config           // the services: section
	Membership Membership
	// Transport carries the channel; nil: TCP on every private NIC
	// (nodes[].links), never the serial line.
	Transport channel.Transport
	Sampler   traffic.Sampler // nil: netlink, services.interfaces
	Slog      *slog.Logger    // also gets every management log entry (nil: none)
	Logf      func(string, ...any)
}

// Services are one node's cluster services: the channel, the management
// log, the registry (coordinator) and the traffic-data backup.
type Services struct {
	opt Options
	ch  *channel.Channel
	log *mlog.Log
	reg *registry.Registry
	tr  *traffic.Service

	notes  chan note
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	caughtUp bool
	removed  bool
}

type note struct {
	level     slog.Level
	component string
	msg       string
	args      []any
	direct    bool // already in slog (Handler): write to the log alone
}

// New opens the services' files and prepares the channel; Start runs them.
func New(opt Options) (*Services, error) {
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	if opt.Membership == nil {
		return nil, errors.New("services: a membership (heartbeat.Member) is required")
	}
	cfg, self := opt.Cluster, opt.Cluster.Self
	if _, ok := cfg.NodeByID(self); !ok {
		return nil, fmt.Errorf("services: %w: %q", heartbeat.ErrNoSelf, self)
	}
	if opt.Transport == nil {
		tr, err := channel.NewTCP(channel.TCPConfigFrom(cfg, opt.Config.Port))
		if err != nil {
			return nil, err
		}
		opt.Transport = tr
	}
	if opt.Sampler == nil {
		opt.Sampler = traffic.NetlinkSampler{Interfaces: opt.Config.Interfaces}
	}
	var ids []heartbeat.NodeID
	for _, n := range cfg.Nodes {
		ids = append(ids, n.ID)
	}
	s := &Services{opt: opt, notes: make(chan note, 256)}
	s.ch = channel.New(channel.Config{Cluster: cfg.Cluster, Self: self, Key: opt.Key, Nodes: ids,
		CallTimeout: 2 * opt.Config.LogTimeout, Logf: opt.Logf}, opt.Transport)
	var err error
	s.log, err = mlog.Open(mlog.Options{Dir: filepath.Join(opt.Config.Dir, "mlog"), Self: self, Peers: others(ids, self),
		Net: s.ch, Timeout: opt.Config.LogTimeout, SyncInterval: opt.Config.SyncInterval,
		MaxSize: opt.Config.LogMaxSize, Keep: opt.Config.LogKeep, PeerUp: s.live, Slog: opt.Slog, Logf: opt.Logf})
	if err != nil {
		opt.Transport.Close()
		return nil, err
	}
	mc := cfg.MachineConfig(0)
	s.reg, err = registry.New(registry.Options{
		Config: registry.Config{Self: self, Nodes: ids, Preferred: cfg.Preferred, Addresses: mc.Addresses,
			Failback: opt.Config.CoordinatorFailback, RejoinHold: opt.Config.RejoinHold},
		Dir: opt.Config.Dir, Net: s.ch, View: s.view, Storage: s.storage, OnTable: s.onTable,
		Note:    func(m string) { s.note(slog.LevelWarn, "registry", m) },
		Timeout: opt.Config.LogTimeout, Logf: opt.Logf})
	if err != nil {
		s.log.Close()
		opt.Transport.Close()
		return nil, err
	}
	s.tr, err = traffic.New(traffic.Options{Self: self, Dir: filepath.Join(opt.Config.Dir, "traffic"), Net: s.ch,
		Sampler: opt.Sampler, Interval: opt.Config.TrafficInterval, Table: s.reg.Table,
		ReportFailed: s.reg.ReportTargetFailed, Timeout: opt.Config.LogTimeout, Logf: opt.Logf,
		Note: func(m string) { s.note(slog.LevelWarn, "traffic", m) }})
	if err != nil {
		s.log.Close()
		opt.Transport.Close()
		return nil, err
	}
	return s, nil
}

func others(ids []heartbeat.NodeID, self heartbeat.NodeID) []heartbeat.NodeID {
	return slices.DeleteFunc(slices.Clone(ids), func(id heartbeat.NodeID) bool { return id == self })
}

// Log is the management log every component writes through.
func (s *Services) Log() *mlog.Log { return s.log }

// Registry is the node registry and coordinator.
func (s *Services) Registry() *registry.Registry { return s.reg }

// Traffic is the traffic-data service.
func (s *Services) Traffic() *traffic.Service { return s.tr }

// Channel is the authenticated channel (its counters go in the status).
func (s *Services) Channel() *channel.Channel { return s.ch }

func (s *Services) view() map[heartbeat.NodeID]heartbeat.NodeState {
	st := s.opt.Membership.Status()
	v := map[heartbeat.NodeID]heartbeat.NodeState{}
	for _, n := range st.Nodes {
		if !n.Self {
			v[n.ID] = n.State
		}
	}
	return v
}

func (s *Services) live(id heartbeat.NodeID) bool {
	switch s.view()[id] {
	case heartbeat.NodeAlive, heartbeat.NodeSuspect, heartbeat.NodePartitioned:
		return true
	}
	return false
}

func (s *Services) storage() registry.Storage {
	st := registry.Storage{Location: s.opt.Config.Dir}
	var fs unix.Statfs_t
	if err := unix.Statfs(s.opt.Config.Dir, &fs); err == nil {
		st.Total, st.Free = fs.Blocks*uint64(fs.Bsize), fs.Bavail*uint64(fs.Bsize)
	}
	return st
}

// note queues a management log entry (written by one goroutine, so a
// slow peer never holds up the registry or the traffic loops).
func (s *Services) note(level slog.Level, component, msg string, args ...any) {
	s.queue(note{level: level, component: component, msg: msg, args: args})
}

// queue hands n to writeNotes without blocking; a full queue drops it.
func (s *Services) queue(n note) {
	select {
	case s.notes <- n:
	default:
		s.opt.Logf("services: management log queue full; dropped: %s: %s", n.component, n.msg)
	}
}

func (s *Services) onTable(t registry.Table) {
	s.tr.Kick()
	var peers []heartbeat.NodeID
	for _, n := range s.opt.Cluster.Nodes {
		if _, gone := t.IsRemoved(n.ID); !gone && n.ID != s.opt.Cluster.Self {
			peers = append(peers, n.ID)
		}
	}
	s.log.SetPeers(peers)
	_, gone := t.IsRemoved(s.opt.Cluster.Self)
	s.mu.Lock()
	was := s.removed
	s.removed = gone
	s.mu.Unlock()
	if gone && !was {
		s.opt.Logf("services: this node %s was removed from the cluster for good; remove it from the cluster file and stop mirrord", s.opt.Cluster.Self)
	}
}

// MembershipEvent records a heartbeat event in the management log (node
// state changes, role changes and alarms; medium changes stay in slog).
func (s *Services) MembershipEvent(e heartbeat.Event) {
	switch e.Kind {
	case heartbeat.EventNode:
		lvl := slog.LevelInfo
		if e.To == heartbeat.NodeDead.String() || e.To == heartbeat.NodePartitioned.String() {
			lvl = slog.LevelWarn
		}
		s.note(lvl, "heartbeat", fmt.Sprintf("node %s: %s -> %s", e.Node, e.From, e.To), "node", string(e.Node))
	case heartbeat.EventRole:
		s.note(slog.LevelInfo, "heartbeat", fmt.Sprintf("role: %s -> %s", e.From, e.To))
	case heartbeat.EventAlarm:
		s.note(slog.LevelError, "heartbeat", e.Msg, "node", string(e.Node))
	}
}

// Start serves the channel, catches up, then runs the registry, the log's
// background exchange and the traffic sampling until Stop.
func (s *Services) Start(ctx context.Context) {
	ctx, s.cancel = context.WithCancel(ctx)
	s.go_(func() { s.ch.Serve(ctx) })
	s.go_(func() { s.writeNotes(ctx) })
	s.go_(func() {
		s.catchUp(ctx)
		if ctx.Err() != nil {
			return
		}
		s.go_(func() { s.reg.Run(ctx) })
		s.go_(func() { s.log.Run(ctx) })
		s.go_(func() { s.tr.Run(ctx) })
	})
}

func (s *Services) go_(fn func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
}

// Stop ends every loop, waits for them and closes the files.
func (s *Services) Stop() {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	s.log.Close()
}

func (s *Services) writeNotes(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-s.notes:
			if !n.direct {
				s.log.Log(ctx, n.level, n.component, n.msg, n.args...)
			} else if _, err := s.log.Write(ctx, n.level, n.component, n.msg, mlog.Fields(n.args...)...); err != nil {
				s.opt.Logf("services: management log: %v", err)
			}
		}
	}
}

// catchUp runs before the node decides anything (R13): wait until no
// peer's fate is unknown, learn the newest table, register (a node that
// finds itself Failed becomes Normal again), exchange logs with every
// peer, pull the traffic data of the nodes that back up here.
func (s *Services) catchUp(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		unknown := false
		for _, st := range s.view() {
			unknown = unknown || st == heartbeat.NodeUnknown
		}
		if !unknown {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
	self := s.opt.Cluster.Self
	s.reg.PullTables(ctx)
	t := s.reg.Table()
	if row, ok := t.Row(self); ok && (row.State == heartbeat.Failed || row.Registered.IsZero()) {
		for range 3 {
			if err := s.reg.Register(ctx); err == nil {
				break
			} else {
				s.opt.Logf("services: registering: %v", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.opt.Config.LogTimeout):
			}
		}
	}
	failed := s.log.Sync(ctx)
	terr := s.tr.CatchUp(ctx)
	s.reg.SetCaughtUp()
	s.mu.Lock()
	s.caughtUp = true
	s.mu.Unlock()
	t = s.reg.Table()
	msg := fmt.Sprintf("services up on %s: caught up with index table version %d/%d (coordinator %s)", self, t.Term, t.Version, t.Coordinator)
	args := []any{}
	if len(failed) > 0 {
		args = append(args, "log_unreachable", fmt.Sprint(failed))
	}
	if terr != nil {
		args = append(args, "traffic_error", terr.Error())
	}
	s.note(slog.LevelInfo, "services", msg, args...)
}

// CaughtUp reports whether the start-up catch-up has finished.
func (s *Services) CaughtUp() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.caughtUp
}
