// Package hblab is the heartbeat's network-namespace lab: real kernel
// objects on one host for heartbeat tests and the detection benchmark.
// Every node gets its own network namespace; each private medium is a
// bridge in a "switch" namespace with one veth per node (so 2..N nodes);
// a two-node lab also gets a serial line made of two pty pairs joined by
// a relay that can be cut; disk slots live in a plain shared file.
//
//	lab, err := hblab.New(hblab.Options{Name: "t1", Nodes: 2, Serial: true, Disk: true})
//	defer lab.Close()                  // deletes the namespaces, even after a failure
//	n1, _ := lab.Start(ctx, "n1")      // a heartbeat.Member on real sockets and ttys
//	lab.CutNIC("n1", "nic1", true)     // pull n1's nic1 cable (veth down on the switch side)
//	lab.CutSerial(true)
//	ev, err := n1.WaitEvent(3*time.Second, hblab.NodeEvent("n2", "dead"))
//
// A member can also run in a child process (the test binary itself, whose
// TestMain calls hblab.ChildMain first), so that a test can stop it with
// SIGSTOP as a paused VM is stopped:
//
//	p, _ := lab.StartProcess("n2", os.Args[0], "-test.run=^$")
//	p.Signal(syscall.SIGSTOP); ...; p.Signal(syscall.SIGCONT)
//	p.WaitEvent(...)                   // its events, read from its stdout
//
// Needs root (CAP_SYS_ADMIN for namespaces); Available tells why not.
package hblab
