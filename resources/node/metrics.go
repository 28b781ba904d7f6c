package node

import (
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/services"
	"github.com/hamirror/hamirror/resources"
)

// metricsSnapshot is everything one scrape reads: the node's Status (as
// `mirrorctl status --json`), the cluster services' status, and the
// figures only the metrics keep (group starts, operations, reloads).
type metricsSnapshot struct {
	Status   Status
	Services *services.Status // nil: no services
	Starts   startStats
	Reloads  reloadStats
}

// collector is a prometheus.Collector over a node: at each scrape it takes
// one snapshot and turns it into metrics, so the node's loops and the
// volume's I/O pay nothing between scrapes.
type collector struct {
	snap  func() metricsSnapshot
	descs map[string]*prometheus.Desc
	kinds map[string]prometheus.ValueType
}

// metricSpec describes one exported metric.
type metricSpec struct {
	name, help string
	kind       prometheus.ValueType
	labels     []string
}

func gauge(name, help string, labels ...string) metricSpec {
	return metricSpec{name, help, prometheus.GaugeValue, labels}
}

func counter(name, help string, labels ...string) metricSpec {
	return metricSpec{name, help, prometheus.CounterValue, labels}
}

// metricSpecs lists every metric the collector exports (docs/grafana's
// dashboard test checks its queries against it).
func metricSpecs() []metricSpec {
	return []metricSpec{
		gauge("hamirror_info", "This node (always 1): its cluster and node ID as labels.", "cluster", "node"),

		// Membership (heartbeat).
		gauge("hamirror_role", "Membership's role proposal for this node: 1 for the current role (active, standby, none), 0 for the others.", "role"),
		gauge("hamirror_term", "This node's takeover term: one above the highest seen at each takeover claim."),
		gauge("hamirror_peer_state", "Each peer's state as this node sees it: 1 for the current state (unknown, alive, suspect, partitioned, dead), 0 for the others.", "peer", "state"),
		gauge("hamirror_peer_role", "Each peer's own role proposal as last heard: 1 for the current role, 0 for the others.", "peer", "role"),
		gauge("hamirror_peer_term", "The highest takeover term the peer advertised.", "peer"),
		gauge("hamirror_peer_eligible", "1 when the peer advertises that it may hold the active role.", "peer"),
		gauge("hamirror_medium_state", "Each heartbeat medium towards each peer: 1 for the current state (down, warn, up), 0 for the others.", "peer", "medium", "state"),
		gauge("hamirror_medium_last_heard_seconds", "Age of the last frame accepted from the peer on the medium (absent until one is heard).", "peer", "medium"),
		gauge("hamirror_ping_targets_reached", "Public ping targets the node reaches (this node's own count, and each peer's as it advertised).", "node"),
		counter("hamirror_heartbeat_frames_accepted_total", "Heartbeat frames accepted."),
		counter("hamirror_heartbeat_frames_refused_total", "Heartbeat frames refused, by reason (malformed, bad_auth, wrong_cluster, replayed, unconfirmed, unknown_node, wrong_medium).", "reason"),
		counter("hamirror_heartbeat_serial_garbage_bytes_total", "Bytes skipped while resynchronising on the serial line."),
		counter("hamirror_heartbeat_stalls_total", "Times membership's loop did not run for more than timing.keepalive."),
		gauge("hamirror_heartbeat_longest_stall_seconds", "The longest such stall."),

		// The resource group.
		gauge("hamirror_group_state", "The group on this node: 1 for the current state (stopped, starting, running, stopping, blocked, fenced, failed), 0 for the others.", "state"),
		gauge("hamirror_group_eligible", "1 when this node may run the group (not standby, fenced, moving away or at migration_threshold)."),
		gauge("hamirror_group_standby", "1 when this node is in standby (mirrorctl standby)."),
		gauge("hamirror_group_maintenance", "1 in maintenance mode: monitors and actions paused."),
		gauge("hamirror_group_migration_threshold", "group.migration_threshold: failures of one resource within failure_timeout that move the group."),
		gauge("hamirror_resource_state", "Each resource on this node: 1 for the current state (unknown, stopped, starting, running, stopping, failed, blocked), 0 for the others.", "resource", "type", "state"),
		gauge("hamirror_resource_failures", "The resource's failures within group.failure_timeout (mirrorctl cleanup resets them).", "resource", "type"),
		gauge("hamirror_resource_last_monitor_timestamp_seconds", "When the resource was last monitored (Unix time).", "resource"),
		counter("hamirror_resource_operations_total", "Agent operations (start, stop, monitor) by resource and result (ok, failed, timed_out, not_running, fenced).", "resource", "op", "result"),
		counter("hamirror_fence_operations_total", "Fences of peers before a takeover, by result (ok, failed, timed_out, fenced).", "result"),
		counter("hamirror_group_starts_total", "Group starts completed on this node: kind takeover (after fencing a peer: a failover) or clean (a hand-over, or beside a clean peer).", "kind"),
		counter("hamirror_group_starts_abandoned_total", "Group starts that ended without the group running (a start failed, or the role was lost).", "kind"),
		gauge("hamirror_group_start_last_duration_seconds", "Duration of the last completed group start of each kind, from the first step towards starting to every resource running.", "kind"),
		gauge("hamirror_group_start_last_timestamp_seconds", "When the last group start of each kind completed (Unix time).", "kind"),
		gauge("hamirror_group_start_last_phase_seconds", "Phases of the last group start of each kind: fence_peers (the peers' fence) and start of each resource, as long as the agent took.", "kind", "phase", "resource"),

		// The volume (mirror engine), while it runs here.
		gauge("hamirror_volume_running", "1 when the mirrored volume is open on this node."),
		gauge("hamirror_volume_state", "The volume: 1 for the current state (clean, degraded, resyncing, failed, fenced), 0 for the others.", "state"),
		gauge("hamirror_volume_size_bytes", "The volume's size."),
		gauge("hamirror_volume_nbd_connections", "NBD clients connected to the volume."),
		gauge("hamirror_leg_info", "Each leg's path (always 1).", "slot", "path"),
		gauge("hamirror_leg_state", "Each leg: 1 for the current state (in_sync, failed, out_of_sync, rebuilding), 0 for the others.", "slot", "state"),
		gauge("hamirror_leg_out_of_sync_bytes", "What the leg lacks: what the resync still copies to it, or what a re-add would copy.", "slot"),
		gauge("hamirror_resync_running", "1 while a resync runs."),
		gauge("hamirror_resync_done_bytes", "Bytes the running resync copied."),
		gauge("hamirror_resync_total_bytes", "Bytes the running resync copies in all."),
		gauge("hamirror_resync_rate_bytes_per_second", "The running resync's rate."),
		gauge("hamirror_resync_eta_seconds", "Time left for the running resync at its current rate."),
		gauge("hamirror_verify_running", "1 while a verify runs."),
		gauge("hamirror_verify_done_bytes", "Bytes the verify compared."),
		gauge("hamirror_verify_total_bytes", "Bytes the verify compares in all."),
		gauge("hamirror_verify_mismatches", "Mismatching blocks the last (or running) verify found."),
		gauge("hamirror_verify_repaired", "Mismatches the last (or running) verify repaired."),
		gauge("hamirror_peer_knowledge_trusted", "1 when this node holds the peer's volume knowledge and a takeover would use it to start a lone leg.", "from"),

		// Cluster services.
		gauge("hamirror_services_caught_up", "1 once the management log caught up with the peers."),
		counter("hamirror_channel_connections_accepted_total", "Authenticated connections of the services channel."),
		counter("hamirror_channel_refused_total", "Services channel messages or handshakes refused, by reason (bad_auth, replayed, malformed, bad_peer).", "reason"),
		counter("hamirror_mlog_spooled_entries_total", "Management log entries spooled for a peer that could not take them."),
		counter("hamirror_mlog_delivery_failures_total", "Live deliveries of management log entries that failed."),
		counter("hamirror_mlog_exchanges_total", "Completed management log exchanges."),
		counter("hamirror_mlog_gaps_total", "Management log entries accepted past a hole."),

		// Configuration reloads.
		counter("hamirror_config_reloads_total", "Reloads of the cluster file (SIGHUP, mirrorctl reload) by result: applied, partial (valid, but some changes need a restart) or refused (invalid file).", "result"),
		gauge("hamirror_config_last_reload_successful", "1 when the last reload read a valid file."),
		gauge("hamirror_config_restart_pending", "Keys of the file last read that differ from what runs and were not applied (they need a restart of mirrord, or metrics.listen could not be bound)."),
	}
}

