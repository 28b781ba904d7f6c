package mirror

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"
)

// CreateOptions tune Create.
type CreateOptions struct {
	ChunkSize int64 // bitmap chunk; default 1 MiB; power of two, >= 64 KiB
	Force     bool  // overwrite existing hamirror metadata or a recognisable filesystem/partition table
	NodeSlots int   // heartbeat slots reserved per leg; default 16
	// InitialSync marks leg 1 out of sync with every chunk dirty, so the
	// first Assemble copies leg 0 onto leg 1. Without it Create assumes
	// the legs are blank or identical (like `mdadm --assume-clean`).
	InitialSync bool
	NodeID      string    // recorded as last writer; default hostname
	Now         time.Time // creation time; zero: time.Now()
}

// Create writes fresh metadata on both legs: the same volume UUID, one leg
// UUID each, slots 0 and 1, both legs in sync with an all-clear bitmap. The
// data areas are NOT copied: Create assumes blank or identical legs (like
// `mdadm --assume-clean`) unless opts.InitialSync asks for a full copy of
// leg 0 onto leg 1 at the first Assemble. It refuses (ErrExists, naming the
// leg and what was found) when a leg has hamirror metadata or a recognisable
// file system or partition table, unless opts.Force. It returns leg 0's info.
func Create(legs [2]Leg, opts CreateOptions) (*LegInfo, error) {
	if opts.ChunkSize == 0 {
		opts.ChunkSize = defaultChunkSize
	}
	if c := opts.ChunkSize; c < minChunkSize || c > maxChunkSize || c&(c-1) != 0 {
		return nil, fmt.Errorf("chunk size %d: must be a power of two between 64 KiB and 1 GiB", c)
	}
	if opts.NodeSlots == 0 {
		opts.NodeSlots = defaultNodeSlots
	}
	if opts.NodeSlots < 0 || opts.NodeSlots > maxNodeSlots {
		return nil, fmt.Errorf("node slots %d: must be between 1 and %d", opts.NodeSlots, maxNodeSlots)
	}
	if opts.NodeID == "" {
		opts.NodeID, _ = os.Hostname()
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	for i, l := range legs {
		if l == nil {
			return nil, fmt.Errorf("create: leg %d is missing", i)
		}
	}
	for _, l := range legs {
		if err := checkLegBlock(l); err != nil {
			return nil, fmt.Errorf("create: %w", err)
		}
	}
	if legs[0] == legs[1] || legs[0].Name() == legs[1].Name() {
		return nil, fmt.Errorf("create: both legs are %s; a mirror needs two different legs", legs[0].Name())
	}
	if !opts.Force {
		for _, l := range legs {
			if what, err := inUse(l); err != nil {
				return nil, err
			} else if what != "" {
				return nil, fmt.Errorf("leg %s holds %s: %w (use --force to overwrite it)", l.Name(), what, ErrExists)
			}
		}
	}
	data := min(maxDataSize(legs[0].Size(), opts.ChunkSize, opts.NodeSlots),
		maxDataSize(legs[1].Size(), opts.ChunkSize, opts.NodeSlots))
	if data < opts.ChunkSize {
		return nil, fmt.Errorf("legs of %d and %d bytes are too small for a %d-byte chunk plus metadata", legs[0].Size(), legs[1].Size(), opts.ChunkSize)
	}
	vol := newUUID()
	uuids := [2][16]byte{newUUID(), newUUID()}
	gen := generation{ID: newGenID(), Events: 1}
	var info *LegInfo
	for i, l := range legs {
		lay, err := computeLayout(l.Size(), data, opts.ChunkSize, opts.NodeSlots)
		if err != nil {
			return nil, fmt.Errorf("leg %s: %w", l.Name(), err)
		}
		sb := &superblock{
			VolumeUUID: vol, LegUUID: uuids[i], Slot: i, Clean: true,
			LegSize: l.Size(), DataSize: data, ChunkSize: opts.ChunkSize, Events: 1,
			Created: opts.Now.UnixNano(), Updated: opts.Now.UnixNano(),
			LegUUIDs: uuids, LastWriter: opts.NodeID, BitmapGen: gen.ID,
			BitmapOff: lay.BitmapOff, BitmapLen: lay.BitmapLen,
			HBOff: lay.HBOff, HBSlotSize: hbSlotBytes, HBCount: opts.NodeSlots,
			Gens: []generation{gen},
		}
		bs := newBitset(sb.chunks())
		if opts.InitialSync {
			sb.LegStates[1] = legOutOfSync
			sb.Clean = false
			bs.setAll()
		}
		if err := writeFreshMetadata(l, sb, lay, bs); err != nil {
			return nil, fmt.Errorf("create: writing metadata on %s: %w", l.Name(), err)
		}
		if i == 0 {
			info = newLegInfo(l.Name(), sb, bs.count(), 0)
		}
	}
	return info, nil
}

// writeFreshMetadata zeroes the heartbeat slots, writes the whole bitmap,
// the superblock in copy B (events 1) and invalidates copy A, then flushes.
func writeFreshMetadata(l Leg, sb *superblock, lay layout, bs *bitset) error {
	zero := alignedBuf(int(min(int64(sb.HBCount)*hbSlotBytes, 1<<20)))
	for off, end := lay.HBOff, lay.HBOff+int64(sb.HBCount)*hbSlotBytes; off < end; {
		n := min(end-off, int64(len(zero)))
		if err := l.WriteAt(zero[:n], off, false); err != nil {
			return err
		}
		off += n
	}
	buf := alignedBuf(int(lay.BitmapLen))
	for b := int64(0); b < bs.blocks(); b++ {
		bs.encodeBlock(b, buf[b*blockBytes:(b+1)*blockBytes])
	}
	if err := l.WriteAt(buf, lay.BitmapOff, false); err != nil {
		return err
	}
	// Invalidate the other superblock copy so a stale, higher-event copy
	// from an earlier volume can never win.
	other := lay.SBOff[1-sb.Events%2]
	if err := l.WriteAt(alignedBuf(sbBytes), other, false); err != nil {
		return err
	}
	if err := l.Flush(); err != nil {
		return err
	}
	return writeSuperblock(l, sb, alignedBuf(sbBytes))
}

// inUse reports what a leg already holds: hamirror metadata, a file
// system or a partition table ("" when it looks blank or unknown).
func inUse(l Leg) (string, error) {
	sb, err := readSuperblock(l)
	switch {
	case err == nil:
		return fmt.Sprintf("hamirror metadata (volume %s, slot %d)", uuidString(sb.VolumeUUID), sb.Slot), nil
	case errors.Is(err, ErrCorrupt):
		return "damaged hamirror metadata", nil
	case !errors.Is(err, ErrNoMetadata):
		return "", err
	}
	n := min(l.Size(), 128<<10) &^ (blockBytes - 1)
	if n == 0 {
		return "", nil
	}
	head := alignedBuf(int(n))
	if err := l.ReadAt(head, 0); err != nil {
		return "", fmt.Errorf("read start of %s: %w", l.Name(), err)
	}
	return signature(head), nil
}

// signature names a recognisable file system or partition table at the
// start of a device ("" when none is found).
func signature(head []byte) string {
	at := func(off int, magic string) bool {
		return len(head) >= off+len(magic) && bytes.Equal(head[off:off+len(magic)], []byte(magic))
	}
	switch {
	case len(head) >= 1082 && binary.LittleEndian.Uint16(head[1080:]) == 0xEF53:
		return "an ext2/ext3/ext4 file system"
	case at(0, "XFSB"):
		return "an XFS file system"
	case at(0x10040, "_BHRfS_M"):
		return "a btrfs file system"
	case at(0, "LUKS\xba\xbe"):
		return "a LUKS encrypted volume"
	case at(4086, "SWAPSPACE2"):
		return "a swap area"
	case at(512, "EFI PART"):
		return "a GPT partition table"
	case len(head) >= 512 && head[510] == 0x55 && head[511] == 0xAA:
		return "an MBR partition table or boot sector"
	}
	return ""
}

// Examine decodes one leg's metadata; ErrNoMetadata (wrapped) when the leg
// holds none, ErrCorrupt when it is damaged.
func Examine(leg Leg) (*LegInfo, error) {
	sb, err := readSuperblock(leg)
	if err != nil {
		return nil, err
	}
	bs, bad, err := readBitmap(leg, sb)
	if err != nil {
		return nil, err
	}
	info := newLegInfo(leg.Name(), sb, bs.count(), bad)
	info.MMP = examineMMP(leg, sb)
	return info, nil
}

// HeartbeatSlots returns the disk-heartbeat area of a leg: offset of slot
// 0, the size of one slot and the number of slots the disk heartbeat may
// use. Slot i is at off + i*slotSize; the engine never touches them after
// Create. The leg's last slot (index count, one past them) is not
// included: it holds the multi-mount protection block (mmp.go), so a
// heartbeat configured with count slots can never write it.
func HeartbeatSlots(leg Leg) (off, slotSize int64, count int, err error) {
	sb, err := readSuperblock(leg)
	if err != nil {
		return 0, 0, 0, err
	}
	return sb.HBOff, sb.HBSlotSize, max(sb.HBCount-1, 0), nil
}
