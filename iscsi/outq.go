package iscsi

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
)

// outq is the session's output queue. Senders append a PDU's buffers
// under the session lock, so PDUs leave in sequence-number order. Writing
// is combined: a command sender that finds no write in progress writes
// everything queued (its own PDUs and whatever others queue meanwhile) with
// writev; senders that find a write in progress just leave their PDUs to
// it. The reader never blocks in a write (a target blocked writing to us
// would deadlock against it): before it waits for the target it writes
// what it queued without blocking (see flushNonBlocking), and what the
// socket does not take then is written by a helper goroutine.
type outq struct {
	mu       sync.Mutex
	idle     *sync.Cond
	pending  net.Buffers
	spare    net.Buffers // an emptied batch, reused as the next pending
	flushing bool
	held     atomic.Bool // the reader is handling a batch: senders leave their PDUs to its release
	err      error
	kick     chan struct{} // capacity 1: wake the helper writer
}

func newOutq() *outq {
	q := &outq{kick: make(chan struct{}, 1)}
	q.idle = sync.NewCond(&q.mu)
	return q
}

// push queues bufs. With canWrite, it returns true when the caller must
// now call drain (no write was in progress); otherwise the helper is woken
// if nobody is writing.
func (q *outq) push(bufs net.Buffers, canWrite bool) bool {
	q.mu.Lock()
	q.pending = append(q.pending, bufs...)
	if q.flushing || q.err != nil {
		q.mu.Unlock()
		return false
	}
	if q.held.Load() {
		q.mu.Unlock()
		return false
	}
	if canWrite {
		q.flushing = true
		q.mu.Unlock()
		return true
	}
	q.mu.Unlock()
	q.wake()
	return false
}

func (q *outq) wake() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// hold is called by the reader for every PDU it handles: until release,
// senders (typically the callers it completes, issuing their next command)
// only queue, so their PDUs leave together in one write. Only the reader
// holds and releases, so a flag suffices: a push that saw the hold is
// followed by the release, which sees its PDUs under q.mu.
func (q *outq) hold() {
	if !q.held.Load() {
		q.held.Store(true)
	}
}

// holding reports whether a hold is in effect.
func (q *outq) holding() bool { return q.held.Load() }

// release ends a hold and has the helper write what was queued meanwhile.
func (q *outq) release() {
	q.held.Store(false)
	q.mu.Lock()
	kick := len(q.pending) > 0 && !q.flushing && q.err == nil
	q.mu.Unlock()
	if kick {
		q.wake()
	}
}

// releaseWriting ends a hold like release, but first writes what is queued
// itself as far as the socket takes it without blocking; only a remainder
// (the socket buffer is full) goes to the helper. In the steady state of a
// deep queue this is what makes the session an event loop: the reader
// sends the commands its completions started, and no other goroutine is
// woken. A write error is returned (the session is dead).
func (q *outq) releaseWriting(w *nbWriter) error {
	q.held.Store(false)
	q.mu.Lock()
	for len(q.pending) > 0 && !q.flushing && q.err == nil {
		q.flushing = true
		batch := q.pending
		q.pending, q.spare = q.spare[:0], nil
		q.mu.Unlock()
		rest, err := w.writeNonBlocking(batch)
		q.mu.Lock()
		q.flushing = false
		if err != nil {
			if q.err == nil {
				q.err = err
			}
			q.pending = nil
			q.idle.Broadcast()
			q.mu.Unlock()
			return err
		}
		if len(rest) > 0 {
			// The socket is full: the helper blocks in the write.
			q.pending = append(append(net.Buffers(nil), rest...), q.pending...)
			clear(batch)
			q.idle.Broadcast()
			q.mu.Unlock()
			q.wake()
			return nil
		}
		clear(batch)
		q.spare = batch[:0]
		q.idle.Broadcast()
	}
	q.mu.Unlock()
	return nil
}

// drain writes until the queue is empty; the caller owns the write (it got
// true from push or claim).
func (q *outq) drain(w net.Conn) error {
	q.mu.Lock()
	for len(q.pending) > 0 && q.err == nil {
		batch := q.pending
		q.pending, q.spare = q.spare[:0], nil
		q.mu.Unlock()
		all := batch // WriteTo consumes batch
		_, err := batch.WriteTo(w)
		clear(all) // drop the references to callers' buffers
		q.mu.Lock()
		q.spare = all[:0]
		if err != nil && q.err == nil {
			q.err = err
		}
	}
	if q.err != nil {
		q.pending = nil
	}
	q.flushing = false
	err := q.err
	q.idle.Broadcast()
	q.mu.Unlock()
	return err
}

// handOff gives a write the caller was told to do (push returned true)
// to the helper: for the reader, which must never block in a write.
func (q *outq) handOff() {
	q.mu.Lock()
	q.flushing = false
	q.idle.Broadcast()
	q.mu.Unlock()
	q.wake()
}

// claim makes the caller the writer if nobody is writing and something is
// queued.
func (q *outq) claim() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.flushing || q.err != nil || len(q.pending) == 0 {
		return false
	}
	q.flushing = true
	return true
}

// shutdown fails further writes and waits until no write is in progress,
// so no caller's buffer is read after the caller was told its command ended.
func (q *outq) shutdown(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err == nil {
		q.err = err
	}
	q.pending = nil
	for q.flushing {
		q.idle.Wait()
	}
}

// write drains the queue as its writer; a write error kills the session.
func (s *session) write() {
	if err := s.out.drain(s.nc); err != nil {
		s.kill(fmt.Errorf("%w: sending to target: %w", ErrDisconnected, err))
	}
}

// writeLoop writes the PDUs the reader queues when no sender is writing.
func (s *session) writeLoop() {
	defer close(s.writerDone)
	for {
		select {
		case <-s.out.kick:
		case <-s.stop:
			return
		}
		if s.out.claim() {
			s.write()
		}
	}
}