func newCollector(snap func() metricsSnapshot) *collector {
	c := &collector{snap: snap, descs: map[string]*prometheus.Desc{}, kinds: map[string]prometheus.ValueType{}}
	for _, s := range metricSpecs() {
		c.descs[s.name] = prometheus.NewDesc(s.name, s.help, s.labels, nil)
		c.kinds[s.name] = s.kind
	}
	return c
}

// Describe sends every metric's descriptor.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// emitter sends one scrape's metrics.
type emitter struct {
	c  *collector
	ch chan<- prometheus.Metric
}

func (e emitter) put(name string, v float64, labels ...string) {
	d := e.c.descs[name]
	m, err := prometheus.NewConstMetric(d, e.c.kinds[name], v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err)
	}
	e.ch <- m
}

func (e emitter) flag(name string, b bool, labels ...string) {
	v := 0.0
	if b {
		v = 1
	}
	e.put(name, v, labels...)
}

// oneOf sends name{labels..., state=s} for every s of states, 1 for cur;
// a cur not in states (a state added later) is sent too.
func (e emitter) oneOf(name string, states []string, cur string, labels ...string) {
	known := false
	for _, s := range states {
		known = known || s == cur
		e.flag(name, s == cur, append(labels[:len(labels):len(labels)], s)...)
	}
	if !known && cur != "" {
		e.flag(name, true, append(labels[:len(labels):len(labels)], cur)...)
	}
}

