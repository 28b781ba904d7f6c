package nbd

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// lateStuck is memBackend as an AsyncBackend whose write at stuckAt
// returns to its caller at once but is reported stuck only later, while
// the reader is inside its next backend call (the read at readAt): the
// engine's race where a hung inline call comes back just after the
// watchdog handed the write to its rescue.
type lateStuck struct {
	*memBackend
	stuckAt, readAt int64
	stuckDone       func(error, bool, bool)
}

func (m *lateStuck) StartReadAt(p []byte, off int64, done func([]byte, error, bool, bool)) {
	if off == m.readAt && m.stuckDone != nil {
		reported := make(chan struct{})
		go func() {
			m.stuckDone(nil, true, true)
			close(reported)
		}()
		<-reported
		m.stuckDone = nil
	}
	done(p, m.ReadAt(p, off), false, false)
}

func (m *lateStuck) StartWriteAt(p []byte, off int64, fua bool, done func(error, bool, bool)) {
	err := m.WriteAt(p, off, fua)
	if off == m.stuckAt {
		m.stuckAt = -1 // once
		m.stuckDone = func(_ error, held, stuck bool) { done(err, held, stuck) }
		return
	}
	done(err, false, false)
}

// A stuck report that comes while the reader is no longer stuck but inside
// another request: every request is answered once, one reader carries on
// (the race detector sees two reading the socket at once), and a drained
// shutdown ends.
func TestLateStuckReportHandsReadingOver(t *testing.T) {
	m := &lateStuck{memBackend: newMem(1<<20, 512), stuckAt: 8192, readAt: 16384}
	_, sock := startServer(t, m, Options{})
	cl := dial(t, sock, true)
	cl.c.SetDeadline(time.Now().Add(30 * time.Second))
	w := bytes.Repeat([]byte{0xAB}, 4096)
	cl.send(CmdWrite, 0, 100, 8192, 4096, w)
	cl.send(CmdRead, 0, 101, 16384, 4096, nil)
	seen := map[uint64]int{}
	for range 2 {
		rp, err := cl.recv(map[uint64]int{101: 4096})
		if err != nil || rp.errno != 0 {
			t.Fatalf("reply: %+v %v", rp, err)
		}
		seen[rp.handle]++
	}
	if seen[100] != 1 || seen[101] != 1 {
		t.Fatalf("replies by handle %v, want one each to 100 and 101", seen)
	}
	if rp := cl.do(CmdRead, 0, 8192, 4096, nil); !bytes.Equal(rp.data, w) {
		t.Fatal("the write reported late is missing")
	}
	for i := range 100 {
		off := uint64(i%8) * 4096
		p := bytes.Repeat([]byte{byte(i)}, 4096)
		if rp := cl.do(CmdWrite, 0, off, 4096, p); rp.errno != 0 {
			t.Fatalf("write %d after the hand-over: errno %d", i, rp.errno)
		}
		if rp := cl.do(CmdRead, 0, off, 4096, nil); rp.errno != 0 || !bytes.Equal(rp.data, p) {
			t.Fatalf("read %d after the hand-over: errno %d", i, rp.errno)
		}
	}
	cl.send(CmdDisc, 0, 1, 0, 0, nil)
}

// A drained shutdown while the reader is stuck in the backend: the stuck
// request is still answered, and Shutdown returns once it is (it does not
// wait for the blocked goroutine).
func TestShutdownWithStuckReader(t *testing.T) {
	m := &asyncMem{memBackend: newMem(1<<20, 512), stuckAt: 8192, release: make(chan struct{})}
	defer close(m.release)
	srv, sock := startServer(t, m, Options{})
	cl := dial(t, sock, true)
	cl.c.SetDeadline(time.Now().Add(30 * time.Second))
	if rp := cl.do(CmdWrite, 0, 0, 4096, make([]byte, 4096)); rp.errno != 0 {
		t.Fatalf("first write: errno %d", rp.errno)
	}
	cl.send(CmdWrite, 0, 100, 8192, 4096, make([]byte, 4096))
	time.Sleep(time.Millisecond) // the reader is in the stuck call
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- srv.Shutdown(ctx) }()
	if rp, err := cl.recv(nil); err != nil || rp.handle != 100 || rp.errno != 0 {
		t.Fatalf("reply to the stuck write during shutdown: %+v %v", rp, err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("shutdown with a stuck reader: %v", err)
	}
	if m.returned.Load() {
		t.Fatal("the stuck call returned: the test proves nothing")
	}
}
