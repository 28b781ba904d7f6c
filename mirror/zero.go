package mirror

import (
	"context"
	"time"
)

// Zeroing large ranges.
//
// An NBD TRIM or WRITE_ZEROES may cover up to 4 GiB. Sent to a leg as one
// call, it runs under one I/O timeout, and a leg that zeroes by writing
// (an iSCSI LUN without WRITE SAME or UNMAP, a file system without
// fallocate) cannot zero that much in a few seconds: a healthy leg would
// be failed. So Zero cuts the range into pieces, each its own admitted
// write (overlap ordering, bitmap bits made durable first, settle: the
// same rules as any write), sized so that each fits well within the I/O
// timeout at the speed zeroing was last measured on this volume.
//
// A leg that can be told to stop (ContextZeroer: an iSCSI LUN) is given a
// context that ends a little before the engine gives up on the call, so
// it issues no command after that: a late command could overwrite data
// written after the zero failed.

// ContextZeroer is a Leg whose Zero can be told to stop issuing I/O.
type ContextZeroer interface {
	ZeroContext(ctx context.Context, off, length int64, unmap bool) error
}

// Piece sizing: a piece should take zeroShare of the I/O timeout at the
// measured rate; the first, before any measurement, is zeroFirstPiece
// (at 20 MB/s, the slowest array worth mirroring, well within a second).
const (
	zeroShare      = 4 // a piece targets IOTimeout / zeroShare
	zeroFirstPiece = 8 << 20
	zeroMaxPiece   = 1 << 30
)

// Zero makes [off, off+length) read as zeros on both legs (NBD TRIM and
// WRITE_ZEROES); unmap lets legs deallocate. A large range is zeroed in
// pieces that each fit the I/O timeout; on error the pieces before the
// failing one are zeroed.
func (v *Volume) Zero(off, length int64, unmap bool) error {
	if err := v.checkRange(off, length); err != nil || length == 0 {
		return err
	}
	for length > 0 {
		po, pn := off, v.zeroPiece(off, length, unmap) // the leg calls keep these
		t0 := v.clock.Now()
		err, _ := v.write(po, pn, "zero", func(l Leg) error { return v.zeroLeg(l, po, pn, unmap) })
		if err != nil {
			return err
		}
		v.observeZero(pn, v.clock.Now().Sub(t0), unmap)
		off, length = off+pn, length-pn
	}
	return nil
}

// zeroPiece is the length of the next piece of a zero of length bytes at
// off: what the rate measured for this kind of zero (legs deallocate or
// write zeros: speeds differ a thousandfold) zeroes in IOTimeout /
// zeroShare, ending on a chunk boundary when the range goes on (at least
// the rest of off's chunk).
func (v *Volume) zeroPiece(off, length int64, unmap bool) int64 {
	n := int64(zeroFirstPiece)
	if r := v.zeroRate[b2i(unmap)].Load(); r > 0 {
		n = int64(float64(r) * (v.opts.IOTimeout / zeroShare).Seconds())
	}
	n = min(max(n, int64(v.blockSize)), zeroMaxPiece)
	if n >= length {
		return length
	}
	end := (off + n) / v.chunk * v.chunk
	if end <= off {
		end = min((off/v.chunk+1)*v.chunk, off+length)
	}
	return end - off
}

// observeZero folds one piece's duration into the measured rate: a slower
// piece counts at once (the next one must still fit), a faster one a
// quarter (the rate grows over a few pieces).
func (v *Volume) observeZero(n int64, d time.Duration, unmap bool) {
	rate := &v.zeroRate[b2i(unmap)]
	r := int64(zeroMaxPiece) * zeroShare // no measurable time: as fast as it gets
	if d > 0 {
		r = int64(float64(n) / d.Seconds())
	}
	old := rate.Load()
	if old > 0 && r > old {
		r = old + (r-old)/4
	}
	rate.Store(max(r, 1))
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// zeroLeg zeroes a piece on one leg; a ContextZeroer stops issuing I/O a
// little before the engine's I/O timeout ends the call.
func (v *Volume) zeroLeg(l Leg, off, n int64, unmap bool) error {
	cz, ok := l.(ContextZeroer)
	if !ok {
		return l.Zero(off, n, unmap)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t := v.clock.NewTimer(v.opts.IOTimeout - v.opts.IOTimeout/20)
	go func() {
		select {
		case <-t.C():
			cancel()
		case <-ctx.Done():
			t.Stop()
		}
	}()
	return cz.ZeroContext(ctx, off, n, unmap)
}