// Collect takes one snapshot and sends its metrics.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.snap()
	e := emitter{c, ch}
	e.put("hamirror_info", 1, s.Status.Cluster.Cluster, string(s.Status.Node))
	collectMembership(e, s.Status.Cluster)
	collectGroup(e, s.Status.Group)
	collectStarts(e, s.Starts)
	collectVolume(e, s.Status)
	if s.Services != nil {
		collectServices(e, *s.Services)
	}
	r := s.Reloads
	for _, k := range []struct {
		result string
		n      uint64
	}{{"applied", r.Applied}, {"partial", r.Partial}, {"refused", r.Refused}} {
		e.put("hamirror_config_reloads_total", float64(k.n), k.result)
	}
	e.flag("hamirror_config_last_reload_successful", r.LastOK)
	e.put("hamirror_config_restart_pending", float64(r.Pending))
}

func roleNames() []string {
	return []string{heartbeat.RoleActive.String(), heartbeat.RoleStandby.String(), heartbeat.RoleNone.String()}
}

func collectMembership(e emitter, cs heartbeat.Status) {
	e.oneOf("hamirror_role", roleNames(), cs.Role)
	e.put("hamirror_term", float64(cs.Term))
	var nodeStates, mediumStates []string
	for s := heartbeat.NodeUnknown; s <= heartbeat.NodeDead; s++ {
		nodeStates = append(nodeStates, s.String())
	}
	for s := heartbeat.MediumDown; s <= heartbeat.MediumUp; s++ {
		mediumStates = append(mediumStates, s.String())
	}
	for _, n := range cs.Nodes {
		if n.Ping != nil {
			e.put("hamirror_ping_targets_reached", float64(*n.Ping), string(n.ID))
		}
		if n.Self {
			continue
		}
		id := string(n.ID)
		e.oneOf("hamirror_peer_state", nodeStates, n.State.String(), id)
		e.oneOf("hamirror_peer_role", roleNames(), n.Role, id)
		e.put("hamirror_peer_term", float64(n.Term), id)
		e.flag("hamirror_peer_eligible", n.Eligible, id)
		for _, m := range n.Media {
			e.oneOf("hamirror_medium_state", mediumStates, m.State.String(), id, m.Name)
			if m.LastHeard >= 0 {
				e.put("hamirror_medium_last_heard_seconds", m.LastHeard.Seconds(), id, m.Name)
			}
		}
	}
	f := cs.Rejected
	e.put("hamirror_heartbeat_frames_accepted_total", float64(f.Accepted))
	for _, r := range []struct {
		reason string
		n      uint64
	}{{"malformed", f.Malformed}, {"bad_auth", f.BadAuth}, {"wrong_cluster", f.WrongCluster}, {"replayed", f.Replayed},
		{"unconfirmed", f.Unconfirmed}, {"unknown_node", f.UnknownNode}, {"wrong_medium", f.WrongMedium}} {
		e.put("hamirror_heartbeat_frames_refused_total", float64(r.n), r.reason)
	}
	e.put("hamirror_heartbeat_serial_garbage_bytes_total", float64(f.SerialGarbage))
	e.put("hamirror_heartbeat_stalls_total", float64(cs.Stalls))
	e.put("hamirror_heartbeat_longest_stall_seconds", cs.LongestStall.Seconds())
}

func collectGroup(e emitter, g resources.Status) {
	var groupStates, resStates []string
	for s := resources.GroupStopped; s <= resources.GroupFailed; s++ {
		groupStates = append(groupStates, s.String())
	}
	for s := resources.ResUnknown; s <= resources.ResBlocked; s++ {
		resStates = append(resStates, s.String())
	}
	e.oneOf("hamirror_group_state", groupStates, g.State.String())
	e.flag("hamirror_group_eligible", g.Eligible)
	e.flag("hamirror_group_standby", g.Standby)
	e.flag("hamirror_group_maintenance", g.Maintenance)
	e.put("hamirror_group_migration_threshold", float64(g.MigrationThreshold))
	for _, r := range g.Resources {
		e.oneOf("hamirror_resource_state", resStates, r.State.String(), r.Name, r.Type)
		e.put("hamirror_resource_failures", float64(r.Failures), r.Name, r.Type)
		if !r.LastMonitor.IsZero() {
			e.put("hamirror_resource_last_monitor_timestamp_seconds", unixSeconds(r.LastMonitor), r.Name)
		}
	}
}

