// Package registry is the cluster's node registry and coordinator (R7,
// R9, R11, R13, R14): the index table (every node's ID, addresses, backup
// target and its IP, Normal/Failed, and the storage space and location
// each node registered), kept by one coordinator and replicated to every
// node over the channel.
//
// The decisions are a pure machine (machine.go: membership views, tables
// and requests in; a table to persist and send out); Registry runs it,
// saves the table (state_dir/services/table.json, fsynced) and serves the
// requests:
//
//	registry.register       a node's ID, addresses and storage (R11)
//	registry.target_failed  R9: "my backup target failed"; the coordinator
//	                        marks it Failed, gives the node the failed
//	                        target's own target and sends the new table to
//	                        every node (the traffic service re-sends)
//	registry.remove         R14: a node leaves for good
//	registry.handback       the returning first-ranked node asks for the role
//	registry.table / .get   table distribution and catch-up pulls
//
// Online state is the heartbeat's: the coordinator marks a dead node
// Failed (so it is no longer a backup target) and a Failed node is Normal
// again once it registers while live. When the coordinator dies, the
// first-ranked live node takes over with the full table it holds, in a
// new term. A node that starts first pulls the newest table from its
// peers and catches up (logs, traffic data) before it decides anything;
// with Failback it then asks for the role back.
//
// The coordinator here is the registry's own, not heartbeat.Status's
// (which follows the active resource-group node): the table should not
// move when the service moves. See docs/HA.md.
//
//	r, err := registry.New(registry.Options{Config: cfg, Dir: dir, Net: ch,
//		View: func() map[heartbeat.NodeID]heartbeat.NodeState { ... },
//		OnTable: func(t registry.Table) { ... }})
//	r.PullTables(ctx); /* catch up */ r.SetCaughtUp()
//	go r.Run(ctx)
//	err = r.ReportTargetFailed(ctx, target)
//	err = r.Remove(ctx, "node3")
package registry
