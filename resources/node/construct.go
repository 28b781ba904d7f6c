package node

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/services"
	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/mirror"
	"github.com/hamirror/hamirror/resources"
	"github.com/hamirror/hamirror/resources/agents"
	"github.com/hamirror/hamirror/resources/fence"
	"github.com/hamirror/hamirror/resources/volume"
)

// New builds the node of cfg.Heartbeat.Self: it opens the links, the
// iSCSI sessions (in the background: an array that is down joins when it
// answers), membership, the group, its agents and the cluster services.
// Nothing runs until Run.
func New(cfg *Config, opt Options) (_ *Node, err error) {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	o, logger := newOps(cfg, opt.Logger) // log.level, metrics, reload (ops.go)
	// What the node's parts log at info or above also goes to the
	// management log, once the services run (mlogbridge.go).
	toLog := newLateHandler()
	opt.Logger = slog.New(services.TeeHandler{logger.Handler(), toLog})
	self := cfg.Heartbeat.Self
	n := &Node{cfg: cfg, self: self, opt: opt, log: opt.Logger.With("node", string(self)),
		agents: map[string]resources.Agent{}, locks: map[string]*sync.Mutex{},
		peers: peerIDs(cfg.Heartbeat), inbox: make(chan func(time.Time), 256), ops: o}
	defer func() {
		if err != nil {
			for i := len(n.closers) - 1; i >= 0; i-- {
				n.closers[i]()
			}
		}
	}()
	if err := o.metrics.register(newCollector(n.metricsSnapshot)); err != nil {
		return nil, err
	}
	key, err := heartbeat.LoadKey(cfg.Heartbeat.KeyFile)
	if err != nil {
		return nil, err
	}
	if n.keys, err = fenceKeys(cfg); err != nil {
		return nil, err
	}
	if cfg.Volume != nil {
		if n.arrays, err = openArrays(cfg, n.keys, n.log.With("part", "fence")); err != nil {
			return nil, err
		}
		n.closers = append(n.closers, func() error { n.arrays.close(); return nil })
		n.arrays.mayWrite = n.mayWrite
	}
	links, err := n.openLinks()
	if err != nil {
		return nil, err
	}
	boot, err := heartbeat.NextBoot(cfg.Heartbeat.StateDir, time.Now())
	if err != nil {
		closeLinks(links)
		return nil, err
	}
	mo := heartbeat.MemberOptions{Boot: boot, StateDir: cfg.Heartbeat.StateDir, OnEvent: n.membershipEvent,
		Logf: func(format string, a ...any) { n.log.Info(fmt.Sprintf(format, a...), "part", "heartbeat") }}
	if len(cfg.Heartbeat.PingTargets) > 0 {
		if mo.Pinger, err = heartbeat.NewPinger(cfg.Heartbeat.PingTargets, cfg.Heartbeat.PingInterval*8/10); err != nil {
			closeLinks(links)
			return nil, err
		}
		n.pinger = mo.Pinger
		n.closers = append(n.closers, mo.Pinger.Close)
	}
	if n.member, err = heartbeat.NewMember(cfg.Heartbeat, key, links, mo); err != nil {
		closeLinks(links)
		return nil, err
	}
	if n.svc, err = services.New(services.Options{Cluster: cfg.Heartbeat, Key: key, Config: cfg.Services,
		Membership: n.member, Slog: n.log.With("part", "services")}); err != nil {
		return nil, err
	}
	toLog.set(n.svc.Handler(slog.LevelInfo))
	standby, serr := loadStandby(cfg.Heartbeat.StateDir)
	if serr != nil {
		n.log.Error("standby flag", "err", serr)
	}
	if err := n.openVolumeState(cfg.Heartbeat.StateDir); err != nil {
		return nil, err
	}
	if err := n.buildAgents(); err != nil {
		return nil, err
	}
	if n.group, err = resources.New(cfg.Group, self, resources.Options{Peers: n.peers, Standby: standby}, time.Now()); err != nil {
		return nil, err
	}
	return n, nil
}

