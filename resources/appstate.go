package resources

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// AppState is what a node advertises about its group in every heartbeat
// (heartbeat's opaque app blob, at most MaxAppStateBytes). The Group
// builds it (Effect Publish); a peer's arrives in PeerView.App.
type AppState struct {
	State GroupState
	// Current is the resource being started or stopped ("" when none).
	Current string
	// Eligible: the node may take the active role. Standby: the operator
	// put it in standby (persistent). Maintenance: monitors and actions
	// are paused on it.
	Eligible, Standby, Maintenance bool
	// Failures is each resource's failure count within failure_timeout, in
	// the group's order (saturates at 255).
	Failures []uint8
	// Reason says why the group is blocked, fenced or failed ("" else):
	// printable (no control characters: it is shown on a terminal).
	Reason string
	// Volume is this node's knowledge of the volume (Seq 0: none).
	Volume VolumeKnowledge
	// Ack is the Seq of the peer's volume knowledge this node has
	// persisted (0: none).
	Ack uint64
}

// VolumeKnowledge is the active node's view of the volume, carried to the
// peer and persisted there so that a takeover with one array unreachable
// can tell whether the lone leg is current (docs/HA.md). The node fills
// it from the engine's published state; Seq grows with each change and
// starts at 1.
type VolumeKnowledge struct {
	Seq        uint64
	VolumeUUID [16]byte
	Generation uint64 // the newest generation ID
	Events     uint64
	LegStates  [2]LegState
	LegUUIDs   [2][16]byte
	// Witnessing: the publisher sees every peer live, so it waits for
	// their acks before it acknowledges writes that depend on a change of
	// this state. A peer trusts the knowledge at a takeover only if the
	// publisher's last app state said so (docs/HA.md).
	Witnessing bool
}

// Limits of the app state encoding.
const (
	// MaxAppStateBytes is what heartbeat carries (and its disk slots hold).
	MaxAppStateBytes = 512
	// MaxResources is the most resources a group may have.
	MaxResources = 32
	// MaxNameBytes is the longest resource name.
	MaxNameBytes = 32
	// MaxReasonBytes is the longest reason carried; longer ones are cut.
	MaxReasonBytes = 200
)

const (
	appMagic   = "HG"
	appVersion = 1

	flagEligible    = 1 << 0
	flagStandby     = 1 << 1
	flagMaintenance = 1 << 2
	flagVolume      = 1 << 3
	flagWitnessing  = 1 << 4 // only with flagVolume
	flagsKnown      = flagEligible | flagStandby | flagMaintenance | flagVolume | flagWitnessing

	volumeBytes = 8 + 16 + 8 + 8 + 2 + 32
)

// ErrAppState marks an app state that could not be decoded.
var ErrAppState = errors.New("bad app state")

// Marshal encodes a (version 1):
//
//	"HG" version(1) state(1) flags(1)
//	len(1) current   n(1) failures[n]   len(1) reason   ack(8)
//	[volume: seq(8) uuid(16) generation(8) events(8) leg states(2) leg uuids(32)]
//
// Integers are big-endian; flags: eligible, standby, maintenance, volume
// present, witnessing (with the volume only). It refuses what Unmarshal would refuse.
func (a AppState) Marshal() ([]byte, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	var flags byte
	set := func(bit byte, on bool) {
		if on {
			flags |= bit
		}
	}
	set(flagEligible, a.Eligible)
	set(flagStandby, a.Standby)
	set(flagMaintenance, a.Maintenance)
	set(flagVolume, a.Volume.Seq != 0)
	set(flagWitnessing, a.Volume.Seq != 0 && a.Volume.Witnessing)
	b := make([]byte, 0, 64+len(a.Current)+len(a.Failures)+len(a.Reason)+volumeBytes)
	b = append(b, appMagic...)
	b = append(b, appVersion, byte(a.State), flags, byte(len(a.Current)))
	b = append(b, a.Current...)
	b = append(b, byte(len(a.Failures)))
	b = append(b, a.Failures...)
	b = append(b, byte(len(a.Reason)))
	b = append(b, a.Reason...)
	b = binary.BigEndian.AppendUint64(b, a.Ack)
	if v := a.Volume; v.Seq != 0 {
		b = binary.BigEndian.AppendUint64(b, v.Seq)
		b = append(b, v.VolumeUUID[:]...)
		b = binary.BigEndian.AppendUint64(b, v.Generation)
		b = binary.BigEndian.AppendUint64(b, v.Events)
		b = append(b, byte(v.LegStates[0]), byte(v.LegStates[1]))
		b = append(b, v.LegUUIDs[0][:]...)
		b = append(b, v.LegUUIDs[1][:]...)
	}
	return b, nil
}

