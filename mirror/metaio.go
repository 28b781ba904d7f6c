package mirror

import (
	"errors"
	"fmt"
	"sync"
	"time"
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

// timed runs f under timeout d on clock c. When f does not return in
// time it keeps running in its goroutine (a hung leg call cannot be
// interrupted) and timed returns an ErrTimeout error; f must then not
// touch state the caller still uses.
func timed(c Clock, d time.Duration, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	t := c.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C():
		return fmt.Errorf("no answer within %v: %w", d, ErrTimeout)
	}
}

// readSuperblockRetry reads a leg's superblock at assembly: an I/O error
// is retried (three tries in all, within one I/O timeout), a missing or
// corrupt superblock is not.
func readSuperblockRetry(l Leg, o *Options) (*superblock, error) {
	deadline := o.Clock.Now().Add(o.IOTimeout)
	var err error
	tries := 0
	for tries < 3 {
		left := deadline.Sub(o.Clock.Now())
		if left <= 0 {
			break
		}
		tries++
		var sb *superblock
		ch := make(chan *superblock, 1)
		err = timed(o.Clock, left, func() error {
			s, err := readSuperblock(l)
			ch <- s
			return err
		})
		if err == nil {
			sb = <-ch
			return sb, nil
		}
		if errors.Is(err, ErrNoMetadata) || errors.Is(err, ErrCorrupt) {
			return nil, err
		}
		if errors.Is(err, ErrTimeout) {
			break
		}
		sleep(o.Clock, min(o.IOTimeout/10, deadline.Sub(o.Clock.Now())), nil)
	}
	return nil, fmt.Errorf("reading its superblock (%d tries within %v): %w", tries, o.IOTimeout, err)
}

// metaLoop performs the machine's metadata writes one at a time (group
// commit: each write carries every change made since the previous one).
// A write that changes a leg state or starts a generation is handed to
// Options.Publish before it is written, and counts as durable only once
// Publish returned and the write succeeded: a write abandoned on a hung
// leg may land later, and the peer must already know every state that may
// be on a leg, or its knowledge could start the other leg alone while this
// one's own late record starts it alone too (two lone starts, each losing
// what the other acknowledged).
func (v *Volume) metaLoop() {
	defer close(v.metaExit)
	v.mu.Lock()
	defer v.mu.Unlock()
	for {
		for !v.m.metaWork() && !v.metaStop {
			v.metaCond.Wait()
		}
		if !v.m.metaWork() {
			return
		}
		snap := v.m.snapshot(v.clock.Now())
		legs, tmpl := v.legs, v.tmpl
		v.mu.Unlock()
		if snap.publish && v.opts.Publish != nil {
			v.opts.Publish(snap.known)
		}
		var res [2]error
		var wg sync.WaitGroup
		for i := range 2 {
			if !snap.targets[i] {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				res[i] = v.legIO(i, legs[i], "metadata write", func(l Leg) error {
					return writeMeta(l, tmpl[i], snap, i)
				})
			}()
		}
		wg.Wait()
		v.mu.Lock()
		v.m.metaDone(snap, res)
		if res[0] != nil || res[1] != nil {
			v.log.Warn("metadata write failed", "leg0", res[0], "leg1", res[1])
		}
		v.notify()
	}
}

// writeMeta writes one leg's part of a metadata snapshot: bitmap blocks,
// then the superblock (both with FUA).
func writeMeta(l Leg, tmpl *superblock, s metaSnap, slot int) error {
	blocks := s.blocks
	if s.full[slot] {
		blocks = s.all
	}
	if err := writeBitmapBlocks(l, tmpl.BitmapOff, blocks); err != nil {
		return err
	}
	if s.sb == nil {
		return nil
	}
	return writeSuperblock(l, withLegFields(tmpl, s.sb), alignedBuf(sbBytes))
}

// withLegFields is superblock view (volume-wide fields) as leg tmpl
// stores it (its own UUID, slot and layout).
func withLegFields(tmpl, view *superblock) *superblock {
	sb := *tmpl
	sb.Events, sb.Updated, sb.LegStates, sb.LegUUIDs = view.Events, view.Updated, view.LegStates, view.LegUUIDs
	sb.Clean, sb.LastWriter, sb.Checkpoint = view.Clean, view.LastWriter, view.Checkpoint
	sb.BitmapGen, sb.Gens = view.BitmapGen, view.Gens
	sb.LegUUIDs[sb.Slot] = sb.LegUUID
	return &sb
}

func (v *Volume) shutdownMeta() {
	v.mu.Lock()
	v.metaStop = true
	v.notify()
	v.mu.Unlock()
	<-v.metaExit
	for i := range v.wd {
		v.wd[i].stop() // its goroutine exits when no leg call is left
	}
}
