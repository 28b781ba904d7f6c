// Package iscsi is hamirror's pure-Go iSCSI initiator (RFC 7143, SPC-4,
// SBC-3). A Disk is one LUN behind its own session and satisfies
// mirror.Leg structurally:
//
//	d, err := iscsi.OpenLeg(ctx, "iscsi://user@array-a:3260/iqn.2026-01.com.example:a/1",
//		iscsi.Config{SecretFile: "/etc/hamirror/chap-a", Timeout: 5 * time.Second})
//	err = d.WriteAt(buf, 0, true) // WRITE(16) with FUA
//	err = d.Flush()               // SYNCHRONIZE CACHE(16)
//	err = d.Zero(0, 1<<20, true)  // UNMAP / WRITE SAME where advertised and allowed, else zeros
//
// Config.ZeroByWriting (cluster file iscsi.zero_by_writing: auto, always,
// never) says when Zero writes zero blocks instead: by default (auto) on
// arrays known to run UNMAP and WRITE SAME for initiators a reservation
// shuts out (tgtd, told by its standard INQUIRY: vendor IET, product
// VIRTUAL-DISK), so a fenced node can clear nothing; always; or never
// (the operator trusts the array).
//
// StartReadAt and StartWriteAt are the same I/O without a goroutine per
// request: done runs once, usually on the session's receive goroutine, and
// may start the next request (an event loop, as libiscsi's callers run):
//
//	d.StartReadAt(buf, off, func(err error) { ... }) // done must not block
//
// A command or NOP-Out ping unanswered within Config.Timeout fails every
// outstanding command with ErrTimeout; the Disk keeps logging in again in the
// background and later calls succeed once the target is back. Errors wrap
// sentinels (ErrTimeout, ErrDisconnected, ErrReservationConflict, ErrAuth,
// ...) and *SenseError; test them with errors.Is / errors.As.
//
// An array may be down when the node starts: OpenLegInBackground returns
// the Disk at once and logs in in the background (every ReconnectInterval).
// Until its first login the Disk is not Ready: commands fail fast with
// ErrNotConnected (also ErrDisconnected) and Size is 0; the first login
// identifies the LUN. Treat a Disk that is not Ready as a leg that is down:
//
//	d, err := iscsi.OpenLegInBackground(spec, cfg) // only spec/cfg errors
//	err = d.WaitReady(ctx)                          // or poll d.Ready()
//
// Sessions: a Config says its Purpose (PurposeVolume, PurposeDiskHeartbeat,
// PurposeTool, PurposeReadOnly) and package iscsi derives the ISID from
// (initiator name, purpose, target, LUN): a node's sessions of different
// purposes to one LUN are different I_T nexuses and never reinstate (drop)
// each other, and each keeps its ISID across restarts.
//
// SCSI-3 persistent reservations are methods of Disk: the raw PERSISTENT
// RESERVE commands (ReadKeys, ReadReservation, ReportCapabilities,
// Register, Reserve, Release, Preempt, PreemptAndAbort, Clear) and the
// helpers a fence agent needs (reservations.go):
//
//	caps, err := d.ReportCapabilities()       // caps.Supports(iscsi.WriteExclusiveRegistrantsOnly)
//	err = d.EnsureRegistered(key)             // REGISTER AND IGNORE EXISTING KEY, or REGISTER where refused
//	ok, err := d.IsRegistered(key)            // is THIS session registered (REGISTER key→key)
//	aborted, err := d.PreemptAbort(key, victim, iscsi.WriteExclusiveRegistrantsOnly) // PREEMPT if refused
//	d.KeepRegistered(key, group)              // restore the registration after a reconnect, guarded
//
// UNIT ATTENTIONs (2A/03 reservations preempted, 2A/04 released, 2A/05
// registrations preempted, 29/xx resets) and TASK ABORTED (another
// initiator's PREEMPT AND ABORT) are absorbed by sending the command
// again, so a fenced node's write ends with ErrReservationConflict.
//
// Where tgtd 1.0.85 differs from SPC-4: it refuses PREEMPT AND ABORT
// (ILLEGAL REQUEST 24/00; PreemptAbort falls back to PREEMPT); it binds a
// registration and the reservation to the session rather than the I_T
// nexus, so a reconnect leaves the new session unregistered and the old
// registration listed (KeepRegistered restores it before the session
// carries I/O, only while the key is still registered elsewhere and with
// the PR generation proving no PREEMPT slipped in; Reregister documents the
// steps); it forgets every reservation when it restarts (no APTPL); and
// it checks no reservation on UNMAP and WRITE SAME (they carry no conflict
// rule in its command table: a non-registrant's UNMAP on a thin LUN gets
// GOOD and deallocates), so Zero writes zeros on tgtd by default
// (ZeroWritingAuto).
//
// Linux LIO (kernel 6.1; testenv/lab TestLIOArray) differs from tgtd here:
//   - Login: with per-ACL authentication it refuses AuthMethod=None with
//     status 0201, which reads as ErrAuth "the target requires CHAP"; it
//     answers InitialR2T=Yes, FirstBurstLength 64 KiB, MaxBurstLength
//     256 KiB and a CmdSN window of 64, all negotiated as usual.
//   - Identity: without a unit serial (targetcli always sets one) it lists
//     no VPD page, so Info has no serial or device IDs and Limits are zero.
//   - Zeroing: with emulate_tpws it advertises WRITE SAME with UNMAP over a
//     backing device that keeps its data on discard (LBPRZ 0) and then only
//     discards; Zero sets the UNMAP bit only where LBPRZ promises zeros.
//   - A disabled TPG closes every session once the commands at its backing
//     device have ended and refuses logins (0301) until enabled; the Disk
//     keeps logging in.
//   - Reservations: PREEMPT AND ABORT works (ErrAborted retries, then the
//     conflict), registrations survive reconnects (KeepRegistered restores
//     nothing), and a REGISTER fails with NOT READY 08/00 after taking
//     effect when LIO's PR folder (db_root/pr) is missing: the error says
//     so. Another ISID of the reservation holder's initiator name counts as
//     unregistered on LIO, while other initiators count per name, not per
//     ISID: resources/fence/doc.go says what that means for a node.
//
// Discover runs a SendTargets discovery.
//
// Layout: pdu.go/pdus.go (wire format), text.go, negotiate.go, chap.go and
// login.go (pure login state machine), liveness.go (pure timeout rules),
// session.go/reader.go/outq.go/rawsock.go (full feature phase: one reader
// dispatching by ITT and sending what its completions start, combined
// writev output, raw non-blocking socket calls), disk.go/io.go/async.go
// (SCSI; async.go runs READ/WRITE from completion callbacks), pr.go and
// reservations.go (persistent reservations), purpose.go (ISIDs),
// connect.go (dial, login, discovery).
package iscsi