// openVolumeState opens what the node keeps of the volume in dir: the
// peer's knowledge, this node's knowledge sequence, and the witness that
// hands this node's knowledge to the group (witness.go).
func (n *Node) openVolumeState(dir string) error {
	var err error
	if n.know, err = openKnowledge(dir); err != nil {
		n.log.Warn("peer volume knowledge", "err", err)
	}
	if n.seq, err = openSeq(dir); err != nil {
		return err
	}
	n.wit = newWitness(n.seq, func(k resources.VolumeKnowledge) {
		n.post(func(now time.Time) { n.group.SetVolume(now, k) })
	})
	n.wit.supersede = func() {
		if err := n.know.supersede(); err != nil {
			n.log.Error("peer volume knowledge", "err", err)
		}
	}
	return nil
}

// mayWrite returns the fencing keys of the peers that may still write:
// every peer but those membership sees alive with a clean group state
// (the gate's rule: a clean, live peer is handed the group over, not
// fenced). Safe from any goroutine.
func (n *Node) mayWrite() []uint64 {
	clean := map[heartbeat.NodeID]bool{}
	for _, p := range n.member.View().Peers {
		if a, err := resources.UnmarshalAppState(p.App); err == nil && p.HasApp && p.State == heartbeat.NodeAlive && a.State.Clean() {
			clean[p.ID] = true
		}
	}
	var keys []uint64
	for _, id := range n.peers {
		if !clean[id] {
			keys = append(keys, n.keys[id])
		}
	}
	return keys
}

// fenceKeys is every node's reservation key: configured, or derived.
func fenceKeys(cfg *Config) (map[heartbeat.NodeID]uint64, error) {
	keys := map[heartbeat.NodeID]uint64{}
	seen := map[uint64]heartbeat.NodeID{}
	for _, nd := range cfg.Heartbeat.Nodes {
		k, ok := cfg.Fencing.Keys[nd.ID]
		if !ok {
			k = fence.DeriveKey(cfg.Heartbeat.Cluster, string(nd.ID))
		}
		if other, dup := seen[k]; dup {
			return nil, keyErr("fencing.keys."+string(nd.ID), "is the same key as %s's: every node needs its own", other)
		}
		seen[k] = nd.ID
		keys[nd.ID] = k
	}
	return keys, nil
}

// openLinks opens the heartbeat media: NICs, serial line, disks with a
// path, and the disk heartbeats on the mirror legs (through the node's
// disk-heartbeat sessions).
func (n *Node) openLinks() ([]heartbeat.Link, error) {
	// A disk with neither a path nor a leg cannot be reached: membership
	// runs without it (validation already checked the rest).
	c := &n.cfg.Heartbeat
	var disks []heartbeat.Disk
	for _, d := range c.Disks {
		if d.Path == "" && d.Leg == "" {
			n.log.Warn("disk heartbeat names no path and no leg: running without it", "disk", d.Name)
			continue
		}
		disks = append(disks, d)
	}
	c.Disks = disks
	plain := *c
	plain.Disks = nil
	var legDisks []heartbeat.Disk
	for _, d := range c.Disks {
		if d.Leg != "" {
			legDisks = append(legDisks, d)
		} else {
			plain.Disks = append(plain.Disks, d)
		}
	}
	links, err := heartbeat.OpenLinks(plain)
	if err != nil {
		return nil, err
	}
	for _, d := range legDisks {
		if n.arrays != nil {
			if a := n.arrays.bySpec(d.Leg); a != nil {
				links = append(links, newDiskLink(*c, d.Name, sharedLeg{a.vol}, a.vol.WaitReady, false))
				continue
			}
		}
		// A leg of no volume this node runs (membership only): a session
		// (or file) of its own for the disk heartbeat.
		var leg mirror.Leg
		var wait func(context.Context) error
		if iscsi.IsLegSpec(d.Leg) {
			disk, err := iscsi.OpenLegInBackground(d.Leg, n.cfg.iscsiConfig(iscsi.PurposeDiskHeartbeat))
			if err != nil {
				closeLinks(links)
				return nil, fmt.Errorf("disk heartbeat %s: %w", d.Name, err)
			}
			leg, wait = disk, disk.WaitReady
		} else {
			l, err := mirror.OpenLeg(d.Leg, mirror.LegOptions{})
			if err != nil {
				closeLinks(links)
				return nil, fmt.Errorf("disk heartbeat %s: %w", d.Name, err)
			}
			leg = l
		}
		links = append(links, newDiskLink(*c, d.Name, leg, wait, true))
	}
	return links, nil
}

