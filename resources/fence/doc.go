// Package fence is hamirror's fence agent: SCSI-3 persistent reservations
// (SPC-4 5.14, PERSISTENT RESERVE IN/OUT) on every array, sent through the
// node's own iSCSI sessions, so that a node the cluster gave up on can no
// longer write, data and disk-heartbeat slot alike.
//
// Every node registers its 8-byte key (nodes[].fence_key, default
// DeriveKey(cluster, node)) from each session that writes: the volume's
// (the mirror leg, which also carries the reservation commands) and the
// disk heartbeat's. The active node holds a Write Exclusive – Registrants
// Only (WE-RO) reservation, under which every registrant may write, so the
// standby's disk heartbeat keeps writing. A takeover removes the old
// owner's key with PREEMPT AND ABORT; after that each of its writes gets
// RESERVATION CONFLICT (iscsi.ErrReservationConflict, which the mirror
// reports as "fenced", never as a failed leg).
//
//	f, err := fence.New(fence.Config{Key: myKey, Peers: []uint64{peerKey},
//		Arrays: []fence.Array{{Name: "array-a", Volume: volA, DiskHeartbeat: hbA}, ...}})
//	res, err := f.Register(ctx)           // at start-up, and the clean rejoin of a fenced node
//	res, err = f.Takeover(ctx, peerKey)  // the peer is dead: fence it on every reachable array (waits PreemptDrain after a plain PREEMPT)
//	res, err = f.Acquire(ctx)            // clean hand-over: reserve (or write under a peer's WE-RO), keep the peer registered
//	res, err = f.Release(ctx)            // clean stop: drop the reservation unless a fenced peer is not back, stay registered
//	res, err = f.Check(ctx)              // monitor; errors.Is(err, fence.ErrFenced): we were fenced
//	res.Fenced(), res.Unreachable()      // per array; res.Arrays has the detail
//
// Fence also is a resources.Agent: Start runs Acquire, or Takeover after
// SetStart(StartTakeover[, victims...]); Stop runs Release (and succeeds on
// a fenced node, which holds nothing); Monitor runs Check and answers
// resources.ErrNotRunning for a registered node that does not hold the
// reservation.
//
// Rules (plan.go decides them without I/O; array.go reads the array, takes
// one step, reads again until the array shows the goal):
//   - A takeover never starts without success on every reachable array;
//     unreachable arrays are reported, not fatal; none reachable is
//     ErrNoArray. For an array that comes back, the node runs Takeover
//     again (Acquire if the peer is alive and clean) before the leg is
//     re-added (mirror.Options.BeforeReAdd); both are idempotent on the
//     arrays already done.
//   - A takeover reserves before it preempts (a victim holding the
//     reservation is preempted with it, which moves it to us). It takes
//     the arrays one at a time in the order of their names and stops at
//     the first failure, so two nodes taking over from each other at once
//     (both declared the other dead) meet on the same first array, where
//     one removes the other; the loser never touches the other arrays.
//   - Our key gone from an array we had joined is a fence when the array
//     kept its reservation state: its PR generation (READ KEYS) did not go
//     back since our last read that listed our key; whoever holds the
//     reservation now, even nobody (the new owner released it). That is
//     ErrFenced, and a fenced node never registers or preempts on its own
//     (Takeover and Acquire refuse; Check sends nothing) until Register,
//     the clean rejoin. Every operation but Register first reads every
//     array and takes no step on any once one shows this node fenced, so
//     a fenced node never joins an array it had not joined yet.
//   - Our key gone and the PR generation gone back is not a fence: the
//     array lost its reservations (tgtd keeps them in memory, so a
//     restart empties them and resets the generation), whoever reserved
//     since; the agent registers again. (A restart right after start-up,
//     before the generation grew past what the peer adds after the
//     restart, reads as a fence: the safe side.)
//   - A clean stop never un-fences: Release keeps the reservation on an
//     array where a peer's key is not registered (a node this one fenced
//     that has not rejoined; with no reservation held, any initiator may
//     write) and reports it (ArrayResult.Kept). Release by a node that
//     does not hold the reservation does nothing. That peer, once it
//     rejoined (Register), starts with Acquire, which accepts a WE-RO
//     reservation held by a registered peer: every registrant writes
//     under it, so holding it is not needed. (The arrays cannot tell a
//     peer that kept its reservation from one still running: Acquire is
//     for a clean hand-over only, which the group and the engine's
//     multi-mount protection establish.)

