package agents

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// The ext2/3/4 superblock fields the fsck decision reads (offsets in the
// 1024-byte superblock that starts 1024 bytes into the device).
const (
	ext4SuperOffset   = 1024
	ext4SuperSize     = 1024
	ext4MagicOff      = 0x38
	ext4StateOff      = 0x3A
	ext4CompatOff     = 0x5C
	ext4IncompatOff   = 0x60
	ext4Magic         = 0xEF53
	ext4StateValid    = 0x0001 // cleanly unmounted (a journaled ext4 keeps it while mounted)
	ext4StateError    = 0x0002 // the kernel found errors
	ext4CompatJournal = 0x0004
	ext4IncompatRecov = 0x0004 // the journal needs replaying
	ext4IncompatJDev  = 0x0008 // this is an external journal device
)

// ext4Super is what fsck decides on.
type ext4Super struct {
	state            uint16
	compat, incompat uint32
}

// parseExt4Super decodes the superblock bytes (at least 1024).
func parseExt4Super(b []byte) (ext4Super, error) {
	if len(b) < ext4SuperSize {
		return ext4Super{}, fmt.Errorf("superblock is %d bytes, want %d", len(b), ext4SuperSize)
	}
	if m := binary.LittleEndian.Uint16(b[ext4MagicOff:]); m != ext4Magic {
		return ext4Super{}, fmt.Errorf("no ext2/3/4 superblock (magic %#04x, want %#04x): is fstype right, or the device empty?", m, ext4Magic)
	}
	s := ext4Super{
		state:    binary.LittleEndian.Uint16(b[ext4StateOff:]),
		compat:   binary.LittleEndian.Uint32(b[ext4CompatOff:]),
		incompat: binary.LittleEndian.Uint32(b[ext4IncompatOff:]),
	}
	if s.incompat&ext4IncompatJDev != 0 {
		return s, errors.New("the device is an external ext4 journal, not a file system")
	}
	return s, nil
}

// needsFsck decides whether e2fsck must run before mounting, and why.
//
// A journaled ext4 that crashed while mounted reads "clean, journal needs
// recovery": the kernel replays the journal at mount, which is all a
// crash calls for, so no fsck (e2fsck -p would only replay the same
// journal, slower). fsck runs when the kernel recorded errors, or when
// the file system is not clean and no journal will make it so (no
// journal, or an unclean state without a pending replay: an interrupted
// fsck or a crash of ext2). Mount counts and check intervals are
// ignored: a forced full check in the middle of a failover is the wrong
// time for one.
func needsFsck(s ext4Super) (bool, string) {
	switch {
	case s.state&ext4StateError != 0:
		return true, "the kernel recorded file system errors"
	case s.state&ext4StateValid != 0:
		return false, "clean"
	case s.compat&ext4CompatJournal == 0:
		return true, "not cleanly unmounted and has no journal"
	case s.incompat&ext4IncompatRecov != 0:
		return false, "the kernel will replay the journal"
	}
	return true, "not clean and no journal replay pending"
}

// readExt4Super reads the superblock of a device.
func readExt4Super(device string) (ext4Super, error) {
	f, err := os.Open(device)
	if err != nil {
		return ext4Super{}, err
	}
	defer f.Close()
	b := make([]byte, ext4SuperSize)
	if _, err := f.ReadAt(b, ext4SuperOffset); err != nil && !errors.Is(err, io.EOF) {
		return ext4Super{}, fmt.Errorf("reading the superblock of %s: %w", device, err)
	}
	return parseExt4Super(b)
}

// e2fsck exit codes (e2fsck(8)); bits, OR-ed.
const (
	e2fsckCorrected       = 1
	e2fsckCorrectedReboot = 2
	e2fsckUncorrected     = 4
)

// fsckExt4 runs e2fsck -p (preen: fixes what is safe without questions)
// on the unmounted device as the policy asks.
func (a *fsAgent) fsckExt4(ctx context.Context) error {
	if a.fsck == "never" {
		return nil
	}
	if a.fsck == "auto" {
		s, err := readExt4Super(a.device)
		if err != nil {
			return fmt.Errorf("filesystem %s: %w", a.name, err)
		}
		need, why := needsFsck(s)
		if !need {
			a.log.Debug("no fsck needed", "device", a.device, "why", why)
			return nil
		}
		a.log.Warn("running e2fsck -p before mounting", "device", a.device, "why", why)
	}
	res, err := run(ctx, a.log, command{argv: []string{"e2fsck", "-p", a.device}})
	if err != nil {
		return fmt.Errorf("filesystem %s: e2fsck -p %s: %w (give the resource a longer start_timeout, or run e2fsck by hand)", a.name, a.device, err)
	}
	if res.code&^(e2fsckCorrected|e2fsckCorrectedReboot) != 0 {
		return fmt.Errorf("filesystem %s: e2fsck -p %s exited %d (%s): run e2fsck -f %s by hand, answer its questions, then mirrorctl cleanup %s; output: %s",
			a.name, a.device, res.code, e2fsckMeaning(res.code), a.device, a.name, lastLines(res.output, 5))
	}
	if res.code != 0 {
		a.log.Warn("e2fsck corrected the file system", "device", a.device, "code", res.code, "output", lastLines(res.output, 5))
	}
	return nil
}

func e2fsckMeaning(code int) string {
	switch {
	case code&e2fsckUncorrected != 0:
		return "errors left uncorrected: preen mode cannot fix them"
	case code&8 != 0:
		return "operational error"
	case code&16 != 0:
		return "usage error"
	case code&32 != 0:
		return "cancelled"
	}
	return "unknown"
}
