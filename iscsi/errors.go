package iscsi

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error the package returns wraps one of these (or a
// *SenseError / *StatusError) with %w, so callers test with errors.Is/As.
var (
	// ErrProtocol: the target sent something RFC 7143 does not allow. The
	// connection is dropped and re-established.
	ErrProtocol = errors.New("iscsi: protocol violation by the target")
	// ErrDigest: a header or data digest did not match (corruption on the wire).
	ErrDigest = errors.New("iscsi: digest mismatch")
	// ErrTimeout: a command or NOP-Out ping was not answered within the
	// configured timeout; the connection was dropped.
	ErrTimeout = errors.New("iscsi: target did not answer within the timeout")
	// ErrDisconnected: there is no logged-in session right now (the Disk is
	// reconnecting in the background).
	ErrDisconnected = errors.New("iscsi: not connected to the target")
	// ErrNotConnected: a Disk opened in the background has not logged in
	// yet. It is also ErrDisconnected (errors.Is): the array does not
	// answer.
	ErrNotConnected = fmt.Errorf("%w yet: the first login has not succeeded", ErrDisconnected)
	// ErrClosed: the Disk or session was closed by its user.
	ErrClosed = errors.New("iscsi: closed")
	// ErrLogin: the target refused the login (wrong target name, no access).
	ErrLogin = errors.New("iscsi: login refused")
	// ErrAuth: CHAP authentication failed in either direction.
	ErrAuth = errors.New("iscsi: authentication failed")
	// ErrReservationConflict: the LUN is reserved by another initiator
	// (SCSI status RESERVATION CONFLICT); typically this node has been fenced.
	ErrReservationConflict = errors.New("iscsi: reservation conflict (the LUN is reserved by another initiator)")
	// ErrBusy: the target stayed BUSY or TASK SET FULL through every retry.
	ErrBusy = errors.New("iscsi: target busy")
	// ErrAborted: the target ended the command with TASK ABORTED (another
	// initiator's PREEMPT AND ABORT or task management) on every retry.
	ErrAborted = errors.New("iscsi: command aborted by the target")
	// ErrUnitAttention: a UNIT ATTENTION persisted through every retry.
	ErrUnitAttention = errors.New("iscsi: unit attention")
	// ErrMedium: a medium or hardware error (the data may be lost).
	ErrMedium = errors.New("iscsi: medium error")
	// ErrIllegalRequest: the target rejected the command or its parameters.
	ErrIllegalRequest = errors.New("iscsi: illegal request")
	// ErrNotReady: the LUN is not ready.
	ErrNotReady = errors.New("iscsi: logical unit not ready")
	// ErrWriteProtected: the LUN is write protected.
	ErrWriteProtected = errors.New("iscsi: write protected")
	// ErrAlignment: an offset or length is not a multiple of the block size.
	ErrAlignment = errors.New("iscsi: I/O not aligned to the logical block size")
)

// SCSI status codes (SAM-5).
const (
	statusGood                = 0x00
	statusCheckCondition      = 0x02
	statusConditionMet        = 0x04
	statusBusy                = 0x08
	statusReservationConflict = 0x18
	statusTaskSetFull         = 0x28
	statusACAActive           = 0x30
	statusTaskAborted         = 0x40
)

// Sense keys (SPC-4).
const (
	SenseNoSense        = 0x0
	SenseRecoveredError = 0x1
	SenseNotReady       = 0x2
	SenseMediumError    = 0x3
	SenseHardwareError  = 0x4
	SenseIllegalRequest = 0x5
	SenseUnitAttention  = 0x6
	SenseDataProtect    = 0x7
	SenseAbortedCommand = 0xb
	SenseMiscompare     = 0xe
)

// SenseError is a CHECK CONDITION with its decoded sense data.
type SenseError struct {
	Op   string // e.g. "WRITE(16)"
	Key  byte
	ASC  byte
	ASCQ byte
}

func (e *SenseError) Error() string {
	return fmt.Sprintf("iscsi: %s: CHECK CONDITION, sense key %s (%#x), ASC/ASCQ %02x/%02x",
		e.Op, senseKeyName(e.Key), e.Key, e.ASC, e.ASCQ)
}

// Is lets errors.Is match a SenseError against the sentinel of its class.
func (e *SenseError) Is(target error) bool {
	switch target {
	case ErrUnitAttention:
		return e.Key == SenseUnitAttention
	case ErrMedium:
		return e.Key == SenseMediumError || e.Key == SenseHardwareError
	case ErrIllegalRequest:
		return e.Key == SenseIllegalRequest
	case ErrNotReady:
		return e.Key == SenseNotReady
	case ErrWriteProtected:
		return e.Key == SenseDataProtect
	}
	return false
}

func senseKeyName(k byte) string {
	names := map[byte]string{
		0x0: "NO SENSE", 0x1: "RECOVERED ERROR", 0x2: "NOT READY", 0x3: "MEDIUM ERROR",
		0x4: "HARDWARE ERROR", 0x5: "ILLEGAL REQUEST", 0x6: "UNIT ATTENTION", 0x7: "DATA PROTECT",
		0x8: "BLANK CHECK", 0x9: "VENDOR SPECIFIC", 0xa: "COPY ABORTED", 0xb: "ABORTED COMMAND",
		0xd: "VOLUME OVERFLOW", 0xe: "MISCOMPARE",
	}
	if n, ok := names[k]; ok {
		return n
	}
	return "RESERVED"
}

// StatusError is a SCSI status other than GOOD and CHECK CONDITION, or an
// iSCSI response other than "command completed at target".
type StatusError struct {
	Op       string
	Status   byte
	Response byte
}

func (e *StatusError) Error() string {
	if e.Response != 0 {
		return fmt.Sprintf("iscsi: %s: target failure (iSCSI response %#x)", e.Op, e.Response)
	}
	names := map[byte]string{
		statusBusy: "BUSY", statusReservationConflict: "RESERVATION CONFLICT",
		statusTaskSetFull: "TASK SET FULL", statusACAActive: "ACA ACTIVE", statusTaskAborted: "TASK ABORTED",
		statusConditionMet: "CONDITION MET",
	}
	n := names[e.Status]
	if n == "" {
		n = "unknown"
	}
	return fmt.Sprintf("iscsi: %s: SCSI status %s (%#x)", e.Op, n, e.Status)
}

// Is maps statuses to the sentinels.
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrReservationConflict:
		return e.Response == 0 && e.Status == statusReservationConflict
	case ErrBusy:
		return e.Response == 0 && (e.Status == statusBusy || e.Status == statusTaskSetFull)
	case ErrAborted:
		return e.Response == 0 && e.Status == statusTaskAborted
	}
	return false
}