func collectStarts(e emitter, s startStats) {
	for _, kind := range []string{startTakeover, startClean} {
		e.put("hamirror_group_starts_total", float64(s.Starts[kind]), kind)
		e.put("hamirror_group_starts_abandoned_total", float64(s.Abandoned[kind]), kind)
		last, ok := s.Last[kind]
		if !ok {
			continue
		}
		e.put("hamirror_group_start_last_duration_seconds", last.Duration.Seconds(), kind)
		e.put("hamirror_group_start_last_timestamp_seconds", unixSeconds(last.At), kind)
		type key struct{ phase, res string }
		sum := map[key]time.Duration{}
		var order []key
		for _, p := range last.Phases { // a phase repeated (a fence retried) is summed
			k := key{p.Phase, p.Resource}
			if _, seen := sum[k]; !seen {
				order = append(order, k)
			}
			sum[k] += p.Duration
		}
		for _, k := range order {
			e.put("hamirror_group_start_last_phase_seconds", sum[k].Seconds(), kind, k.phase, k.res)
		}
	}
	for _, result := range slices.Sorted(maps.Keys(s.Fence)) {
		e.put("hamirror_fence_operations_total", float64(s.Fence[result]), result)
	}
	for k, n := range s.Ops {
		e.put("hamirror_resource_operations_total", float64(n), k.Resource, k.Op, k.Result)
	}
}

func collectVolume(e emitter, st Status) {
	e.flag("hamirror_volume_running", st.Volume != nil)
	if st.Peer != nil {
		e.flag("hamirror_peer_knowledge_trusted", st.Peer.Trusted, string(st.Peer.From))
	}
	if st.Volume == nil {
		return
	}
	v := st.Volume
	e.oneOf("hamirror_volume_state", []string{"clean", "degraded", "resyncing", "failed", "fenced"}, v.State)
	e.put("hamirror_volume_size_bytes", float64(v.SizeBytes))
	e.put("hamirror_volume_nbd_connections", float64(v.NBD))
	for _, l := range v.Legs {
		slot := strconv.Itoa(l.Slot)
		e.put("hamirror_leg_info", 1, slot, l.Path)
		e.oneOf("hamirror_leg_state", []string{"in_sync", "failed", "out_of_sync", "rebuilding"}, l.State, slot)
		e.put("hamirror_leg_out_of_sync_bytes", float64(l.OutOfSyncBytes), slot)
	}
	r := v.Resync
	e.flag("hamirror_resync_running", r.Running)
	e.put("hamirror_resync_done_bytes", float64(r.DoneBytes))
	e.put("hamirror_resync_total_bytes", float64(r.TotalBytes))
	e.put("hamirror_resync_rate_bytes_per_second", r.BytesPerSecond)
	e.put("hamirror_resync_eta_seconds", r.ETASeconds)
	vf := v.Verify
	e.flag("hamirror_verify_running", vf.Running)
	e.put("hamirror_verify_done_bytes", float64(vf.DoneBytes))
	e.put("hamirror_verify_total_bytes", float64(vf.TotalBytes))
	e.put("hamirror_verify_mismatches", float64(vf.Mismatches))
	e.put("hamirror_verify_repaired", float64(vf.Repaired))
}

func collectServices(e emitter, s services.Status) {
	e.flag("hamirror_services_caught_up", s.CaughtUp)
	ch := s.Channel
	e.put("hamirror_channel_connections_accepted_total", float64(ch.Accepted))
	for _, r := range []struct {
		reason string
		n      uint64
	}{{"bad_auth", ch.BadAuth}, {"replayed", ch.Replayed}, {"malformed", ch.Malformed}, {"bad_peer", ch.BadPeer}} {
		e.put("hamirror_channel_refused_total", float64(r.n), r.reason)
	}
	e.put("hamirror_mlog_spooled_entries_total", float64(s.Log.Spooled))
	e.put("hamirror_mlog_delivery_failures_total", float64(s.Log.Failures))
	e.put("hamirror_mlog_exchanges_total", float64(s.Log.Exchanges))
	e.put("hamirror_mlog_gaps_total", float64(s.Log.Gaps))
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
