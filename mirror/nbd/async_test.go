package nbd

import (
	"bytes"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"
)

// asyncMem is memBackend as an AsyncBackend: each I/O completes inline or
// from another goroutine after a short delay (like the mirror engine on
// fast and slow legs), and a write at stuckAt blocks its caller until
// release while done reports it stuck (like an engine rescuing a write
// whose inline leg call hung).
type asyncMem struct {
	*memBackend
	stuckAt  int64
	release  chan struct{}
	returned atomic.Bool // the stuck call came back
	n        atomic.Int64
}

func (m *asyncMem) complete(f func()) {
	if m.n.Add(1)%3 == 0 {
		go func() {
			time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
			f()
		}()
		return
	}
	f()
}

func (m *asyncMem) StartReadAt(p []byte, off int64, done func([]byte, error, bool, bool)) {
	m.complete(func() { done(p, m.ReadAt(p, off), false, false) })
}

func (m *asyncMem) StartWriteAt(p []byte, off int64, fua bool, done func(error, bool, bool)) {
	if off == m.stuckAt {
		err := m.WriteAt(p, off, fua)
		go func() {
			time.Sleep(20 * time.Millisecond)
			done(err, true, true)
		}()
		<-m.release // the caller stays blocked, as in a hung system call
		m.returned.Store(true)
		return
	}
	m.complete(func() { done(m.WriteAt(p, off, fua), false, false) })
}

// One request at a time, completed inline or later from another
// goroutine: every reply is sent (none is left in the buffer while the
// client waits for it), and the data is right.
func TestAsyncBackendAnswersEveryRequest(t *testing.T) {
	m := &asyncMem{memBackend: newMem(1<<20, 512), stuckAt: -1}
	_, sock := startServer(t, m, Options{})
	cl := dial(t, sock, true)
	cl.c.SetDeadline(time.Now().Add(60 * time.Second))
	r := rand.New(rand.NewPCG(1, 2))
	model := make([]byte, 1<<20)
	for i := range 3000 {
		off := uint64(r.IntN(256)) * 4096
		if i%2 == 0 {
			p := make([]byte, 4096)
			for k := range p {
				p[k] = byte(r.Uint32())
			}
			copy(model[off:], p)
			if rp := cl.do(CmdWrite, 0, off, 4096, p); rp.errno != 0 {
				t.Fatalf("write %d: errno %d", i, rp.errno)
			}
		} else if rp := cl.do(CmdRead, 0, off, 4096, nil); rp.errno != 0 || !bytes.Equal(rp.data, model[off:off+4096]) {
			t.Fatalf("read %d: errno %d or wrong data", i, rp.errno)
		}
	}
	cl.send(CmdDisc, 0, 1, 0, 0, nil)
}

// A request whose backend call leaves the reading goroutine blocked for
// good: its reply still comes, and another goroutine takes over reading,
// so the connection keeps serving; when the blocked call finally returns,
// that goroutine bows out without touching the connection.
func TestStuckReaderIsReplaced(t *testing.T) {
	m := &asyncMem{memBackend: newMem(1<<20, 512), stuckAt: 8192, release: make(chan struct{})}
	_, sock := startServer(t, m, Options{})
	cl := dial(t, sock, true)
	cl.c.SetDeadline(time.Now().Add(30 * time.Second))
	stuck := bytes.Repeat([]byte{0xEE}, 4096)
	cl.send(CmdWrite, 0, 100, 8192, 4096, stuck)
	if rp, err := cl.recv(nil); err != nil || rp.handle != 100 || rp.errno != 0 {
		t.Fatalf("reply to the stuck write: %+v %v", rp, err)
	}
	check := func(round int) {
		t.Helper()
		for i := range 50 {
			off := uint64(i%16) * 4096
			if off == 8192 {
				continue
			}
			p := bytes.Repeat([]byte{byte(round*50 + i)}, 4096)
			if rp := cl.do(CmdWrite, CmdFlagFUA, off, 4096, p); rp.errno != 0 {
				t.Fatalf("round %d: write after the takeover: errno %d", round, rp.errno)
			}
			if rp := cl.do(CmdRead, 0, off, 4096, nil); rp.errno != 0 || !bytes.Equal(rp.data, p) {
				t.Fatalf("round %d: read after the takeover: errno %d", round, rp.errno)
			}
		}
	}
	check(0)
	if m.returned.Load() {
		t.Fatal("the stuck call returned early: the test proves nothing")
	}
	close(m.release)
	for !m.returned.Load() {
		time.Sleep(time.Millisecond)
	}
	check(1) // the old reader, now back, did not take a request or a byte
	if rp := cl.do(CmdRead, 0, 8192, 4096, nil); !bytes.Equal(rp.data, stuck) {
		t.Fatal("the stuck write's data is missing")
	}
	cl.send(CmdDisc, 0, 1, 0, 0, nil)
}
