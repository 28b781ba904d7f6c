// Package lab is hamirror's QEMU lab: real Linux kernels (Debian's cloud
// kernel, fetched with apt) booted under TCG with a busybox initramfs that
// carries hamirror's own static binaries, so tests can use what the host
// kernel lacks — /dev/nbdN, md RAID1, dm-mirror, a real UART between two
// servers and four NICs per node (R6: iSCSI, public, two private links).
//
//	l, err := lab.Start(ctx, lab.Config{Dir: t.TempDir(), Nodes: []lab.NodeConfig{
//		{Name: "n1", Disks: []lab.Disk{{Name: "leg0", Size: 256 << 20}, {Name: "leg1", Size: 256 << 20}}},
//		{Name: "n2"},
//	}})
//	defer l.Close()
//	out, err := l.Node("n1").Run(ctx, "mdadm --create /dev/md0 ...") // output + exit code
//	l.Client(ctx, "ping", "-c1", l.Node("n1").Addr(lab.NetPublic)) // from the public net's client side
//
// Networks: each network (NetISCSI, NetPublic, NetPriv1, NetPriv2) is a
// bridge inside a network namespace the lab creates; each node has one tap
// on each bridge, named iscsi, public, priv1 and priv2 inside the VM. The
// namespace's own address on the iSCSI and public bridges is the "client"
// (10.77.N.254), reachable with Lab.Client. The first two nodes' ttyS1 are
// joined by a QEMU socket chardev (a null-modem cable).
//
// iSCSI arrays: Lab.StartArrays runs tgtd in the namespace on the iSCSI
// network (ArrayPortal, 10.77.3.254:3260), one target per array, reachable
// from every node's iscsi NIC as Arrays.URL(name); Lab.StartArraysOn puts
// another tgtd on another port so that one array can fail alone
// (Arrays.Kill and Restart for a crash, Pause and Resume for a hang).
//
// A second real array: StartLIO configures the Linux kernel's iSCSI target
// (LIO, what most NAS and Linux storage appliances run) inside a VM through
// configfs, as targetcli would, with LUNs cut from one of the node's disks,
// CHAP ACLs, and optionally writes held in flight (dm-delay); SetEnabled and
// Restart take its TPG down or reboot it. Lab.Dial connects from the lab's
// namespace, so hamirror's initiator in the test process reaches it
// (iscsi.Config{Dial: l.Dial}).
//
// Faults of a whole node: Node.Stop kills QEMU (a power cut), Node.Freeze
// and Thaw pause and resume the VM (a hung server), Node.SetLink pulls and
// plugs one NIC's cable.
//
// Each VM runs labagent (package labagent) on a virtio-serial port; Node.Run
// sends it commands and returns output and exit code. Every VM's console is
// logged to DIR/NAME.console.log and can be attached interactively on the
// unix socket DIR/NAME.console (see cmd hamirror-lab).
//
// Downloaded and built pieces (kernel, modules, initramfs) are cached in
// CacheDir(), keyed by kernel package and content hash.
package lab
