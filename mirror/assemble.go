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
// names. Pass nil for a leg that could not be opened. A lone leg is
// assembled only when it is provably the newest copy (its own superblock
// records the other leg failed, or opts.Known proves it); otherwise
// Assemble returns a *LoneLegError saying what is known and how to force
// (opts.KeepLeg naming the present leg). A leg whose metadata cannot be
// read is retried, then reported (*UnreadableLegError), never taken for a
// missing leg, unless opts.KeepLeg names the other leg: it is then left
// out (failed) and can be re-added later. A leg without metadata is an
// error (ErrNoMetadata, pointing to `mirrorctl create`), and a split brain
// is a *SplitBrainError unless opts.KeepLeg names the leg to keep.
func Assemble(legs [2]Leg, opts Options) (*Volume, error) {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	var sbs [2]*superblock
	var bySlot [2]Leg
	var names [2]string
	type bad struct {
		leg Leg
		err error
	}
	var bads []bad
	for _, l := range legs {
		if l == nil {
			continue
		}
		sb, err := readSuperblockRetry(l, &opts)
		if err != nil {
			opts.Logger.Warn("leg metadata not usable", "leg", l.Name(), "err", err)
			bads = append(bads, bad{l, err})
			continue
		}
		if bySlot[sb.Slot] != nil {
			return nil, fmt.Errorf("assemble: %s and %s both claim slot %d (a copied leg?)", names[sb.Slot], l.Name(), sb.Slot)
		}
		sbs[sb.Slot], bySlot[sb.Slot], names[sb.Slot] = sb, l, l.Name()
	}
	if a, b := sbs[0], sbs[1]; a != nil && b != nil {
		if a.VolumeUUID != b.VolumeUUID {
			return nil, fmt.Errorf("assemble: %s belongs to volume %s but %s to volume %s", names[0], uuidString(a.VolumeUUID), names[1], uuidString(b.VolumeUUID))
		}
		if a.DataSize != b.DataSize || a.ChunkSize != b.ChunkSize {
			return nil, fmt.Errorf("assemble: legs disagree on data size (%d, %d) or chunk size (%d, %d): %w", a.DataSize, b.DataSize, a.ChunkSize, b.ChunkSize, ErrCorrupt)
		}
	}
	var leftOut [2]string // why a present leg takes no part (by slot)
	if len(bads) > 0 {
		good := -1
		for i := range 2 {
			if sbs[i] != nil {
				good = i
			}
		}
		if good < 0 || len(bads) > 1 {
			return nil, assembleErr(bads[0].leg, bads[0].err, -1)
		}
		if opts.KeepLeg != good {
			return nil, assembleErr(bads[0].leg, bads[0].err, good)
		}
		// The operator keeps the readable leg: the other is left out.
		bySlot[1-good], names[1-good] = bads[0].leg, bads[0].leg.Name()
		leftOut[1-good] = "metadata unusable at assembly: " + bads[0].err.Error()
	}
	if sbs[0] == nil && sbs[1] == nil {
		return nil, fmt.Errorf("assemble: no legs given: %w", ErrNoLeg)
	}
	specs := slotSpecs(legs, bySlot, opts.Specs)
	for i := range 2 {
		if names[i] == "" {
			names[i] = specs[i]
		}
	}
	blockSize, err := volumeBlockSize(bySlot, opts.BlockSize)
	if err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	plan, err := decide(sbs, names, opts.KeepLeg, opts.NodeID, opts.Known)
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
		var bs *bitset
		var bad int
		err := timed(opts.Clock, opts.IOTimeout, func() error {
			var err error
			bs, bad, err = readBitmap(bySlot[i], sbs[i])
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("assemble: leg %s: %w", names[i], err)
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
		chunk: view.ChunkSize, dataSize: view.DataSize, volUUID: view.VolumeUUID, delay: opts.BitClearDelay, newGen: newGenID,
		legs: plan.states, legUUIDs: view.LegUUIDs, leftGen: plan.leftGen,
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
		switch {
		case sbs[i] != nil:
			t := *sbs[i]
			v.tmpl[i] = &t
		case leftOut[i] != "":
			m.slots[i].err = leftOut[i]
		default:
			m.slots[i].err = "not present at assembly"
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

// assembleErr explains a leg whose metadata is unusable at assembly; keep
// is the slot of the leg that could be kept instead (-1: none).
func assembleErr(l Leg, err error, keep int) error {
	switch {
	case errors.Is(err, ErrNoMetadata) && keep < 0:
		return fmt.Errorf("assemble: %w", err)
	case errors.Is(err, ErrNoMetadata) || errors.Is(err, ErrCorrupt):
		if keep >= 0 {
			return fmt.Errorf("assemble: %w (to run on leg %d alone, start with --keep-leg %d, then add this leg back with `mirrorctl leg add`)", err, keep, keep)
		}
		return fmt.Errorf("assemble: %w", err)
	}
	return fmt.Errorf("assemble: %w", &UnreadableLegError{Name: l.Name(), KeepHint: keep, Err: err})
}

// slotSpecs says how each slot's leg is reopened: the spec it was given
// (opts.Specs, in the order of legs), or its name; a leg passed as nil
// takes a slot left free.
func slotSpecs(legs, bySlot [2]Leg, given [2]string) [2]string {
	var specs [2]string
	for i, l := range legs {
		for s := range 2 {
			if l != nil && bySlot[s] == l {
				specs[s] = given[i]
				if specs[s] == "" {
					specs[s] = l.Name()
				}
			}
		}
	}
	for i, l := range legs {
		if l == nil && given[i] != "" {
			for s := range 2 {
				if bySlot[s] == nil && specs[s] == "" {
					specs[s] = given[i]
					break
				}
			}
		}
	}
	return specs
}

func sbEvents(s *superblock) uint64 {
	if s == nil {
		return 0
	}
	return s.Events
}
