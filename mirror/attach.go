package mirror

import (
	"errors"
	"fmt"
)

// Failing and adding legs: the I/O around the lifecycle transitions of
// legs.go. The machine decides (may this slot be added now, how does this
// leg join, is the copy still valid); this file opens, reads and writes.

// AddOptions tune AddLegWith.
type AddOptions struct {
	// Force overwrites a leg the rules refuse (FORMAT.md "Adding a leg"):
	// one whose metadata is corrupt, that holds a file system, or whose
	// history is newer than or diverged from this volume's (a leg of
	// another volume stays refused). The leg then receives a full copy
	// and what it held is lost. Only an operator who decided so sets it
	// (`mirrorctl leg add N --force`).
	Force bool
}

// AddLeg (re-)adds a leg in a failed or missing slot and starts a resync.
// leg nil reopens the slot's previous leg by name (Options.OpenLeg). A leg
// of this volume that left in an older generation receives only the
// chunks changed since; a blank leg receives everything. A leg that may
// hold data the volume lacks (the volume's newest generation or a newer
// one, or a diverged history: *SplitBrainError) is refused, as is a leg
// with corrupt metadata (ErrCorrupt) or a file system, unless AddLegWith
// forces it; a leg of another volume is always refused (ErrExists). The
// slot cannot be re-added while a leg call into it is still running
// (ErrInFlight). A leg object the slot held before is
// closed once replaced; a leg passed in is never closed on error.
func (v *Volume) AddLeg(slot int, leg Leg) error { return v.AddLegWith(slot, leg, AddOptions{}) }

// AddLegWith is AddLeg with options.
func (v *Volume) AddLegWith(slot int, leg Leg, o AddOptions) error {
	if slot != 0 && slot != 1 {
		return fmt.Errorf("slot %d: must be 0 or 1", slot)
	}
	return v.add(slot, leg, o, true)
}

