package iscsi

import (
	"fmt"
	"net"
	"sync"
)

// outq is the session's output queue. Senders append a PDU's buffers
// under the session lock (so PDUs leave in sequence-number order) and never
// block on the socket; one writer goroutine writes everything queued so far
// with a single writev, so PDUs from concurrent commands share syscalls.
type outq struct {
	mu      sync.Mutex
	pending net.Buffers
	kick    chan struct{} // capacity 1: "something is pending"
}

func newOutq() *outq { return &outq{kick: make(chan struct{}, 1)} }

// enqueue queues bufs and wakes the writer.
func (q *outq) enqueue(bufs net.Buffers) {
	q.mu.Lock()
	q.pending = append(q.pending, bufs...)
	q.mu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// take returns and clears everything queued.
func (q *outq) take() net.Buffers {
	q.mu.Lock()
	defer q.mu.Unlock()
	b := q.pending
	q.pending = nil
	return b
}

// writeLoop is the session's only writer. It exits when the session stops;
// the reader waits for it before failing tasks, so no caller's buffer is
// read after the caller was told its command ended.
func (s *session) writeLoop() {
	defer close(s.writerDone)
	for {
		select {
		case <-s.out.kick:
		case <-s.stop:
			return
		}
		for {
			batch := s.out.take()
			if len(batch) == 0 {
				break
			}
			if _, err := batch.WriteTo(s.nc); err != nil {
				s.kill(fmt.Errorf("%w: sending to target: %w", ErrDisconnected, err))
				return
			}
		}
	}
}