// Where tgtd (1.0.85, the array of the tests) differs from SPC-4, and
// what the agent does about it:
//   - PREEMPT AND ABORT is not implemented (ILLEGAL REQUEST 24/00): plain
//     PREEMPT (iscsi.Disk.PreemptAbort falls back; ArrayResult.Aborted
//     says which). The victim's commands already admitted then still
//     complete (tgtd checks the reservation when it admits a command, and
//     its backing-store threads write it later); every later one
//     conflicts. Measured with 120 FUA writes of 64 KiB in flight: in
//     about half the rounds writes landed after Takeover returned, the
//     latest 68 ms after (drain_tgtd_test.go, a shared box). So after a
//     plain PREEMPT, Takeover sends an ordered barrier to that array
//     (iscsi.Disk.Barrier: TEST UNIT READY with the ORDERED task
//     attribute, where the Control mode page says one task set is shared
//     by every initiator, as tgtd's does): it starts only once every
//     command admitted before it ended, so when it returns the victim's
//     writes have landed (Result.Barrier; a few ms). Where the array
//     offers no barrier (or Config.NoBarrier), Takeover waits
//     Config.PreemptDrain instead (default DefaultPreemptDrain, 500 ms;
//     Result.Drained): a measured margin, not a proof; an array with
//     deeper queues or slower media may need a longer PreemptDrain.
//   - A registration belongs to the session, not to the I_T nexus (name +
//     ISID): a reconnect after a network blip leaves the new session
//     unregistered and the old registration listed under our key. Each
//     writing session restores its registration after a reconnect, before
//     carrying I/O, only while our key is still registered and proven by
//     the PR generation (iscsi.Disk.KeepRegistered, under the array's
//     iscsi.RegistrationGroup), so a blip never looks like a fence and a
//     preempted node never registers back.
//   - The reservation likewise stays with the old session's registration:
//     RELEASE from the new session does nothing. Release notices, takes it
//     back with a PREEMPT of our own key, releases it and restores our
//     other sessions' registrations by logging them in again.
//   - A session that carries I/O is never registered by a guarded
//     (unproven) step: between the guard's READ KEYS and its REGISTER a
//     takeover could finish, and the session's writes would land until
//     the undo. A live session found unregistered is logged in again
//     (iscsi.Disk.RestoreByRelogin); its new session registers before it
//     carries I/O. The disk heartbeat misses a beat or two meanwhile.
//   - Reservations do not persist through a restart (no APTPL; REPORT
//     CAPABILITIES says PTPL_C 0): see the third rule above.
//   - UNMAP and WRITE SAME get no reservation check (its command table
//     gives them no conflict rule): a fenced node's TRIM on a thin LUN
//     would get GOOD and erase the new owner's blocks. The iSCSI Disk
//     therefore zeroes tgtd LUNs by writing (iscsi.Config.ZeroByWriting,
//     cluster file iscsi.zero_by_writing: auto, the default, recognises
//     tgtd by its INQUIRY: vendor IET, product VIRTUAL-DISK; always;
//     never), and those WRITEs conflict like any other.
//
// Where Linux LIO (the kernel target of most NAS and Linux appliances;
// kernel 6.1 in the QEMU lab, testenv/lab TestLIOArray) differs from tgtd,
// and what the agent does about it:
//   - PREEMPT AND ABORT works (ArrayResult.Aborted true). LIO answers it
//     only once the victim's commands already at the array have ended, so
//     when Takeover returns no write of the victim can land any more; the
//     victim's initiator gets TASK ABORTED, sends the command again and
//     ends it with RESERVATION CONFLICT. A takeover may take as long as
//     the array's slowest I/O in flight.
//   - Registrations belong to the I_T nexus: they survive a network hang,
//     a reconnect and a TPG disabled and enabled again; READ KEYS lists no
//     stale keys and RELEASE works from the new session. KeepRegistered
//     finds each session still registered and restores nothing.
//   - NOT HANDLED YET: LIO lets only the holder's own I_T nexus of the
//     holder's initiator name write; another session of that name (the
//     active node's disk heartbeat, iscsi.PurposeDiskHeartbeat) counts as
//     unregistered and its slot writes get RESERVATION CONFLICT. Fencing
//     is unaffected, but an active node's disk-heartbeat medium is silent
//     on LIO arrays. A session under an initiator name of its own,
//     registered with the node's key, does write (proven in the lab): give
//     the disk heartbeat its own IQN (one more ACL on the array), or write
//     the slots through the volume's session.
//   - For every other initiator LIO decides "registered" per initiator
//     name and LUN: a session of a registered node that never registered
//     itself (mirrorctl's) may write under WE-RO; tgtd refuses it. A
//     preempted node has no registration left and is refused on both.
//   - LIO keeps reservations in memory unless the initiator asks for APTPL
//     (hamirror does not, though REPORT CAPABILITIES says PTPL_C): a LIO
//     restart forgets them as a tgtd restart does (third rule above).
//   - LIO saves PR state under db_root/pr (/var/target/pr by default);
//     without that folder it applies a REGISTER and then answers NOT READY
//     08/00, so Register fails with an error naming the folder.
//
// An array restart that forgot the registrations (either array) has an
// order: the standby's Check must register again before the active node's
// Check reserves again, or the standby finds its key gone under another
// node's reservation and counts itself fenced (until Register).
// `mirrorctl iscsi info` tells an administrator whether a LUN supports
// WE-RO before going live.
package fence
