package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
)

// verifyState is the progress of the running verify (guarded by Volume.mu).
type verifyState struct {
	running     bool
	done, total int64
	mismatches  int64
	repaired    int64
	offsets     []int64
	err         error
}

const maxReportedOffsets = 16

// VerifyReport is the result of a completed verify.
type VerifyReport struct {
	Checked    int64   `json:"checked_bytes"`
	Mismatches int64   `json:"mismatches"` // chunks that differed
	Repaired   int64   `json:"repaired"`   // chunks rewritten from leg 0
	Offsets    []int64 `json:"offsets,omitempty"`
}

// StartVerify starts an online verify in the background: both legs are
// compared chunk by chunk (each chunk locked against writes while it is
// compared); with repair, a differing chunk is rewritten from leg 0.
// Progress is in Status().Verify.
func (v *Volume) StartVerify(repair bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.verifyAllowed(); err != nil {
		return err
	}
	v.verify = verifyState{running: true, total: v.size}
	v.bg.Add(1)
	go func() {
		defer v.bg.Done()
		_, _ = v.runVerify(context.Background(), repair)
	}()
	return nil
}

func (v *Volume) verifyAllowed() error {
	switch {
	case v.closing:
		return ErrClosed
	case v.verify.running:
		return fmt.Errorf("verify: already running")
	case !v.m.bothInSync() || v.m.needCount > 0:
		return fmt.Errorf("verify: both legs must be in sync (resync first): %w", ErrNoLeg)
	}
	return nil
}

// Verify runs a verify synchronously and returns its report.
func (v *Volume) Verify(ctx context.Context, repair bool) (VerifyReport, error) {
	v.mu.Lock()
	if err := v.verifyAllowed(); err != nil {
		v.mu.Unlock()
		return VerifyReport{}, err
	}
	v.verify = verifyState{running: true, total: v.size}
	v.bg.Add(1)
	v.mu.Unlock()
	defer v.bg.Done()
	return v.runVerify(ctx, repair)
}

func (v *Volume) runVerify(ctx context.Context, repair bool) (VerifyReport, error) {
	bufs := [2][]byte{alignedBuf(int(v.chunk)), alignedBuf(int(v.chunk))}
	var err error
	for c := int64(0); c*v.chunk < v.size && err == nil; c++ {
		if ctx.Err() != nil {
			err = ctx.Err()
			break
		}
		if v.stopped() {
			err = ErrClosed
			break
		}
		err = v.verifyChunk(c, repair, bufs)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	vs := &v.verify
	vs.running, vs.err = false, err
	rep := VerifyReport{Checked: vs.done, Mismatches: vs.mismatches, Repaired: vs.repaired, Offsets: vs.offsets}
	v.notify()
	if err != nil {
		v.log.Warn("verify stopped", "err", err)
		return rep, fmt.Errorf("verify: %w", err)
	}
	v.log.Info("verify done", "mismatches", rep.Mismatches, "repaired", rep.Repaired)
	return rep, nil
}

// verifyChunk compares chunk c on both legs under the chunk lock.
func (v *Volume) verifyChunk(c int64, repair bool, bufs [2][]byte) error {
	off := c * v.chunk
	n := min(v.chunk, v.size-off)
	v.mu.Lock()
	if !v.m.bothInSync() {
		v.mu.Unlock()
		return fmt.Errorf("a leg left sync during verify: %w", ErrNoLeg)
	}
	if !v.m.lockChunk(c) {
		// A leg failing under the verify ends the wait: a write held in
		// the chunk (rule 8) may never drain.
		err := v.waitChunkIdle(c, func() error {
			if !v.m.bothInSync() {
				return fmt.Errorf("a leg left sync during verify: %w", ErrNoLeg)
			}
			return nil
		})
		if err != nil {
			v.m.unlockChunk(c)
			v.notify()
			v.mu.Unlock()
			return err
		}
	}
	legs, ep := v.legs, v.m.epochs()
	v.mu.Unlock()
	unlock := func() {
		v.mu.Lock()
		v.m.unlockChunk(c)
		v.notify()
		v.mu.Unlock()
	}
	errs, _ := v.both([2]bool{true, true}, legs, "verify read", 0, func(l Leg) error {
		i := 0
		if l == legs[1] {
			i = 1
		}
		return l.ReadAt(bufs[i][:n], off)
	})
	if errs[0] != nil || errs[1] != nil {
		unlock()
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.settle([2]bool{true, true}, errs, "verify read")
	}
	same := bytes.Equal(bufs[0][:n], bufs[1][:n])
	var err error
	if !same && repair {
		v.mu.Lock()
		if v.m.epochs() != ep || !v.m.bothInSync() {
			v.mu.Unlock()
			unlock()
			return fmt.Errorf("a leg left sync during verify: %w", ErrNoLeg)
		}
		err = v.waitSeq(v.m.markRepair(c, v.clock.Now()))
		if err == nil && v.m.epochs() != ep {
			err = fmt.Errorf("a leg left sync during verify: %w", errStaleCopy)
		}
		v.outstanding[1].Add(1) // a call into slot 1 from now (see copyChunk)
		v.mu.Unlock()
		if err == nil {
			err = v.copyWrite(1, legs[1], bufs[0][:n], off, "repair write")
		}
		v.outstanding[1].Add(-1)
		if errors.Is(err, errStaleCopy) {
			unlock()
			return err
		}
	}
	unlock()
	v.mu.Lock()
	defer v.mu.Unlock()
	vs := &v.verify
	vs.done += n
	if !same {
		vs.mismatches++
		if len(vs.offsets) < maxReportedOffsets {
			vs.offsets = append(vs.offsets, off)
		}
		if repair && err == nil {
			vs.repaired++
		}
	}
	if err != nil {
		_ = v.settle([2]bool{false, true}, [2]error{nil, err}, "repair write")
	}
	return err
}
