// Package halab is the failover lab: the network-namespace topology that
// issue 11's failover tests, `make demo` and the failover benchmark all
// drive, with a client loop that measures what a user of the service sees.
//
// Topology (every name prefixed halab-NAME-PID-RAND, so labs coexist):
//
//	client ──pub── [sw: bridge pub] ──pub0── n1, n2      public network 10.20.0.0/24, VIP 10.20.0.10
//	n1 ──priv1── [sw: bridge priv1] ──priv1── n2          private link 1, 10.21.0.0/24
//	n1 ──priv2── [sw: bridge priv2] ──priv2── n2          private link 2, 10.22.0.0/24
//	n1 ~~ serial line (two pty pairs and a relay that can be cut) ~~ n2
//	n1, n2 ──san0── [san: bridge san, tgtd arrays at 10.30.0.1:3260, 10.30.0.2:3260]
//
// Each node is a network namespace plus, while up, a process tree in its
// own mount, IPC, UTS and PID namespaces (hostname n1/n2, private /run and
// /dev/shm, private copies of Options.Private folders, Options.Overlay
// folders with the node's files on top). Everything started in a node runs
// in all of them (Node.Command, Node.StartDaemon), so Node.Crash (every
// cable pulled at the switch, then SIGKILL of the node's PID 1: the kernel
// kills the rest) is a power cut, and Node.Freeze SIGSTOPs processes.
//
//	l, err := halab.New(ctx, halab.Options{Name: "t", Private: []string{"/etc/keepalived"}})
//	defer l.Close()                         // everything, also after a failed step
//	n1 := l.Node("n1")
//	n1.Sh(ctx, "ip addr add 10.20.0.10/24 dev pub0")
//	c := l.StartClient(halab.ClientOptions{}) // INSERTs through the VIP, records each commit
//	t := time.Now(); n1.Crash()
//	o, err := c.WaitOutage(ctx, t, time.Minute)  // first failure to first success
//	l.Arrays()[0].Kill(); l.CutLink("n2", halab.LinkPublic, true); l.CutSerial(true)
//
// Systems (keepalived, Pacemaker, later hamirror) implement System and are
// measured by a Campaign: many runs of one fault, p50/p99/max of the
// client-visible outage, the VIP's move, the system's own breakdown and the
// acknowledged rows the new active node lacks. A fence agent in a node
// cuts another node's power through the lab's power switch (PowerDir;
// testenv/halab/peers has fence_halab).
//
// Limits of one host: the nodes share one kernel, so a loop device both
// nodes mount (LoopDevice, the lab's stand-in for a SAN LUN) is one
// filesystem instance: a takeover mount replays no journal, and page cache
// survives a node's crash. No kernel iSCSI initiator or SCSI layer here:
// nodes reach the tgtd arrays only through user-space initiators.
//
// Loop devices are the host's: one a node attached (hamirror's volume on
// its nbdfuse file) outlives the node's processes, and once the node's
// mounts are gone it no longer shows whose it is. So the lab lists a
// node's loop devices (Node.Loops: those on its own filesystems, each
// told apart by its diskseq) right before it kills the node or one of its
// daemons, and releases them as the node's reboot would; it never touches
// another loop device. Every process of a node starts with umask 022, as
// after a boot, whatever the harness's.
//
// Needs root; Available says what is missing. Close removes namespaces,
// node processes (reaped), tgtd, the nodes' and the lab's loop devices and
// the lab's folder; a lab whose process died is swept by the next New.
package halab
