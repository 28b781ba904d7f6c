package iscsi

import (
	"errors"
	"fmt"
	"time"
)

// ioOp is one StartReadAt/StartWriteAt in flight: it walks its buffer in
// commands of at most chunkBlocks blocks, one after another, applying the
// retry policy of runResult to each, all from the session's completion
// callback. Nothing in it blocks, so it runs on the session's reader.
type ioOp struct {
	d     *Disk
	write bool
	fua   bool
	p     []byte // what is not done yet; it starts at lba
	lba   uint64
	piece int // bytes of the command in flight
	done  func(error)

	ua        int           // UNIT ATTENTIONs and TASK ABORTEDs retried for this piece
	busyStart time.Time     // first BUSY for this piece
	backoff   time.Duration // next BUSY wait

	cdb [16]byte
	t   task
}

// newOp takes an op from the Disk's free list; t.ended is bound once per
// op, so starting a command allocates nothing.
func (d *Disk) newOp() *ioOp {
	op, _ := d.ops.Get().(*ioOp)
	if op == nil {
		op = &ioOp{d: d}
		op.t.ended = op.ended
	}
	return op
}

// StartReadAt starts a read of len(p) bytes at off; done is called exactly
// once, from any goroutine (often the session's receive goroutine), when
// the read ended; done must not block (it may start further I/O). The
// semantics are ReadAt's: timeouts, retries of UNIT ATTENTION and BUSY,
// typed errors, transfers cut at the target's limits. p must not be
// touched until done is called. A request that ends before it started
// (bad range, closed or disconnected disk, nothing to read) calls done on
// a new goroutine, never inside StartReadAt.
func (d *Disk) StartReadAt(p []byte, off int64, done func(error)) {
	if err := d.startRW(false, p, off, false, false, done); err != nil {
		go done(noIO(err))
	}
}

// noIO maps startRW's "nothing to do" to success.
func noIO(err error) error {
	if err == errEmptyIO {
		return nil
	}
	return err
}

// errEmptyIO is startRW's answer to a zero-length request.
var errEmptyIO = errors.New("iscsi: empty I/O")

// StartWriteAt is StartReadAt for a write (fua: FUA bit, the data is on
// stable media when done is called with nil). p must not be changed until
// done is called.
func (d *Disk) StartWriteAt(p []byte, off int64, fua bool, done func(error)) {
	if err := d.startRW(true, p, off, fua, false, done); err != nil {
		go done(noIO(err))
	}
}

// startRW starts the op; an error means done will not be called (for an
// empty transfer the error is errEmptyIO). wakes says that done wakes a
// goroutine blocked in ReadAt/WriteAt.
func (d *Disk) startRW(write bool, p []byte, off int64, fua bool, wakes bool, done func(error)) error {
	opName := "read"
	if write {
		opName = "write"
	}
	lba, blocks, err := d.check(opName, off, int64(len(p)))
	if err != nil {
		return err
	}
	if blocks == 0 {
		return errEmptyIO
	}
	op := d.newOp()
	op.write, op.fua, op.p, op.lba, op.done = write, fua, p, lba, done
	op.t.wakes = wakes
	op.resetRetries()
	if err := op.submit(); err != nil {
		op.release()
		return err
	}
	return nil
}

func (op *ioOp) resetRetries() {
	op.ua, op.busyStart, op.backoff = 0, time.Time{}, busyBackoffStart
}

// submit starts the command for the next piece on the current session.
func (op *ioOp) submit() error {
	d := op.d
	s, err := d.session()
	if err != nil {
		return err
	}
	bs := int(d.blockSize)
	op.piece = min(len(op.p), int(d.chunkBlocks())*bs)
	n := uint32(op.piece / bs)
	op.t.reset()
	op.t.cmd = command{LUN: d.url.LUN, CDB: op.cdb[:]}
	if op.write {
		putRW16(op.cdb[:], scsiWrite16, op.lba, n, op.fua)
		op.t.cmd.Op, op.t.cmd.Write = "WRITE(16)", op.p[:op.piece]
	} else {
		putRW16(op.cdb[:], scsiRead16, op.lba, n, false)
		op.t.cmd.Op, op.t.cmd.Read = "READ(16)", op.p[:op.piece]
	}
	if err := s.start(&op.t); err != nil {
		return fmt.Errorf("%s: %w", d.name, err)
	}
	return nil
}

