package iscsi

import (
	"crypto/sha256"
	"fmt"
)

// Purpose says what a session is for. Package iscsi owns ISIDs: a Disk's
// ISID is derived from (initiator name, purpose, target, LUN), so the
// sessions one node opens to one LUN for different purposes are different
// I_T nexuses and never reinstate (drop) each other, while a session of a
// given purpose keeps the same ISID across restarts, as SCSI-3 persistent
// reservations need (a registration belongs to an I_T nexus).
type Purpose uint8

const (
	// PurposeVolume: the mirror leg of the node's daemon, also used for
	// the fence agent's reservation commands. The zero value, so a Config
	// that says nothing gets the ISID the daemon has always used.
	PurposeVolume Purpose = iota
	// PurposeDiskHeartbeat: the daemon's disk-heartbeat session, which
	// writes its slot beside the volume's session.
	PurposeDiskHeartbeat
	// PurposeTool: one-shot commands (mirrorctl) run beside the daemon.
	PurposeTool
	// PurposeReadOnly: a read-only look at a leg (examine) opened by a
	// program that did not say otherwise.
	PurposeReadOnly

	numPurposes
)

// isidSuffix keeps the ISIDs of earlier releases: the volume's was derived
// from the bare name, the tool's and read-only's from these suffixes.
var purposeNames = [numPurposes]struct{ name, suffix string }{
	PurposeVolume:        {"volume", ""},
	PurposeDiskHeartbeat: {"disk-heartbeat", " disk-heartbeat"},
	PurposeTool:          {"tool", " mirrorctl"},
	PurposeReadOnly:      {"read-only", " read-only"},
}

func (p Purpose) String() string {
	if p < numPurposes {
		return purposeNames[p].name
	}
	return fmt.Sprintf("purpose(%d)", uint8(p))
}

func (p Purpose) valid() bool { return p < numPurposes }

// hashISID makes an ISID of type "random" (0x80) from s.
func hashISID(s string) [6]byte {
	sum := sha256.Sum256([]byte("hamirror isid " + s))
	var isid [6]byte
	copy(isid[:], sum[:])
	isid[0] = 0x80 | isid[0]&0x3f
	return isid
}

// DeriveISID is the node's base ISID for sessions of purpose p: stable
// per (initiator name, purpose), type "random" (0x80).
func DeriveISID(initiatorName string, p Purpose) [6]byte {
	return hashISID(initiatorName + p.suffix())
}

func (p Purpose) suffix() string {
	if p.valid() {
		return purposeNames[p].suffix
	}
	return fmt.Sprintf(" purpose %d", uint8(p))
}

// SessionISID is the ISID of a Disk's session to one LUN: derived from
// base (Config.ISID, by default DeriveISID(InitiatorName, p)), the purpose,
// the target name and the LUN number. Two LUNs of one target, and two
// purposes on one LUN, get different ISIDs even from one explicit base.
func SessionISID(base [6]byte, p Purpose, target string, lun uint64) [6]byte {
	return hashISID(fmt.Sprintf("%x %s %d", base, target, lun) + p.suffix())
}
