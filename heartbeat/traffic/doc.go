// Package traffic is the traffic-data backup (R8–R10): every node samples
// its NICs' counters (bytes, packets, errors, drops per interface) through
// netlink at services.traffic_interval into a local data file of
// checksummed records (sample.go), and streams the file to its backup
// target named by the index table (heartbeat/registry).
//
// A send that fails twice is reported to the coordinator (R9's message,
// registry.ReportTargetFailed), once per table version, unless this node
// is Failed itself (its own links are then the suspect); the coordinator
// marks the target Failed, gives this node the failed target's own target
// and sends the new table to every node; Push then sends that new target
// everything it does not hold yet (all of it, for a target that never had
// any). A node that holds the data of a Failed node whose target moved
// elsewhere (the node was removed, or its target changed) hands that data
// over, since the Failed node cannot (R14: two copies again).
//
// Query answers `mirrorctl traffic NODE` on any node: from NODE while the
// table says Normal, from its backup target when Failed (or removed), and
// always says NODE's state and the node that answered (R10).
//
//	svc, err := traffic.New(traffic.Options{Self: "n1", Dir: dir, Net: ch,
//		Table: reg.Table, ReportFailed: reg.ReportTargetFailed, Interval: 10 * time.Second})
//	go svc.Run(ctx)          // sample, push; svc.Kick() on every new table
//	ans, err := svc.Query(ctx, "n2", since, 100)
package traffic