// add performs an add; explicit is an operator's (AddLeg), otherwise
// AutoReAdd's (it leaves parked slots alone).
func (v *Volume) add(slot int, leg Leg, o AddOptions, explicit bool) (err error) {
	v.mu.Lock()
	if v.closing {
		v.mu.Unlock()
		return ErrClosed
	}
	err = v.m.beginAdd(slot, v.outstanding[slot].Load(), explicit)
	old, spec, other := v.legs[slot], v.specs[slot], v.tmpl[1-slot]
	v.mu.Unlock()
	if err != nil {
		return err
	}
	attached := false
	opened := leg == nil // we open it: we close it unless it joins
	// own: the slot's own leg (its object, or reopened from its spec). A
	// reservation conflict from it means another node fenced this one off
	// its array: the volume stops (machine rule 9). A replacement the
	// operator names may be a LUN someone else reserved: only refused.
	own := opened || (leg == old && old != nil)
	defer func() {
		if attached {
			return
		}
		if opened && leg != nil {
			leg.Close()
		}
		v.mu.Lock()
		v.m.abortAdd(slot)
		if own && isFencing(err) {
			v.m.fence(err)
		}
		v.notify()
		v.mu.Unlock()
	}()
	if opened {
		if spec == "" && old != nil {
			spec = old.Name()
		}
		if spec == "" {
			return fmt.Errorf("slot %d has no previous leg to reopen; name one", slot)
		}
		if old != nil {
			// Close the failed leg before opening it again: an iSCSI leg
			// logging in with the same ISID while the old session still
			// reconnects would knock the two sessions off the target in
			// turn. No call into it is out (beginAdd checked), and the
			// slot keeps its spec for the next attempt.
			v.mu.Lock()
			if v.legs[slot] == old {
				v.legs[slot] = nil
			}
			v.mu.Unlock()
			old.Close()
		}
		if leg, err = v.opts.openLeg(spec); err != nil {
			leg = nil
			return fmt.Errorf("reopen leg %d: %w", slot, err)
		}
	}
	if err := v.checkAddBlockSize(leg); err != nil {
		return fmt.Errorf("add leg %d: %w", slot, err)
	}
	if other == nil {
		return fmt.Errorf("add leg %d: the other leg's metadata is unknown: %w", slot, ErrNoLeg)
	}
	lay, err := computeLayout(leg.Size(), v.size, v.chunk, other.HBCount)
	if err != nil {
		return fmt.Errorf("add leg %s: %w", leg.Name(), err)
	}
	plan, extra, err := v.planAdd(slot, leg, o.Force)
	if err != nil {
		return err
	}
	if plan.uuid == ([16]byte{}) {
		plan.uuid = newUUID() // a new member: randomness stays out of the machine
	}
	if v.opts.BeforeReAdd != nil {
		if err := v.opts.BeforeReAdd(slot, leg); err != nil {
			return fmt.Errorf("add leg %s: refused before the add: %w", leg.Name(), err)
		}
	}
	if plan.full {
		// Invalidate both superblock copies before anything else lands, and
		// give the heartbeat slots a clean start.
		err := v.legIO(slot, leg, "prepare", func(l Leg) error {
			for _, off := range lay.SBOff {
				if err := l.WriteAt(alignedBuf(sbBytes), off, true); err != nil {
					return err
				}
			}
			if err := l.WriteAt(alignedBuf(other.HBCount*hbSlotBytes), lay.HBOff, false); err != nil {
				return fmt.Errorf("clearing heartbeat slots: %w", err)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("add leg %s: %w", leg.Name(), err)
		}
	}
	t := &superblock{
		VolumeUUID: v.volUUID, LegUUID: plan.uuid, Slot: slot, LegSize: leg.Size(), DataSize: v.size,
		ChunkSize: v.chunk, Created: other.Created, BitmapOff: lay.BitmapOff, BitmapLen: lay.BitmapLen,
		HBOff: lay.HBOff, HBSlotSize: hbSlotBytes, HBCount: other.HBCount,
	}
	v.mu.Lock()
	if v.closing {
		v.mu.Unlock()
		return ErrClosed // the volume closed while the leg was opened or read
	}
	if err := v.m.attach(slot, plan, extra, v.outstanding[slot].Load(), v.clock.Now()); err != nil {
		v.mu.Unlock()
		return fmt.Errorf("add leg %s: %w", leg.Name(), err)
	}
	attached = true
	prev := v.legs[slot]
	v.legs[slot], v.tmpl[slot] = leg, t
	if v.specs[slot] == "" || !opened {
		v.specs[slot] = leg.Name()
	}
	v.log.Info("leg added", "slot", slot, "leg", leg.Name(), "plan", plan.why, "chunks", v.m.needCount)
	err = v.waitSeq(v.m.commitSeq())
	v.mu.Unlock()
	if prev != nil && prev != leg {
		prev.Close() // replaced; no call into the slot is out (attach checked)
	}
	if err != nil {
		return err
	}
	return v.Resync()
}

// planAdd reads the leg's metadata (under the I/O timeout, counted in the
// slot's in-flight calls) and asks the machine how it joins.
func (v *Volume) planAdd(slot int, leg Leg, force bool) (addPlan, *bitset, error) {
	type found struct {
		sb  *superblock
		sig string
	}
	ch := make(chan found, 1) // an abandoned call sends into it too late
	err := v.legIO(slot, leg, "read metadata", func(l Leg) error {
		var f found
		var err error
		f.sb, err = readSuperblock(l)
		if errors.Is(err, ErrNoMetadata) {
			if f.sig, err = inUse(l); err == nil {
				err = ErrNoMetadata
			}
		}
		ch <- f
		return err
	})
	var le *LegError
	if errors.As(err, &le) {
		err = le.Err // the leg's own error: its class decides
	}
	var f found
	if !errors.Is(err, ErrTimeout) {
		f = <-ch
	}
	sb, sig := f.sb, f.sig
	v.mu.Lock()
	plan, perr := v.m.planAdd(slot, leg.Name(), sb, err, sig, force)
	v.mu.Unlock()
	if perr != nil {
		return plan, nil, perr
	}
	if !plan.own {
		return plan, nil, nil
	}
	bch := make(chan *bitset, 1)
	err = v.legIO(slot, leg, "read bitmap", func(l Leg) error {
		bs, _, err := readBitmap(l, sb)
		bch <- bs
		return err
	})
	if err != nil {
		return plan, nil, fmt.Errorf("add leg %s: %w", leg.Name(), err)
	}
	return plan, <-bch, nil
}

// FailLeg marks leg slot failed (operator): it gets no more I/O and the
// volume continues degraded; AutoReAdd leaves it out until AddLeg. The
// last working leg cannot be failed. Once the failure is durable on the
// survivor it is also recorded, best effort, on the failed leg itself, so
// that leg alone is never taken for the newest copy.
func (v *Volume) FailLeg(slot int) error {
	if slot != 0 && slot != 1 {
		return fmt.Errorf("slot %d: must be 0 or 1", slot)
	}
	v.mu.Lock()
	seq, rec, err := v.m.failByOperator(slot, v.clock.Now())
	if err != nil {
		v.mu.Unlock()
		return err
	}
	v.log.Warn("leg failed by operator", "slot", slot)
	if err := v.waitSeq(seq); err != nil {
		v.mu.Unlock()
		return err
	}
	leg, tmpl := v.legs[slot], v.tmpl[slot]
	if rec == nil || leg == nil || tmpl == nil || !v.m.beginRecord(slot) {
		v.mu.Unlock()
		return nil
	}
	v.mu.Unlock()
	werr := v.legIO(slot, leg, "recording its failure", func(l Leg) error {
		return writeSuperblock(l, withLegFields(tmpl, rec), alignedBuf(sbBytes))
	})
	if werr != nil {
		v.log.Warn("could not record the failure on the failed leg itself", "slot", slot, "err", werr)
	}
	v.mu.Lock()
	if isFencing(werr) {
		v.m.fence(werr) // fenced off that leg's array by another node (rule 9)
	}
	v.m.endRecord(slot)
	v.notify()
	v.mu.Unlock()
	return nil
}

// readdLoop re-adds failed legs that answer again (AutoReAdd): the same
// leg object when the slot has one (an iSCSI Disk reconnects by itself),
// else one opened from the slot's spec. The machine decides when a slot
// is due (backoff) and whether the leg may join.
func (v *Volume) readdLoop() {
	defer v.bg.Done()
	var lastErr [2]string
	for sleep(v.clock, v.opts.ReAddInterval, v.stop) {
		for slot := range 2 {
			v.mu.Lock()
			leg, spec := v.legs[slot], v.specs[slot]
			due := (leg != nil || spec != "") && !v.closing && v.m.readdDue(slot, v.clock.Now(), v.opts.ReAddInterval) &&
				v.outstanding[slot].Load() == 0
			v.mu.Unlock()
			if !due {
				continue
			}
			openedHere := leg == nil
			if openedHere {
				// Never opened (down at start-up): open it now, without
				// holding up Close.
				if leg = v.openInBackground(spec); leg == nil {
					continue
				}
			}
			err := v.add(slot, leg, AddOptions{}, false)
			if err != nil {
				if openedHere {
					leg.Close() // not taken
				}
				if msg := err.Error(); msg != lastErr[slot] {
					lastErr[slot] = msg
					v.log.Warn("automatic re-add not done", "slot", slot, "err", err)
				}
				continue
			}
			lastErr[slot] = ""
			v.log.Info("leg answered again: re-added", "slot", slot, "leg", leg.Name())
		}
	}
}

// openInBackground opens a leg from its spec without holding up Close: an
// open that finishes after the volume stopped is closed again.
func (v *Volume) openInBackground(spec string) Leg {
	type result struct {
		leg Leg
		err error
	}
	ch := make(chan result, 1)
	go func() {
		l, err := v.opts.openLeg(spec)
		ch <- result{l, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			v.log.Debug("leg still cannot be opened", "leg", spec, "err", r.err)
			return nil
		}
		return r.leg
	case <-v.stop:
		go func() {
			if r := <-ch; r.leg != nil {
				r.leg.Close()
			}
		}()
		return nil
	}
}

// readdPending (mu held): AutoReAdd may still bring a missing leg back.
func (v *Volume) readdPending() bool {
	if !v.opts.AutoReAdd || v.closing {
		return false
	}
	for i := range 2 {
		if !v.m.active(i) && !v.m.slots[i].parked && (v.legs[i] != nil || v.specs[i] != "") {
			return true
		}
	}
	return false
}
