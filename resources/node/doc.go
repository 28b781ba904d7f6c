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
package node
