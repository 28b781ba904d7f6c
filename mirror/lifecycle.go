package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// startBackground starts the lazy bit clearer and the AutoReAdd prober.
func (v *Volume) startBackground() {
	v.bg.Add(1)
	go v.clearLoop()
	if v.opts.AutoReAdd {
		v.bg.Add(1)
		go v.readdLoop()
	}
}

// clearLoop clears idle chunks' bits (rule 4 of machine): flush both legs
// first, then clear the candidates no write touched meanwhile.
func (v *Volume) clearLoop() {
	defer v.bg.Done()
	period := max(v.opts.BitClearDelay/2, time.Millisecond)
	for sleep(v.clock, period, v.stop) {
		v.clearIdle(false)
	}
}

func (v *Volume) clearIdle(all bool) {
	v.mu.Lock()
	cands := v.m.clearCandidates(v.clock.Now(), all)
	legs := v.legs
	v.mu.Unlock()
	if len(cands) == 0 {
		return
	}
	sel := [2]bool{true, true}
	errs, _ := v.both(sel, legs, "flush", 0, Leg.Flush)
	v.mu.Lock()
	defer v.mu.Unlock()
	if errs[0] != nil || errs[1] != nil {
		_ = v.settle(sel, errs, "flush before clearing bits")
		return
	}
	if n := v.m.clearBits(cands); n > 0 {
		if v.log.Enabled(context.Background(), slog.LevelDebug) {
			v.log.Debug("bits cleared", "cands", fmt.Sprint(cands), "nextSeq", v.m.nextSeq)
		}
		v.notify()
	}
}