func (a AppState) check() error {
	switch {
	case a.State > groupStateMax:
		return fmt.Errorf("%w: group state %d", ErrAppState, a.State)
	case len(a.Current) > MaxNameBytes || !printable(a.Current):
		return fmt.Errorf("%w: resource name %q", ErrAppState, a.Current)
	case len(a.Failures) > MaxResources:
		return fmt.Errorf("%w: %d resources, at most %d", ErrAppState, len(a.Failures), MaxResources)
	case len(a.Reason) > MaxReasonBytes || !printable(a.Reason):
		return fmt.Errorf("%w: reason is not printable UTF-8 of at most %d bytes", ErrAppState, MaxReasonBytes)
	case a.Volume.LegStates[0] > legStateMax || a.Volume.LegStates[1] > legStateMax:
		return fmt.Errorf("%w: leg state %v", ErrAppState, a.Volume.LegStates)
	}
	return nil
}

// printable: UTF-8 without control characters (names are shown as is).
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	return !strings.ContainsFunc(s, control)
}

// control: a C0 control character or DEL.
func control(r rune) bool { return r < 0x20 || r == 0x7f }

// UnmarshalAppState decodes a peer's app state strictly: every length is
// checked, enums must be known, strings valid, no byte left over. Errors
// wrap ErrAppState; a newer version says so.
func UnmarshalAppState(p []byte) (AppState, error) {
	var a AppState
	r := reader{p: p}
	if string(r.next(2)) != appMagic {
		return a, fmt.Errorf("%w: no magic", ErrAppState)
	}
	if v := r.byte(); v != appVersion {
		if r.err == nil && v > appVersion {
			return a, fmt.Errorf("%w: version %d from a newer mirrord (this one reads %d): upgrade this node", ErrAppState, v, appVersion)
		}
		return a, fmt.Errorf("%w: version %d", ErrAppState, v)
	}
	a.State = GroupState(r.byte())
	flags := r.byte()
	a.Current = string(r.next(int(r.byte())))
	if n := int(r.byte()); n > 0 {
		a.Failures = append([]uint8(nil), r.next(n)...)
	}
	a.Reason = string(r.next(int(r.byte())))
	a.Ack = r.u64()
	if flags&flagVolume != 0 {
		v := &a.Volume
		v.Seq = r.u64()
		copy(v.VolumeUUID[:], r.next(16))
		v.Generation = r.u64()
		v.Events = r.u64()
		v.LegStates = [2]LegState{LegState(r.byte()), LegState(r.byte())}
		copy(v.LegUUIDs[0][:], r.next(16))
		copy(v.LegUUIDs[1][:], r.next(16))
		if r.err == nil && v.Seq == 0 {
			return a, fmt.Errorf("%w: volume knowledge with sequence 0", ErrAppState)
		}
		v.Witnessing = flags&flagWitnessing != 0
	} else if flags&flagWitnessing != 0 {
		return a, fmt.Errorf("%w: witnessing flag without volume knowledge", ErrAppState)
	}
	switch {
	case r.err != nil:
		return a, r.err
	case r.off != len(p):
		return a, fmt.Errorf("%w: %d bytes left over", ErrAppState, len(p)-r.off)
	case flags&^flagsKnown != 0:
		return a, fmt.Errorf("%w: unknown flags %#x", ErrAppState, flags)
	}
	a.Eligible, a.Standby, a.Maintenance = flags&flagEligible != 0, flags&flagStandby != 0, flags&flagMaintenance != 0
	if err := a.check(); err != nil {
		return a, err
	}
	return a, nil
}

// reader reads big-endian fields with a sticky error.
type reader struct {
	p   []byte
	off int
	err error
}

func (r *reader) next(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.p)-r.off {
		r.err = fmt.Errorf("%w: truncated at byte %d (%d more needed)", ErrAppState, r.off, n-(len(r.p)-r.off))
		return nil
	}
	b := r.p[r.off : r.off+n]
	r.off += n
	return b
}

func (r *reader) byte() byte {
	if b := r.next(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.next(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}