func closeLinks(links []heartbeat.Link) {
	for _, l := range links {
		l.Close()
	}
}

// buildAgents makes every resource's agent.
func (n *Node) buildAgents() error {
	env := agents.Env{Log: n.log.With("part", "agents")}
	if n.pinger != nil {
		// A round, the hand-over's hysteresis (timing.dead), a round.
		hb := n.cfg.Heartbeat
		env.CarrierGrace = 2*hb.PingInterval + hb.Timing.Dead
	}
	var carrier []string
	for _, r := range n.cfg.Group.Resources {
		var a resources.Agent
		switch r.Type {
		case resources.TypeFence:
			if n.arrays == nil {
				return keyErr(r.Key, "a fence resource needs the volume section's iSCSI arrays")
			}
			a = fenceResource{n.arrays}
		case resources.TypeVolume:
			if n.cfg.Volume == nil {
				return keyErr(r.Key, "a volume resource needs the volume section")
			}
			n.vol = n.newVolume(r.Name)
			a = n.vol.agent
		default:
			var err error
			if a, err = agents.New(r.Key, r.Type, r.Name, r.Params, env); err != nil {
				return err
			}
			if c, ok := a.(interface{ CarrierLink() string }); ok && n.pinger != nil && !slices.Contains(carrier, c.CarrierLink()) {
				carrier = append(carrier, c.CarrierLink())
			}
		}
		n.agents[r.Name] = a
		n.locks[r.Name] = &sync.Mutex{}
	}
	if n.pinger != nil {
		// A lost carrier under a VIP scores 0 (the vip's monitor leaves
		// it to the ping rounds, Env.CarrierByPing).
		return n.pinger.RequireCarrier(carrier...)
	}
	return nil
}

// newVolume builds the volume resource over the node's sessions.
func (n *Node) newVolume(name string) *volumeRes {
	vc := n.cfg.Volume
	mo := mirror.DefaultOptions()
	mo.IOTimeout = vc.IOTimeout
	mo.NodeID = string(n.self)
	mo.AutoReAdd = vc.AutoReAdd
	mo.ResyncMinRate, mo.ResyncMaxRate = vc.ResyncMinRate, vc.ResyncMaxRate
	mo.MMP.Interval = vc.MMPInterval
	// Another owner's block while this node runs: it fenced this node.
	mo.MMP.TakenIsFence = true
	mo.Logger = n.log.With("part", "volume")
	mo.Publish = n.wit.Publish
	mo.BeforeReAdd = n.arrays.beforeReAdd
	mo.OnFenced = func() {
		n.post(func(now time.Time) {
			n.group.Fenced(now, "another node fenced this one and took the volume over (RESERVATION CONFLICT, or its multi-mount protection block on the legs)")
		})
	}
	v := volume.New(volume.Options{Legs: vc.Legs, OpenLeg: n.arrays.openLeg, Mirror: mo, Listen: vc.Listen,
		Device: vc.Device, Fuse: vc.Fuse, Link: vc.Link, ExportName: vc.ExportName, Logger: mo.Logger, ForceHint: forceHint})
	return &volumeRes{name: name, agent: v}
}
