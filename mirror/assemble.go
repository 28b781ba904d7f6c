package mirror

import (
	"errors"
	"fmt"
	"sync"
)

// Assemble reads both legs' superblocks, picks the source (see decide),
// records the assembly on disk and starts serving; a resync of the dirty
// or stale chunks starts automatically.
//
// Legs may be given in any order: each goes to the slot its superblock
// names. To assemble degraded pass nil for the missing leg; a leg whose
// metadata cannot be read because of an I/O error is treated the same way
// (it is kept, failed, for AutoReAdd). A leg without metadata is an error
// (ErrNoMetadata, pointing to `mirrorctl create`), and a split brain is a
// *SplitBrainError unless opts.KeepLeg names the leg to keep.
func Assemble(legs [2]Leg, opts Options) (*Volume, error) {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	var sbs [2]*superblock
	var bySlot [2]Leg
	var names [2]string
	var unreadable []Leg
	var readErr error
	for _, l := range legs {
		if l == nil {
			continue
		}
		sb, err := readSuperblock(l)
		switch {
		case errors.Is(err, ErrNoMetadata) || errors.Is(err, ErrCorrupt):
			return nil, fmt.Errorf("assemble: %w", err)
		case err != nil:
			opts.Logger.Warn("leg unreadable; assembling without it", "leg", l.Name(), "err", err)
			unreadable = append(unreadable, l)
			readErr = err
			continue
		}
		if bySlot[sb.Slot] != nil {
			return nil, fmt.Errorf("assemble: %s and %s both claim slot %d (a copied leg?)", names[sb.Slot], l.Name(), sb.Slot)
		}
		sbs[sb.Slot], bySlot[sb.Slot], names[sb.Slot] = sb, l, l.Name()
	}
	if sbs[0] == nil && sbs[1] == nil {
		if readErr != nil {
			return nil, fmt.Errorf("assemble: no leg readable: %w", readErr)
		}
		return nil, fmt.Errorf("assemble: no legs given: %w", ErrNoLeg)
	}
	if a, b := sbs[0], sbs[1]; a != nil && b != nil {
		if a.VolumeUUID != b.VolumeUUID {
			return nil, fmt.Errorf("assemble: %s belongs to volume %s but %s to volume %s", names[0], uuidString(a.VolumeUUID), names[1], uuidString(b.VolumeUUID))
		}
		if a.DataSize != b.DataSize || a.ChunkSize != b.ChunkSize {
			return nil, fmt.Errorf("assemble: legs disagree on data size (%d, %d) or chunk size (%d, %d): %w", a.DataSize, b.DataSize, a.ChunkSize, b.ChunkSize, ErrCorrupt)
		}
	}
	for _, l := range unreadable {
		for i := range 2 {
			if bySlot[i] == nil {
				bySlot[i], names[i] = l, l.Name()
				break
			}
		}
	}
	var specs [2]string // by slot
	for i, l := range legs {
		for s := range 2 {
			if l != nil && bySlot[s] == l {
				specs[s] = opts.Specs[i]
				if specs[s] == "" {
					specs[s] = l.Name()
				}
			}
		}
	}
	for i, l := range legs {
		if l == nil && opts.Specs[i] != "" {
			for s := range 2 {
				if bySlot[s] == nil && specs[s] == "" {
					specs[s] = opts.Specs[i]
					break
				}
			}
		}
	}
	blockSize, err := volumeBlockSize(bySlot, opts.BlockSize)
	if err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	plan, err := decide(sbs, names, opts.KeepLeg, opts.NodeID)
	if err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	view := plan.view
	mmp, err := acquireMMP(bySlot, sbs, opts, view.VolumeUUID)
	if err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	opts.Logger.Info("assembling", "plan", plan.why, "states", fmt.Sprint(plan.states[0], ",", plan.states[1]))

	n := view.chunks()
	var dirty *bitset
	for i := range 2 {
		if !plan.union[i] || sbs[i] == nil {
			continue
		}
		bs, bad, err := readBitmap(bySlot[i], sbs[i])
		if err != nil {
			return nil, fmt.Errorf("assemble: %w", err)
		}
		if bad > 0 {
			opts.Logger.Warn("unreadable bitmap blocks counted as dirty", "leg", names[i], "blocks", bad)
		}
		if dirty == nil {
			dirty = newBitset(n)
		}
		dirty.or(bs)
	}
	if plan.full {
		dirty = newBitset(n)
		dirty.setAll()
	}
	mc := machineConfig{
		chunk: view.ChunkSize, dataSize: view.DataSize, delay: opts.BitClearDelay, newGen: newGenID,
		legs: plan.states, attached: [2]bool{sbs[0] != nil, sbs[1] != nil}, legUUIDs: view.LegUUIDs,
		bits: dirty, events: max(sbEvents(sbs[0]), sbEvents(sbs[1])), gens: view.Gens,
		bitmapGen: view.BitmapGen, checkpoint: view.Checkpoint, lastWriter: opts.NodeID,
	}
	for i := range 2 {
		if sbs[i] != nil {
			mc.legUUIDs[i] = sbs[i].LegUUID
		}
	}
	if plan.full {
		mc.checkpoint = 0
	}
	m := newMachine(mc)
	if plan.newGen {
		m.startGeneration()
	}
	v := &Volume{
		opts: opts, clock: opts.Clock, log: opts.Logger,
		size: view.DataSize, chunk: view.ChunkSize, volUUID: view.VolumeUUID, blockSize: blockSize, mmp: mmp,
		m: m, legs: bySlot, specs: specs,
		stop: make(chan struct{}), metaExit: make(chan struct{}),
	}
	v.cond = sync.NewCond(&v.mu)
	v.metaCond = sync.NewCond(&v.mu)
	for i := range 2 {
		if sbs[i] != nil {
			t := *sbs[i]
			v.tmpl[i] = &t
		}
		if sbs[i] == nil && bySlot[i] != nil {
			m.legErr[i] = "metadata unreadable at assembly: " + readErr.Error()
		}
	}
	if plan.full {
		// Every block of the target's bitmap must be rewritten.
		if t := m.target(); t >= 0 {
			m.fullMeta[t] = true
		}
	}
	go v.metaLoop()
	v.mu.Lock()
	err = v.waitSeq(m.commitSeq())
	v.mu.Unlock()
	if err != nil {
		v.shutdownMeta()
		return nil, fmt.Errorf("assemble: recording the assembly: %w", err)
	}
	v.startBackground()
	v.mmp.start(v)
	if err := v.Resync(); err != nil {
		v.log.Warn("resync not started", "err", err)
	}
	return v, nil
}

func sbEvents(s *superblock) uint64 {
	if s == nil {
		return 0
	}
	return s.Events
}

// metaLoop performs the machine's metadata writes one at a time (group
// commit: each write carries every change made since the previous one).
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
	sb := *tmpl
	sb.Events, sb.Updated, sb.LegStates, sb.LegUUIDs = s.sb.Events, s.sb.Updated, s.sb.LegStates, s.sb.LegUUIDs
	sb.Clean, sb.LastWriter, sb.Checkpoint = s.sb.Clean, s.sb.LastWriter, s.sb.Checkpoint
	sb.BitmapGen, sb.Gens = s.sb.BitmapGen, s.sb.Gens
	sb.LegUUIDs[slot] = sb.LegUUID
	return writeSuperblock(l, &sb, alignedBuf(sbBytes))
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
