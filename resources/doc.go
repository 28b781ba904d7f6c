// Package resources is hamirror's resource layer: the pure group machine
// that decides what runs on this node and in what order (fence, volume,
// filesystem, virtual IP, database, application; stopped in reverse), and
// the Agent interface every resource agent implements.
//
// The decisions are pure (Group): membership views, agent results, ticks,
// "fenced" and operator commands go in, effects come out (fence, start,
// stop, monitor, stop-all-now, set-eligible, persist, publish, alarm,
// log); agents in sub-packages do the I/O, and the node (resources/node)
// carries the effects out. The rules are in Group's doc comment; the
// scenarios in testdata/scenarios show each of them. See docs/HA.md for
// the interfaces between the parts.
//
// Running a group (what the node does):
//
//	cfg, err := resources.FromViper(v)   // `group:` and `resources:`; *heartbeat.KeyError names the key
//	g, err := resources.New(cfg, self, resources.Options{Peers: []heartbeat.NodeID{"node2"}, Standby: persistedFlag}, now)
//	// inputs, each with the time:
//	g.Membership(now, resources.View{Role: role, Peers: []resources.PeerView{
//		{ID: "node2", State: heartbeat.NodeAlive, Role: peerRole, App: member.PeerApp("node2")}}})
//	g.Done(now, resources.ResultOf(e.Op, err))   // an agent's answer to effect e
//	g.Tick(now)                                  // monitors, watchdog, expiry (every ~100 ms)
//	g.Fenced(now, "RESERVATION CONFLICT on the volume")
//	err = g.Move(now) / g.Standby(now, on) / g.Maintenance(now, on) / g.Restart(now, name) / g.Cleanup(now, name)
//	g.Shutdown(now)                              // SIGTERM: hand over, exit once g.Idle() (never while blocked;
//	                                             // a second SIGTERM exits anyway, leaving what runs)
//	g.SetVolume(now, knowledge); g.SetAck(now, seq)
//	for _, e := range g.Ready() {
//		switch e.Kind {
//		case resources.EffectStart:              // also Stop, Monitor, Fence, StopAllNow
//			go func() { ctx, _ := context.WithTimeout(ctx, e.Timeout); err := agent.Start(ctx); answer(e.Op, err) }()
//		case resources.EffectPublish:
//			member.SetAppState(e.Data)
//		case resources.EffectSetEligible:
//			member.SetEligible(e.Eligible)
//		case resources.EffectPersist:            // write state_dir/standby, fsync
//		case resources.EffectReregister:         // register our key on every array again, now (before the next effect: a Fence may follow)
//		case resources.EffectAlarm, resources.EffectLog:
//		}
//	}
//	st := g.Status()                             // JSON for `mirrorctl status --json`
//
// The node must call one agent at a time per resource (an operation the
// machine timed out may still be running in its agent) and must echo Op.
//
// Agents:
//
//	var a resources.Agent = ...           // resources/agents, resources/fence, resources/volume
//	ctx, cancel := context.WithTimeout(ctx, spec.StartTimeout)
//	err := a.Start(ctx)                   // idempotent
//	err = a.Monitor(ctx)                  // nil: running; ErrNotRunning: cleanly stopped; ErrFenced: fenced; else failed
//
// The cluster file's group sections (defaults in DefaultConfig and
// DefaultResource, each with its reason):
//
//	volume: {...}                  # present: implicit "fence" then "volume" resources come first
//	group:
//	  migration_threshold: 3       # failures of one resource within failure_timeout that move the group
//	  failure_timeout: 10m         # 0: failures count until cleanup
//	  start_failure_is_fatal: true # a failed or timed-out start moves the group at once (false: counts once)
//	  order: [fs, ip, db, app]     # optional; default: the order of resources
//	resources:
//	  - {name: fs, type: filesystem, device: /dev/nbd0, mountpoint: /srv}
//	  - {name: ip, type: vip, address: 192.0.2.10/24, interface: eth0, monitor_interval: 5s}
//	  - {name: db, type: postgresql, data_dir: /srv/pg, start_timeout: 10m}
//	  - {name: app, type: systemd, unit: app.service}
//
// Each resource takes monitor_interval, start_timeout, stop_timeout and
// monitor_timeout; its other keys are its agent's parameters.
package resources
