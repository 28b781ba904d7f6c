// Package legopts holds the command-line flags that say how legs are opened
// — the iSCSI initiator name, CHAP secret files and login timeout — shared
// by mirrord and mirrorctl so every command that takes a leg takes an
// iscsi:// leg the same way. CHAP secrets come from files only, never from
// the command line.
//
//	var lf legopts.Flags
//	lf.Add(cmd.Flags(), true)
//	leg, err := mirror.OpenLeg(spec, lf.LegOptions(false))
package legopts

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/mirror"
)

// Flags are the leg-opening settings.
type Flags struct {
	InitiatorName    string
	ChapUser         string
	ChapSecretFile   string
	TargetUser       string
	TargetSecretFile string
	Timeout          time.Duration
	// ZeroByWriting is --zero-by-writing: auto, always or never (see
	// iscsi.ZeroWritingMode); Open rejects anything else.
	ZeroByWriting string
	// Purpose is what the sessions are for: mirrorctl's commands say
	// iscsi.PurposeTool, so running one beside mirrord on the same node
	// never reinstates — that is, drops — the daemon's sessions; the
	// daemon's disk heartbeat says iscsi.PurposeDiskHeartbeat. Package
	// iscsi derives each purpose's ISID (persistent reservations are bound
	// to the volume's, so a tool's write to a reserved LUN is refused, as
	// it should).
	Purpose iscsi.Purpose
}

// Add registers the flags. withTimeout adds --timeout (commands whose I/O
// timeout is set another way, like mirrord's --io-timeout, leave it out).
func (f *Flags) Add(fl *pflag.FlagSet, withTimeout bool) {
	fl.StringVar(&f.InitiatorName, "initiator-name", "", "iSCSI initiator IQN (default: this node's, "+iscsi.DefaultInitiatorName()+")")
	fl.StringVar(&f.ChapUser, "chap-user", "", "iSCSI CHAP user name (or give it in the URL: iscsi://USER@host/...)")
	fl.StringVar(&f.ChapSecretFile, "chap-secret-file", "", "file holding the iSCSI CHAP secret")
	fl.StringVar(&f.TargetUser, "target-chap-user", "", "mutual CHAP: the name the target must authenticate with")
	fl.StringVar(&f.TargetSecretFile, "target-chap-secret-file", "", "mutual CHAP: file holding the target's secret")
	fl.StringVar(&f.ZeroByWriting, "zero-by-writing", string(iscsi.ZeroWritingAuto),
		"when to zero iSCSI LUNs by writing zeros instead of UNMAP/WRITE SAME: auto (on arrays that let those through a reservation, as tgtd does), always, never")
	if withTimeout {
		fl.DurationVar(&f.Timeout, "timeout", 5*time.Second, "give up on an unanswered iSCSI target after this long")
	}
}

// ISCSI is the initiator configuration the flags describe.
func (f *Flags) ISCSI() iscsi.Config {
	return iscsi.Config{
		InitiatorName: f.InitiatorName, Purpose: f.Purpose, User: f.ChapUser, SecretFile: f.ChapSecretFile,
		TargetUser: f.TargetUser, TargetSecretFile: f.TargetSecretFile, Timeout: f.Timeout,
		ZeroByWriting: iscsi.ZeroWritingMode(f.ZeroByWriting),
	}
}

// LegOptions are the options for mirror.OpenLeg.
func (f *Flags) LegOptions(readOnly bool) mirror.LegOptions {
	return mirror.LegOptions{ReadOnly: readOnly, ISCSI: f.ISCSI()}
}
