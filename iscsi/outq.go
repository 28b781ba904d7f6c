package iscsi

import (
	"net"
	"sync"
)

// outq coalesces the PDUs of concurrent senders into few writev calls
// (group commit): senders enqueue under the session lock, so PDUs go out in
// CmdSN order, then wait until their PDUs are on the socket. Whichever
// waiter finds no write in progress writes everything queued so far.
type outq struct {
	mu       sync.Mutex
	cond     *sync.Cond
	pending  net.Buffers
	enq      uint64 // tickets handed out
	done     uint64 // tickets written
	flushing bool
	err      error
}

func newOutq() *outq {
	q := &outq{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// enqueue queues bufs and returns the ticket to wait for.
func (q *outq) enqueue(bufs net.Buffers) uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pending = append(q.pending, bufs...)
	q.enq++
	return q.enq
}

// wait returns once ticket's PDUs were written to w, or the write error.
func (q *outq) wait(ticket uint64, w net.Conn) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.done < ticket && q.err == nil {
		if q.flushing {
			q.cond.Wait()
			continue
		}
		q.flushing = true
		batch, upto := q.pending, q.enq
		q.pending = nil
		q.mu.Unlock()
		_, err := batch.WriteTo(w)
		q.mu.Lock()
		q.flushing = false
		if err != nil && q.err == nil {
			q.err = err
		}
		q.done = upto
		q.cond.Broadcast()
	}
	if q.done >= ticket && q.err == nil {
		return nil
	}
	return q.err
}
