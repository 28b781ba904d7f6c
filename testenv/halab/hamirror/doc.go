// Package hamirror drives hamirror's own failover node on the failover
// lab (testenv/halab): it is the halab.System that the failover tests
// (cmd/mirrord's failover_e2e_test.go) and `make bench SECTIONS=failover`
// run, next to keepalived and Pacemaker.
//
// Setup writes one cluster file for the lab (two nodes, both private links
// and the serial line, disk heartbeats on the mirror legs, the volume over
// the lab's two tgtd arrays attached with nbdfuse and a loop device, an
// ext4 filesystem on it, the VIP on the public bridge, PostgreSQL with its
// data directory on the filesystem), creates the mirror once (mirrorctl
// create), makes the filesystem and the database (through a one-off
// `mirrord volume`), and Start runs `mirrord --config FILE --node N` in
// each node's namespaces:
//
//	l := halab.ForTest(t, halab.Options{Name: "hm", LUNSize: 192 << 20})
//	s := &hamirror.System{Bin: dir /* mirrord, mirrorctl */, Profile: hamirror.DefaultProfile()}
//	err := s.Setup(ctx, l)
//	err = s.Start(ctx)                   // both nodes; the preferred one (n1) runs the group
//	st, err := s.Status("n1")            // the node's control socket, "status"
//	err = s.CallNode("n1", "move", nil, nil) // any control operation
//	phases, err := s.Breakdown(ctx, fault, "n2") // detect, fence, assemble, mount, VIP, database ready
//
// Faults: Kill (a power cut), Freeze (mirrord alone SIGSTOPped),
// PublicDown (with Profile.Ping the lab's client is the ping target and
// the node hands the group over), KillArray (halab.FaultArrayKill: one
// array dies under the active node, which runs on degraded); Recover
// undoes each and waits for a whole pair again.
//
// Each node's state_dir (takeover term, peer knowledge, standby flag)
// lives in the node's folder and survives its crashes; its control socket
// is NODE_DIR/mirrord.sock, reachable from the host. The volume's loop
// device is the host's, shared by every namespace: the lab releases it
// when the node that attached it crashes or its mirrord is killed, as the
// node's reboot would (halab.Node.Loops).
package hamirror
