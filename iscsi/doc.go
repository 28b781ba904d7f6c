// Package iscsi is hamirror's pure-Go iSCSI initiator (RFC 7143, SPC-4,
// SBC-3). A Disk is one LUN behind its own session and satisfies
// mirror.Leg structurally:
//
//	d, err := iscsi.OpenLeg(ctx, "iscsi://user@array-a:3260/iqn.2026-01.com.example:a/1",
//		iscsi.Config{SecretFile: "/etc/hamirror/chap-a", Timeout: 5 * time.Second})
//	err = d.WriteAt(buf, 0, true) // WRITE(16) with FUA
//	err = d.Flush()               // SYNCHRONIZE CACHE(16)
//	err = d.Zero(0, 1<<20, true)  // UNMAP / WRITE SAME where advertised, else zeros
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
// Persistent reservations (Register, Reserve, Preempt, ReadKeys, ...) are
// methods of Disk; Discover runs a SendTargets discovery.
//
// Layout: pdu.go/pdus.go (wire format), text.go, negotiate.go, chap.go and
// login.go (pure login state machine), liveness.go (pure timeout rules),
// session.go/reader.go/outq.go/rawsock.go (full feature phase: one reader
// dispatching by ITT and sending what its completions start, combined
// writev output, raw non-blocking socket calls), disk.go/io.go/async.go/pr.go
// (SCSI; async.go runs READ/WRITE from completion callbacks), connect.go
// (dial, login, discovery).
package iscsi
