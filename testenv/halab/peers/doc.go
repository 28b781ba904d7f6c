// Package peers drives the HA stacks hamirror is measured against on the
// failover lab (testenv/halab), each as a halab.System, so one campaign
// measures them all with the same client loop:
//
//   - Keepalived: the VIP alone, over VRRP, with PostgreSQL running on both
//     nodes independently; keepalived's defaults or a sub-second advert_int.
//
//   - Pacemaker: Pacemaker 2.1 and Corosync 3.1 (knet over both private
//     links, two_node), each node's daemons in their own network, mount,
//     IPC, UTS and PID namespaces; the group Filesystem (ext4 on a loop
//     device both nodes see), IPaddr2 and pgsql; fencing by fence_halab, a
//     small agent that asks the lab's power switch to cut the node's power.
//
//     l, _ := halab.New(ctx, halab.Options{Private: peers.PacemakerPrivate, Overlay: []string{"/usr/sbin"}})
//     s := &peers.Pacemaker{Token: 1000}
//     s.Setup(ctx, l); s.Start(ctx)
//     res, err := halab.Campaign{Lab: l, System: s, Fault: halab.FaultKill, Runs: 10}.Run(ctx)
//
// hamirror's own node will be one more halab.System.
package peers