// readdLoop probes failed legs and re-adds the ones that answer again. A
// leg that fails again within a minute of being re-added is retried with
// exponential backoff (up to 64 intervals), so a leg with a persistent
// write error does not churn through resyncs.
func (v *Volume) readdLoop() {
	defer v.bg.Done()
	var st [2]readdState
	for sleep(v.clock, v.opts.ReAddInterval, v.stop) {
		for slot := range 2 {
			v.mu.Lock()
			leg, spec := v.legs[slot], v.specs[slot]
			failed := (leg != nil || spec != "") && !v.m.active(slot) && !v.parked[slot] && v.m.dead == nil && !v.closing
			v.mu.Unlock()
			now := v.clock.Now()
			if !st[slot].due(failed, now, v.opts.ReAddInterval) || v.outstanding[slot].Load() > 0 {
				continue // healthy, backing off, or still hung: its old I/O has not returned
			}
			if leg == nil {
				// Never opened (down at start-up): try to open it now.
				if leg = v.openInBackground(spec); leg == nil {
					continue
				}
			}
			var sb *superblock
			err := v.legIO(slot, leg, "probe", func(l Leg) error {
				var err error
				sb, err = readSuperblock(l)
				return err
			})
			if err != nil || sb.VolumeUUID != v.volUUID {
				v.dropUnused(slot, leg)
				continue
			}
			if err := v.AddLeg(slot, leg); err != nil {
				v.log.Warn("automatic re-add failed", "slot", slot, "err", err)
				v.dropUnused(slot, leg)
				continue
			}
			st[slot].added(now)
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
		l, err := OpenLeg(spec, v.opts.LegOptions)
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

// dropUnused closes a leg AutoReAdd opened itself but did not add.
func (v *Volume) dropUnused(slot int, leg Leg) {
	v.mu.Lock()
	ours := v.legs[slot] != leg
	v.mu.Unlock()
	if ours {
		leg.Close()
	}
}

// readdState is one slot's AutoReAdd backoff.
type readdState struct {
	failedSeen bool
	attempts   int
	lastAdd    time.Time
	notBefore  time.Time
}

// due reports whether a failed leg should be probed now.
func (s *readdState) due(failed bool, now time.Time, interval time.Duration) bool {
	if !failed {
		s.failedSeen = false
		return false
	}
	if !s.failedSeen {
		s.failedSeen = true
		if !s.lastAdd.IsZero() && now.Sub(s.lastAdd) < time.Minute {
			s.attempts = min(s.attempts+1, 6)
		} else {
			s.attempts = 0
		}
		s.notBefore = now.Add(interval*time.Duration(1<<s.attempts) - interval)
	}
	return !now.Before(s.notBefore)
}

func (s *readdState) added(now time.Time) {
	s.lastAdd = now
	s.failedSeen = false
}

// AddLeg (re-)adds a leg in a failed or missing slot and starts a resync.
// leg nil reopens the slot's previous leg by name. A leg of this volume
// that left recently receives only the chunks changed since; a blank leg
// (or one whose history cannot be trusted) receives everything. A leg
// holding another hamirror volume is refused (ErrExists).
func (v *Volume) AddLeg(slot int, leg Leg) error {
	if slot != 0 && slot != 1 {
		return fmt.Errorf("slot %d: must be 0 or 1", slot)
	}
	v.mu.Lock()
	if v.closing {
		v.mu.Unlock()
		return ErrClosed
	}
	if v.m.active(slot) {
		v.mu.Unlock()
		return fmt.Errorf("slot %d already holds a working leg (%s); fail it first", slot, v.legs[slot].Name())
	}
	if v.adding[slot] {
		v.mu.Unlock()
		return fmt.Errorf("slot %d: a leg is being added already", slot)
	}
	v.adding[slot] = true
	v.parked[slot] = false
	old := v.legs[slot]
	other := v.tmpl[1-slot]
	v.mu.Unlock()
	defer func() {
		v.mu.Lock()
		v.adding[slot] = false
		v.mu.Unlock()
	}()
	reopened := leg == nil
	if leg == nil {
		v.mu.Lock()
		spec := v.specs[slot]
		v.mu.Unlock()
		if spec == "" && old != nil {
			spec = old.Name()
		}
		if spec == "" {
			return fmt.Errorf("slot %d has no previous leg to reopen; name one", slot)
		}
		if old != nil && v.outstanding[slot].Load() > 0 {
			return fmt.Errorf("leg %s still has I/O in flight from before it failed; try again later", old.Name())
		}
		if old != nil {
			// Close the failed leg before opening it again: an iSCSI leg
			// logging in with the same ISID while the old session still
			// reconnects would knock the two sessions off the target in
			// turn. The slot keeps its spec, so AutoReAdd can still open
			// it if this attempt fails. (An exclusively claimed block device
			// can also only be opened once.)
			v.mu.Lock()
			if v.legs[slot] == old {
				v.legs[slot] = nil
			}
			v.mu.Unlock()
			old.Close()
		}
		l, err := OpenLeg(spec, v.opts.LegOptions)
		if err != nil {
			return fmt.Errorf("reopen leg %d: %w", slot, err)
		}
		leg = l
	} else if leg == old && v.outstanding[slot].Load() > 0 {
		return fmt.Errorf("leg %s still has I/O in flight from before it failed; try again later", leg.Name())
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
	sb, err := readSuperblock(leg)
	full := false
	var extra *bitset
	uuid := newUUID()
	switch {
	case errors.Is(err, ErrNoMetadata) || errors.Is(err, ErrCorrupt):
		full = true
	case err != nil:
		return fmt.Errorf("add leg %s: %w", leg.Name(), err)
	case sb.VolumeUUID != v.volUUID:
		return fmt.Errorf("add leg %s: it holds hamirror volume %s, not this volume %s (wipe its last 8 KiB to reuse it): %w",
			leg.Name(), uuidString(sb.VolumeUUID), uuidString(v.volUUID), ErrExists)
	case sb.ChunkSize != v.chunk || sb.DataSize != v.size:
		full = true
	default:
		uuid = sb.LegUUID
		v.mu.Lock()
		idx := indexOfGen(v.m.gens, sb.lastGen())
		full = idx < 0 || idx < indexOfGen(v.m.gens, v.m.bitmapGen) || v.m.legUUIDs[slot] != sb.LegUUID || sb.Slot != slot
		v.mu.Unlock()
		if !full {
			if extra, _, err = readBitmap(leg, sb); err != nil {
				return fmt.Errorf("add leg %s: %w", leg.Name(), err)
			}
		}
	}
	if full {
		// Invalidate both superblock copies before anything else lands, and
		// give the heartbeat slots a clean start.
		for _, off := range lay.SBOff {
			if err := leg.WriteAt(alignedBuf(sbBytes), off, true); err != nil {
				return fmt.Errorf("add leg %s: %w", leg.Name(), err)
			}
		}
		if err := leg.WriteAt(alignedBuf(other.HBCount*hbSlotBytes), lay.HBOff, false); err != nil {
			return fmt.Errorf("add leg %s: clearing heartbeat slots: %w", leg.Name(), err)
		}
	}
	t := &superblock{
		VolumeUUID: v.volUUID, LegUUID: uuid, Slot: slot, LegSize: leg.Size(), DataSize: v.size,
		ChunkSize: v.chunk, Created: other.Created, BitmapOff: lay.BitmapOff, BitmapLen: lay.BitmapLen,
		HBOff: lay.HBOff, HBSlotSize: hbSlotBytes, HBCount: other.HBCount,
	}
	v.mu.Lock()
	if err := v.m.addLeg(slot, uuid, full, extra); err != nil {
		v.mu.Unlock()
		return fmt.Errorf("add leg %s: %w", leg.Name(), err)
	}
	v.legs[slot], v.tmpl[slot] = leg, t
	if v.specs[slot] == "" || !reopened {
		v.specs[slot] = leg.Name()
	}
	// outstanding is not reset: a hung call of a replaced leg object
	// still counts until it returns (it decrements the counter then).
	v.log.Info("leg added", "slot", slot, "leg", leg.Name(), "full_resync", full, "chunks", v.m.needCount)
	err = v.waitSeq(v.m.commitSeq())
	v.mu.Unlock()
	if err != nil {
		return err
	}
	return v.Resync()
}

func indexOfGen(gens []generation, id uint64) int {
	for i, g := range gens {
		if g.ID == id {
			return i
		}
	}
	return -1
}

// Close drains in-flight I/O, stops resync and verify (a resync resumes at
// the next assembly from its checkpoint), flushes both legs, clears the
// bits of idle chunks, marks the volume clean on disk and closes the legs.
func (v *Volume) Close() error {
	v.mu.Lock()
	if v.closing {
		v.mu.Unlock()
		return ErrClosed
	}
	v.closing = true
	v.closingFlag.Store(true)
	close(v.stop)
	v.notify()
	for v.ops > 0 || v.reads.Load() > 0 {
		v.cond.Wait()
	}
	v.mu.Unlock()
	v.bg.Wait()
	v.mu.Lock()
	sel := [2]bool{v.m.active(0), v.m.active(1)}
	legs := v.legs
	v.mu.Unlock()
	errs, _ := v.both(sel, legs, "flush", 0, Leg.Flush)
	v.mu.Lock()
	err := v.settle(sel, errs, "flush at close")
	v.mu.Unlock()
	if err == nil {
		v.clearIdle(true)
	}
	v.mu.Lock()
	if v.m.dead == nil {
		v.m.markClean()
		if werr := v.waitSeq(v.m.commitSeq()); err == nil {
			err = werr
		}
	}
	v.mu.Unlock()
	v.mmp.release(err == nil)
	v.shutdownMeta()
	for i, l := range legs {
		if l != nil && v.outstanding[i].Load() == 0 {
			if cerr := l.Close(); err == nil {
				err = cerr
			}
		}
	}
	return err
}
