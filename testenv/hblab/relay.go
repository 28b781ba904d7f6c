package hblab

import (
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// relay is the serial cable: it copies bytes between two pty masters and
// drops them while cut or while the receiving node is stopped (a real
// UART's receive buffer is flushed by the next open; a pty's is not).
type relay struct {
	cut     atomic.Bool
	running [2]atomic.Bool
	wg      sync.WaitGroup
	a, b    *os.File
}

func (r *relay) start(a, b *os.File) {
	r.a, r.b = a, b
	r.wg.Add(2)
	go r.copy(a, b, 1)
	go r.copy(b, a, 0)
}

func (r *relay) setRunning(first bool, on bool) {
	if first {
		r.running[0].Store(on)
	} else {
		r.running[1].Store(on)
	}
}

func (r *relay) copy(from, to *os.File, dst int) {
	defer r.wg.Done()
	buf := make([]byte, 4096)
	for {
		n, err := from.Read(buf)
		if err != nil {
			return
		}
		if r.cut.Load() || !r.running[dst].Load() {
			continue
		}
		if _, err := to.Write(buf[:n]); err != nil {
			return
		}
	}
}

// stop closes the masters and waits for the copies to end, at most 2 s:
// a copy blocked writing into a pty whose reader stopped reading (its
// input queue full) is not woken by any close (pty masters are in
// blocking mode), and is left behind rather than hang the lab's Close.
func (r *relay) stop() {
	r.a.Close()
	r.b.Close()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
}