// ended is the session's callback for the op's command.
func (op *ioOp) ended(t *task) {
	d := op.d
	if t.err != nil {
		op.finish(fmt.Errorf("%s: %w", d.name, t.err))
		return
	}
	res := t.res
	err := res.check(t.cmd.Op)
	switch {
	case err == nil:
	case d.absorb(err, &op.ua):
		if err := op.submit(); err != nil {
			op.finish(err)
		}
		return
	case errors.Is(err, ErrBusy):
		if op.busyStart.IsZero() {
			op.busyStart = time.Now()
		}
		if time.Since(op.busyStart) < d.cfg.Timeout {
			d.stats.busyRetries.Add(1)
			wait := op.backoff
			op.backoff = min(2*op.backoff, busyBackoffMax)
			d.retryLater(op, wait)
			return
		}
		op.finish(fmt.Errorf("%s: %w", d.name, err))
		return
	default:
		op.finish(fmt.Errorf("%s: %w", d.name, err))
		return
	}
	if op.write {
		if res.Underflow && res.Residual > 0 || res.Overflow {
			op.finish(fmt.Errorf("iscsi: %s: WRITE(16) of %d bytes at LBA %d left residual %d: %w",
				d.name, op.piece, op.lba, res.Residual, ErrProtocol))
			return
		}
	} else if res.Received != op.piece || res.Underflow && res.Residual > 0 {
		op.finish(fmt.Errorf("iscsi: %s: READ(16) of %d bytes at LBA %d returned %d bytes (residual %d): %w",
			d.name, op.piece, op.lba, res.Received, res.Residual, ErrProtocol))
		return
	}
	op.p = op.p[op.piece:]
	op.lba += uint64(op.piece) / uint64(d.blockSize)
	if len(op.p) == 0 {
		op.finish(nil)
		return
	}
	op.resetRetries()
	if err := op.submit(); err != nil {
		op.finish(err)
	}
}

// retryLater submits op again after wait (or at once when the Disk is
// closed, which then fails it), without blocking the reader.
func (d *Disk) retryLater(op *ioOp, wait time.Duration) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		op.finish(fmt.Errorf("%s: %w", d.name, ErrClosed))
		return
	}
	d.wg.Add(1) // Close waits for the retry (closed is set under d.mu first)
	d.mu.Unlock()
	go func() {
		defer d.wg.Done()
		tm := time.NewTimer(wait)
		select {
		case <-tm.C:
		case <-d.quit:
			tm.Stop()
		}
		if err := op.submit(); err != nil {
			op.finish(err)
		}
	}()
}

// finish returns the op to the free list and reports err.
func (op *ioOp) finish(err error) {
	done := op.done
	op.release()
	done(err)
}

func (op *ioOp) release() {
	d := op.d
	op.p, op.done = nil, nil
	op.t.cmd = command{}
	op.t.reset()
	d.ops.Put(op)
}

// syncWaiter turns a completion callback back into a blocking call.
type syncWaiter struct {
	ch chan error
	fn func(error)
}

func (d *Disk) newWaiter() *syncWaiter {
	w, _ := d.waiters.Get().(*syncWaiter)
	if w == nil {
		w = &syncWaiter{ch: make(chan error, 1)}
		w.fn = func(err error) { w.ch <- err }
	}
	return w
}

// rwSync runs startRW and waits for its end.
func (d *Disk) rwSync(write bool, p []byte, off int64, fua bool) error {
	w := d.newWaiter()
	if err := d.startRW(write, p, off, fua, true, w.fn); err != nil {
		d.waiters.Put(w)
		return noIO(err)
	}
	err := <-w.ch
	d.waiters.Put(w)
	return err
}
