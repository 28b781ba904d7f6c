package mirror

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"unicode/utf8"
)

// On-leg format constants. FORMAT.md documents every byte; keep the two in step.
const (
	sbMagic          = "HAMIRROR"
	formatVersion    = 1
	blockBytes       = 4096 // metadata I/O unit and alignment
	sbBytes          = blockBytes
	maxGenerations   = 64
	nodeNameBytes    = 64
	hbSlotBytes      = blockBytes
	maxNodeSlots     = 1024
	bitmapBitsBytes  = 4088                // bit bytes in one bitmap block
	chunksPerBlock   = bitmapBitsBytes * 8 // 32704 = 511 64-bit words
	wordsPerBlock    = chunksPerBlock / 64 // 511
	defaultChunkSize = 1 << 20
	minChunkSize     = 64 << 10
	maxChunkSize     = 1 << 30
	defaultNodeSlots = 16

	crcOff = blockBytes - 4 // CRC32C of bytes [0, crcOff) in superblocks and bitmap blocks
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Leg states as recorded in the superblock (both legs' as last known).
type legState uint8

const (
	legInSync     legState = 0 // holds every chunk
	legFailed     legState = 1 // failed or missing; gets no writes
	legOutOfSync  legState = 2 // present but needs resync (has not started)
	legRebuilding legState = 3 // resync in progress toward this leg
	legStateMax            = legRebuilding
)

func (s legState) String() string {
	switch s {
	case legInSync:
		return "in_sync"
	case legFailed:
		return "failed"
	case legOutOfSync:
		return "out_of_sync"
	case legRebuilding:
		return "rebuilding"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// generation is one entry of the data-generation history: a random ID
// started when the volume went degraded, was re-assembled by another node,
// or was forced by an operator; Events is the event counter at its start.
type generation struct {
	ID     uint64
	Events uint64
}

const flagClean = 1 << 0

// superblock is the decoded form of one leg's superblock (FORMAT.md).
type superblock struct {
	VolumeUUID [16]byte
	LegUUID    [16]byte
	Slot       int
	Clean      bool
	LegSize    int64
	DataSize   int64
	ChunkSize  int64
	Events     uint64
	Created    int64 // unix ns
	Updated    int64 // unix ns
	LegStates  [2]legState
	LegUUIDs   [2][16]byte
	LastWriter string
	Checkpoint int64  // resync checkpoint: next chunk index to copy
	BitmapGen  uint64 // generation during which bits were last cleared
	BitmapOff  int64
	BitmapLen  int64
	HBOff      int64
	HBSlotSize int64
	HBCount    int
	Gens       []generation // oldest first, at most maxGenerations
}

// chunks is the number of bitmap chunks covering the data area.
func (s *superblock) chunks() int64 { return ceilDiv(s.DataSize, s.ChunkSize) }

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// lastGen is the newest generation ID (0 when the history is empty).
func (s *superblock) lastGen() uint64 {
	if len(s.Gens) == 0 {
		return 0
	}
	return s.Gens[len(s.Gens)-1].ID
}

// genIndex is the position of id in the history, or -1.
func (s *superblock) genIndex(id uint64) int {
	for i, g := range s.Gens {
		if g.ID == id {
			return i
		}
	}
	return -1
}

// layout is where the metadata regions sit on a leg of a given size.
type layout struct {
	LegSize   int64
	DataSize  int64
	Chunk     int64
	BitmapOff int64
	BitmapLen int64
	HBOff     int64
	HBCount   int
	SBOff     [2]int64
}

func bitmapBlocks(nchunks int64) int64 { return ceilDiv(nchunks, chunksPerBlock) }

// computeLayout places the metadata at the end of a leg: superblock copies
// A and B in the last 8 KiB, the bitmap before them, the heartbeat slots
// before the bitmap. Data [0, dataSize) must end at or before the slots.
func computeLayout(legSize, dataSize, chunk int64, slots int) (layout, error) {
	end := legSize &^ (blockBytes - 1)
	l := layout{LegSize: legSize, DataSize: dataSize, Chunk: chunk, HBCount: slots}
	l.SBOff = [2]int64{end - 2*sbBytes, end - sbBytes}
	l.BitmapLen = bitmapBlocks(ceilDiv(dataSize, chunk)) * blockBytes
	l.BitmapOff = l.SBOff[0] - l.BitmapLen
	l.HBOff = l.BitmapOff - int64(slots)*hbSlotBytes
	if dataSize <= 0 || l.HBOff < dataSize {
		return l, fmt.Errorf("leg of %d bytes is too small for %d data bytes plus metadata", legSize, dataSize)
	}
	return l, nil
}

// maxDataSize is the largest 4 KiB-aligned data size a leg can hold.
func maxDataSize(legSize, chunk int64, slots int) int64 {
	end := legSize &^ (blockBytes - 1)
	fixed := 2*sbBytes + int64(slots)*hbSlotBytes
	d := (end - fixed) &^ (blockBytes - 1)
	for i := 0; i < 64 && d > 0; i++ {
		bm := bitmapBlocks(ceilDiv(d, chunk)) * blockBytes
		nd := (end - fixed - bm) &^ (blockBytes - 1)
		if nd == d {
			break
		}
		d = nd
	}
	if d < 0 {
		return 0
	}
	return d
}

// Superblock byte offsets (FORMAT.md).
const (
	offMagic      = 0
	offVersion    = 8
	offSBSize     = 12
	offVolUUID    = 16
	offLegUUID    = 32
	offSlot       = 48
	offFlags      = 52
	offLegSize    = 56
	offDataSize   = 64
	offChunk      = 72
	offEvents     = 80
	offCreated    = 88
	offUpdated    = 96
	offStates     = 104
	offReserved1  = 106
	offGenCount   = 108
	offLegUUIDs   = 112
	offLastWriter = 144
	offCheckpoint = 208
	offBitmapGen  = 216
	offBitmapOff  = 224
	offBitmapLen  = 232
	offHBOff      = 240
	offHBSlotSize = 248
	offHBCount    = 252
	offGens       = 256
	offGensEnd    = offGens + maxGenerations*16 // 1280
)

// encode writes the superblock into a 4096-byte block.
func (s *superblock) encode(b []byte) {
	clear(b[:sbBytes])
	le := binary.LittleEndian
	copy(b[offMagic:], sbMagic)
	le.PutUint32(b[offVersion:], formatVersion)
	le.PutUint32(b[offSBSize:], sbBytes)
	copy(b[offVolUUID:], s.VolumeUUID[:])
	copy(b[offLegUUID:], s.LegUUID[:])
	le.PutUint32(b[offSlot:], uint32(s.Slot))
	var flags uint32
	if s.Clean {
		flags |= flagClean
	}
	le.PutUint32(b[offFlags:], flags)
	le.PutUint64(b[offLegSize:], uint64(s.LegSize))
	le.PutUint64(b[offDataSize:], uint64(s.DataSize))
	le.PutUint64(b[offChunk:], uint64(s.ChunkSize))
	le.PutUint64(b[offEvents:], s.Events)
	le.PutUint64(b[offCreated:], uint64(s.Created))
	le.PutUint64(b[offUpdated:], uint64(s.Updated))
	b[offStates] = byte(s.LegStates[0])
	b[offStates+1] = byte(s.LegStates[1])
	gens := s.Gens
	if len(gens) > maxGenerations {
		gens = gens[len(gens)-maxGenerations:]
	}
	le.PutUint32(b[offGenCount:], uint32(len(gens)))
	copy(b[offLegUUIDs:], s.LegUUIDs[0][:])
	copy(b[offLegUUIDs+16:], s.LegUUIDs[1][:])
	w := s.LastWriter
	for len(w) > nodeNameBytes {
		w = w[:len(w)-1] // keep valid UTF-8: trim bytes until it fits, then fix below
	}
	for !utf8.ValidString(w) {
		w = w[:len(w)-1]
	}
	copy(b[offLastWriter:], w)
	le.PutUint64(b[offCheckpoint:], uint64(s.Checkpoint))
	le.PutUint64(b[offBitmapGen:], s.BitmapGen)
	le.PutUint64(b[offBitmapOff:], uint64(s.BitmapOff))
	le.PutUint64(b[offBitmapLen:], uint64(s.BitmapLen))
	le.PutUint64(b[offHBOff:], uint64(s.HBOff))
	le.PutUint32(b[offHBSlotSize:], uint32(s.HBSlotSize))
	le.PutUint32(b[offHBCount:], uint32(s.HBCount))
	for i, g := range gens {
		le.PutUint64(b[offGens+16*i:], g.ID)
		le.PutUint64(b[offGens+16*i+8:], g.Events)
	}
	le.PutUint32(b[crcOff:], crc32.Checksum(b[:crcOff], castagnoli))
}

// errNoMagic: the block does not start with the hamirror magic (no metadata).
var errNoMagic = errors.New("no hamirror magic")

// decodeSuperblock strictly decodes one superblock block. It checks every
// field; a corrupt or hostile block yields an error, never a panic.
func decodeSuperblock(b []byte) (*superblock, error) {
	if len(b) != sbBytes {
		return nil, fmt.Errorf("superblock is %d bytes, want %d", len(b), sbBytes)
	}
	if !bytes.Equal(b[offMagic:offMagic+8], []byte(sbMagic)) {
		return nil, errNoMagic
	}
	le := binary.LittleEndian
	if got, want := le.Uint32(b[crcOff:]), crc32.Checksum(b[:crcOff], castagnoli); got != want {
		return nil, fmt.Errorf("superblock checksum mismatch (stored %08x, computed %08x)", got, want)
	}
	if v := le.Uint32(b[offVersion:]); v != formatVersion {
		return nil, fmt.Errorf("superblock format version %d, this hamirror reads version %d", v, formatVersion)
	}
	if n := le.Uint32(b[offSBSize:]); n != sbBytes {
		return nil, fmt.Errorf("superblock size field %d, want %d", n, sbBytes)
	}
	s := &superblock{}
	copy(s.VolumeUUID[:], b[offVolUUID:])
	copy(s.LegUUID[:], b[offLegUUID:])
	if s.VolumeUUID == ([16]byte{}) || s.LegUUID == ([16]byte{}) {
		return nil, errors.New("superblock has a zero volume or leg UUID")
	}
	slot := le.Uint32(b[offSlot:])
	if slot > 1 {
		return nil, fmt.Errorf("superblock slot %d, want 0 or 1", slot)
	}
	s.Slot = int(slot)
	flags := le.Uint32(b[offFlags:])
	if flags&^flagClean != 0 {
		return nil, fmt.Errorf("superblock has unknown flags %#x", flags)
	}
	s.Clean = flags&flagClean != 0
	s.LegSize = int64(le.Uint64(b[offLegSize:]))
	s.DataSize = int64(le.Uint64(b[offDataSize:]))
	s.ChunkSize = int64(le.Uint64(b[offChunk:]))
	s.Events = le.Uint64(b[offEvents:])
	s.Created = int64(le.Uint64(b[offCreated:]))
	s.Updated = int64(le.Uint64(b[offUpdated:]))
	for i := range 2 {
		st := legState(b[offStates+i])
		if st > legStateMax {
			return nil, fmt.Errorf("superblock leg %d state %d is unknown", i, st)
		}
		s.LegStates[i] = st
	}
	if b[offReserved1] != 0 || b[offReserved1+1] != 0 {
		return nil, errors.New("superblock reserved bytes 106-107 are not zero")
	}
	ngen := le.Uint32(b[offGenCount:])
	if ngen > maxGenerations {
		return nil, fmt.Errorf("superblock claims %d generations, at most %d fit", ngen, maxGenerations)
	}
	copy(s.LegUUIDs[0][:], b[offLegUUIDs:])
	copy(s.LegUUIDs[1][:], b[offLegUUIDs+16:])
	if s.LegUUIDs[s.Slot] != s.LegUUID {
		return nil, fmt.Errorf("superblock leg UUID differs from the UUID it records for its own slot %d", s.Slot)
	}
	name := b[offLastWriter : offLastWriter+nodeNameBytes]
	n := bytes.IndexByte(name, 0)
	if n < 0 {
		n = nodeNameBytes
	}
	for _, c := range name[n:] {
		if c != 0 {
			return nil, errors.New("superblock last-writer field has bytes after its NUL padding")
		}
	}
	if !utf8.Valid(name[:n]) {
		return nil, errors.New("superblock last-writer field is not UTF-8")
	}
	s.LastWriter = string(name[:n])
	s.Checkpoint = int64(le.Uint64(b[offCheckpoint:]))
	s.BitmapGen = le.Uint64(b[offBitmapGen:])
	s.BitmapOff = int64(le.Uint64(b[offBitmapOff:]))
	s.BitmapLen = int64(le.Uint64(b[offBitmapLen:]))
	s.HBOff = int64(le.Uint64(b[offHBOff:]))
	s.HBSlotSize = int64(le.Uint32(b[offHBSlotSize:]))
	s.HBCount = int(le.Uint32(b[offHBCount:]))
	s.Gens = make([]generation, ngen)
	for i := range s.Gens {
		s.Gens[i] = generation{ID: le.Uint64(b[offGens+16*i:]), Events: le.Uint64(b[offGens+16*i+8:])}
		if s.Gens[i].ID == 0 {
			return nil, fmt.Errorf("superblock generation %d has ID 0", i)
		}
	}
	if !allZero(b[offGens+16*int(ngen) : crcOff]) {
		return nil, errors.New("superblock bytes after the generation list are not zero")
	}
	if err := s.checkGeometry(); err != nil {
		return nil, err
	}
	return s, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// checkGeometry verifies sizes and offsets against the layout rules, so a
// decoded superblock can be trusted for I/O without further checks.
func (s *superblock) checkGeometry() error {
	if s.ChunkSize < minChunkSize || s.ChunkSize > maxChunkSize || s.ChunkSize&(s.ChunkSize-1) != 0 {
		return fmt.Errorf("superblock chunk size %d is not a power of two in [%d, %d]", s.ChunkSize, minChunkSize, maxChunkSize)
	}
	if s.LegSize <= 0 || s.LegSize > 1<<56 {
		return fmt.Errorf("superblock leg size %d is out of range", s.LegSize)
	}
	if s.DataSize <= 0 || s.DataSize%blockBytes != 0 || s.DataSize >= s.LegSize {
		return fmt.Errorf("superblock data size %d is not a positive multiple of 4096 below the leg size %d", s.DataSize, s.LegSize)
	}
	if s.HBSlotSize != hbSlotBytes {
		return fmt.Errorf("superblock heartbeat slot size %d, want %d", s.HBSlotSize, hbSlotBytes)
	}
	if s.HBCount < 0 || s.HBCount > maxNodeSlots {
		return fmt.Errorf("superblock heartbeat slot count %d is out of range", s.HBCount)
	}
	if len(s.Gens) == 0 {
		return errors.New("superblock has an empty generation history")
	}
	l, err := computeLayout(s.LegSize, s.DataSize, s.ChunkSize, s.HBCount)
	if err != nil {
		return fmt.Errorf("superblock geometry: %w", err)
	}
	if s.BitmapOff != l.BitmapOff || s.BitmapLen != l.BitmapLen || s.HBOff != l.HBOff {
		return fmt.Errorf("superblock metadata offsets (bitmap %d+%d, heartbeat %d) do not match the layout (bitmap %d+%d, heartbeat %d)",
			s.BitmapOff, s.BitmapLen, s.HBOff, l.BitmapOff, l.BitmapLen, l.HBOff)
	}
	if s.Checkpoint < 0 || s.Checkpoint > s.chunks() {
		return fmt.Errorf("superblock resync checkpoint %d is beyond the %d chunks", s.Checkpoint, s.chunks())
	}
	return nil
}

// layout returns the decoded superblock's layout (valid after decode).
func (s *superblock) layout() layout {
	l, _ := computeLayout(s.LegSize, s.DataSize, s.ChunkSize, s.HBCount)
	return l
}
