package mirror

import (
	"context"
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

// clearIdle flushes both legs and clears the bits of the chunks that
// stayed idle, unless a leg was re-attached meanwhile (the flush went to
// the leg object of the earlier attach).
func (v *Volume) clearIdle(all bool) {
	v.mu.Lock()
	cands, ep := v.m.clearCandidates(v.clock.Now(), all)
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
		if v.m.epochs() != ep {
			return // the error belongs to a leg object that was replaced meanwhile
		}
		_ = v.settle(sel, errs, "flush before clearing bits")
		return
	}
	if n := v.m.clearBits(cands, ep); n > 0 {
		if v.log.Enabled(context.Background(), slog.LevelDebug) {
			v.log.Debug("bits cleared", "cands", fmt.Sprint(cands), "nextSeq", v.m.nextSeq)
		}
		v.notify()
	}
}
