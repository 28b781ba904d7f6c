package mirror

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
	"unicode/utf8"
)

// The multi-mount protection (MMP) block: the last heartbeat slot of each
// leg, 4096 bytes, rewritten by the volume's owner every interval
// (mmp.go). FORMAT.md documents every byte; keep the two in step.

const (
	mmpMagic   = "HAMIRMMP"
	mmpVersion = 1
	// Field offsets.
	mmpOffMagic    = 0
	mmpOffVersion  = 8
	mmpOffState    = 12
	mmpOffVolUUID  = 16
	mmpOffSeq      = 32
	mmpOffNonce    = 40
	mmpOffUpdated  = 48
	mmpOffInterval = 56
	mmpOffGrace    = 60
	mmpOffPID      = 64
	mmpOffReserved = 68 // 4 bytes, zero
	mmpOffNode     = 72
	mmpOffTail     = mmpOffNode + nodeNameBytes // zero up to the CRC
	// mmpMaxMillis bounds the interval and grace a decoder accepts: an
	// hour, far beyond any sane setting, so a hostile block cannot make
	// a starter wait for days.
	mmpMaxMillis = 3600_000
)

// mmpState says whether the owner holds the volume.
type mmpState uint32

const (
	mmpActive   mmpState = 1 // the owner runs and rewrites the block every interval
	mmpReleased mmpState = 2 // the owner closed the volume cleanly
)

func (s mmpState) String() string {
	switch s {
	case mmpActive:
		return "active"
	case mmpReleased:
		return "released"
	}
	return fmt.Sprintf("state(%d)", uint32(s))
}

// mmpBlock is one decoded MMP block.
type mmpBlock struct {
	State    mmpState
	Volume   [16]byte // the volume UUID the owner assembled
	Seq      uint64   // +1 on every write of one run
	Nonce    uint64   // random per run: tells two runs (or two owners) apart
	Updated  int64    // owner's clock at the write, Unix ns
	Interval time.Duration
	// Grace is the owner's promise: it writes nothing to the leg later
	// than Grace after the last update it made visible.
	Grace time.Duration
	PID   int
	Node  string
}

var (
	// errMMPBlank: the slot was never written (zeroed by create or add).
	errMMPBlank = errors.New("MMP block never written")
	// errNotMMP: the slot holds something other than an MMP block.
	errNotMMP = errors.New("not an MMP block")
)

// encode writes the block into b (4096 bytes). The node name is cut to
// 64 bytes of valid UTF-8.
func (m *mmpBlock) encode(b []byte) {
	clear(b[:blockBytes])
	le := binary.LittleEndian
	copy(b[mmpOffMagic:], mmpMagic)
	le.PutUint32(b[mmpOffVersion:], mmpVersion)
	le.PutUint32(b[mmpOffState:], uint32(m.State))
	copy(b[mmpOffVolUUID:], m.Volume[:])
	le.PutUint64(b[mmpOffSeq:], m.Seq)
	le.PutUint64(b[mmpOffNonce:], m.Nonce)
	le.PutUint64(b[mmpOffUpdated:], uint64(m.Updated))
	le.PutUint32(b[mmpOffInterval:], uint32(min(m.Interval.Milliseconds(), mmpMaxMillis)))
	le.PutUint32(b[mmpOffGrace:], uint32(min(m.Grace.Milliseconds(), mmpMaxMillis)))
	le.PutUint32(b[mmpOffPID:], uint32(m.PID))
	n := m.Node
	for len(n) > nodeNameBytes || !utf8.ValidString(n) {
		n = n[:len(n)-1]
	}
	copy(b[mmpOffNode:], n)
	le.PutUint32(b[crcOff:], crc32.Checksum(b[:crcOff], castagnoli))
}

// decodeMMP strictly decodes an MMP block: errMMPBlank for a zeroed slot,
// errNotMMP without the magic, another error for a damaged block; never a
// panic.
func decodeMMP(b []byte) (mmpBlock, error) {
	var m mmpBlock
	if len(b) != blockBytes {
		return m, fmt.Errorf("MMP block is %d bytes, want %d", len(b), blockBytes)
	}
	if allZero(b) {
		return m, errMMPBlank
	}
	if !bytes.Equal(b[mmpOffMagic:mmpOffMagic+8], []byte(mmpMagic)) {
		return m, errNotMMP
	}
	le := binary.LittleEndian
	if got, want := le.Uint32(b[crcOff:]), crc32.Checksum(b[:crcOff], castagnoli); got != want {
		return m, fmt.Errorf("MMP block checksum mismatch (stored %08x, computed %08x)", got, want)
	}
	if v := le.Uint32(b[mmpOffVersion:]); v != mmpVersion {
		return m, fmt.Errorf("MMP block version %d, this hamirror reads version %d", v, mmpVersion)
	}
	m.State = mmpState(le.Uint32(b[mmpOffState:]))
	if m.State != mmpActive && m.State != mmpReleased {
		return m, fmt.Errorf("MMP block state %d is unknown", uint32(m.State))
	}
	copy(m.Volume[:], b[mmpOffVolUUID:])
	m.Seq = le.Uint64(b[mmpOffSeq:])
	m.Nonce = le.Uint64(b[mmpOffNonce:])
	m.Updated = int64(le.Uint64(b[mmpOffUpdated:]))
	iv, gr := le.Uint32(b[mmpOffInterval:]), le.Uint32(b[mmpOffGrace:])
	if iv == 0 || iv > mmpMaxMillis || gr > mmpMaxMillis {
		return m, fmt.Errorf("MMP block interval %d ms or grace %d ms out of range (1 ms to 1 h)", iv, gr)
	}
	m.Interval, m.Grace = time.Duration(iv)*time.Millisecond, time.Duration(gr)*time.Millisecond
	m.PID = int(le.Uint32(b[mmpOffPID:]))
	if !allZero(b[mmpOffReserved:mmpOffNode]) || !allZero(b[mmpOffTail:crcOff]) {
		return m, errors.New("MMP block reserved bytes are not zero")
	}
	name := b[mmpOffNode:mmpOffTail]
	n := bytes.IndexByte(name, 0)
	if n < 0 {
		n = nodeNameBytes
	}
	if !allZero(name[n:]) {
		return m, errors.New("MMP block node field has bytes after its NUL padding")
	}
	if !utf8.Valid(name[:n]) {
		return m, errors.New("MMP block node field is not UTF-8")
	}
	m.Node = string(name[:n])
	return m, nil
}

// owner describes the block's writer for an operator.
func (m *mmpBlock) owner() string {
	return fmt.Sprintf("mirrord pid %d on node %q (last update %s, sequence %d)",
		m.PID, m.Node, time.Unix(0, m.Updated).UTC().Format(time.RFC3339Nano), m.Seq)
}

// examineMMP reads a leg's MMP block for examine (nil: never written).
func examineMMP(leg Leg, sb *superblock) *MMPInfo {
	off := mmpOffset(sb)
	if off < 0 {
		return nil
	}
	buf := alignedBuf(blockBytes)
	if err := leg.ReadAt(buf, off); err != nil {
		return &MMPInfo{State: "unreadable: " + err.Error()}
	}
	m, err := decodeMMP(buf)
	switch {
	case errors.Is(err, errMMPBlank):
		return nil
	case err != nil:
		return &MMPInfo{State: "unreadable: " + err.Error()}
	}
	return &MMPInfo{State: m.State.String(), Node: m.Node, PID: m.PID, Updated: time.Unix(0, m.Updated).UTC(),
		Sequence: m.Seq, Interval: m.Interval.String()}
}
