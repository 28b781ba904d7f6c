// Package node is mirrord's composition root: it loads the whole cluster
// file once, opens one iSCSI session per array and purpose, hands them to
// the mirror engine, the disk heartbeat and the fence agent, runs
// membership (heartbeat.Member) and the resource group (resources.Group)
// with its agents, and answers the control operations mirrorctl sends.
// cmd/mirrord only parses flags and serves Handlers on the control socket;
// tests import this package to run whole nodes.
//
//	cfg, err := node.LoadConfig("/etc/hamirror/cluster.yaml", "node1")
//	n, err := node.New(cfg, node.Options{})
//	go n.Run(ctx)
//	for op, h := range n.Handlers() { ctl.Handle(op, h) }
//	go n.ReloadOn(ctx, sighup)              // also the "reload" control op
//	n.MetricsAddr()                         // Prometheus on metrics.listen, a registry per node
//
// A reload re-reads and validates the whole file, applies what can change
// live (group thresholds, resource timeouts and monitor intervals,
// log.level, metrics.listen) and names every other changed key as needing
// a restart (reload.go). The metrics collector reads one Status snapshot
// per scrape (metrics.go); starts.go records group starts and takeovers.
package node
