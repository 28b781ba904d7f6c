// Package ocf holds ocf:hamirror:volume, the OCF resource agent that lets
// Pacemaker run a hamirror volume, and its tests. The agent is a POSIX sh
// script, hamirror/volume (the folder mirrors /usr/lib/ocf/resource.d, where
// `make install-ocf` puts it); this package has no Go API.
//
// It is the other way round from resources/agents' OCF agent, which lets
// hamirror's own resource group run Pacemaker's agents: here Pacemaker and
// Corosync are the cluster manager and hamirror is only the volume.
//
//	pcs resource create vol ocf:hamirror:volume \
//	    legs="/dev/disk/by-id/scsi-ARRAY-A /dev/disk/by-id/scsi-ARRAY-B" device=/dev/nbd0 \
//	    op start timeout=90s op stop timeout=90s op monitor interval=10s timeout=30s
//	crm_resource --force-start -r vol          # or by hand, as ocf-tester does:
//	OCF_ROOT=/usr/lib/ocf OCF_RESOURCE_INSTANCE=vol OCF_RESKEY_legs="a.img b.img" \
//	    /usr/lib/ocf/resource.d/hamirror/volume start; echo $?   # 0 serving, 1 held or failed
//
// Actions: start (mirrord volume in the background with a pid file; success
// only once the volume is served clean, degraded or resyncing; a split brain
// or a lone leg that is not provably newest stops mirrord and fails with
// the reason in ocf-exit-reason), stop (SIGTERM and wait for the clean
// close, SIGKILL shortly before the timeout), monitor (0 serving, 7 not
// running, 1 failed, fenced or not answering), validate-all and meta-data.
// docs/PACEMAKER.md says how to configure it and how fencing with
// fence_scsi interacts with the volume.
//
// The tests run every action against a real mirrord over file legs and
// over two tgtd LUNs, with and without Pacemaker's ocf-shellfuncs; Debian's
// ocf-tester and Pacemaker's own crm_resource --force-* run it too, and
// shellcheck keeps it POSIX sh.
package ocf
