package mirror

import (
	"errors"
	"fmt"
)

// Metadata I/O on one leg: the superblock pair and the bitmap. Every buffer
// is 4096-aligned so O_DIRECT legs accept it.

// readSuperblock reads both superblock copies at the end of the leg and
// returns the valid one with the higher event counter. ErrNoMetadata when
// neither copy carries the magic; ErrCorrupt when magic is present but no
// copy passes the checks.
func readSuperblock(leg Leg) (*superblock, error) {
	size := leg.Size()
	end := size &^ (blockBytes - 1)
	if end < 2*sbBytes {
		return nil, fmt.Errorf("leg %s (%d bytes): %w", leg.Name(), size, ErrNoMetadata)
	}
	buf := alignedBuf(2 * sbBytes)
	if err := leg.ReadAt(buf, end-2*sbBytes); err != nil {
		return nil, fmt.Errorf("read superblocks of %s: %w", leg.Name(), err)
	}
	var best *superblock
	var errs []error
	magic := false
	for i := range 2 {
		sb, err := decodeSuperblock(buf[i*sbBytes : (i+1)*sbBytes])
		if err != nil {
			if !errors.Is(err, errNoMagic) {
				magic = true
				errs = append(errs, fmt.Errorf("copy %c: %w", 'A'+i, err))
			}
			continue
		}
		magic = true
		if sb.LegSize != size {
			errs = append(errs, fmt.Errorf("copy %c records a leg of %d bytes but the leg now has %d (resized?)", 'A'+i, sb.LegSize, size))
			continue
		}
		if best == nil || sb.Events > best.Events {
			best = sb
		}
	}
	if best != nil {
		return best, nil
	}
	if !magic {
		return nil, fmt.Errorf("leg %s: %w (create it with `mirrorctl create`)", leg.Name(), ErrNoMetadata)
	}
	return nil, fmt.Errorf("leg %s: %w: %w", leg.Name(), ErrCorrupt, errors.Join(errs...))
}

// writeSuperblock writes sb (with FUA) into copy Events%2, so the other
// copy keeps the previous state if this write is torn.
func writeSuperblock(leg Leg, sb *superblock, buf []byte) error {
	sb.encode(buf[:sbBytes])
	end := leg.Size() &^ (blockBytes - 1)
	off := end - 2*sbBytes + int64(sb.Events%2)*sbBytes
	return leg.WriteAt(buf[:sbBytes], off, true)
}

// readBitmap reads a leg's bitmap. A block that fails its checks is
// reported in bad and all its chunks are marked (the safe assumption).
func readBitmap(leg Leg, sb *superblock) (bs *bitset, bad int, err error) {
	bs = newBitset(sb.chunks())
	nb := bs.blocks()
	const batch = 64
	buf := alignedBuf(batch * blockBytes)
	for b := int64(0); b < nb; b += batch {
		n := min(batch, nb-b)
		if err := leg.ReadAt(buf[:n*blockBytes], sb.BitmapOff+b*blockBytes); err != nil {
			return nil, 0, fmt.Errorf("read bitmap of %s: %w", leg.Name(), err)
		}
		for i := int64(0); i < n; i++ {
			if bs.decodeBlock(b+i, buf[i*blockBytes:(i+1)*blockBytes]) != nil {
				bad++
				bs.setBlockAll(b + i)
			}
		}
	}
	return bs, bad, nil
}

// encodedBlock is one bitmap block, encoded while the bitmap was locked.
type encodedBlock struct {
	idx  int64
	data []byte // 4096 bytes, aligned
}

// writeBitmapBlocks writes encoded bitmap blocks (FUA) to the leg,
// merging neighbours into one I/O.
func writeBitmapBlocks(leg Leg, bitmapOff int64, blocks []encodedBlock) error {
	for i := 0; i < len(blocks); {
		j := i + 1
		for j < len(blocks) && blocks[j].idx == blocks[j-1].idx+1 {
			j++
		}
		var p []byte
		if j == i+1 {
			p = blocks[i].data
		} else {
			p = alignedBuf((j - i) * blockBytes)
			for k := i; k < j; k++ {
				copy(p[(k-i)*blockBytes:], blocks[k].data)
			}
		}
		if err := leg.WriteAt(p, bitmapOff+blocks[i].idx*blockBytes, true); err != nil {
			return err
		}
		i = j
	}
	return nil
}
