package iscsi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// transports runs a test over net.Pipe and over loopback TCP (where the
// session reads and writes its socket raw).
func transports(t *testing.T, test func(t *testing.T, tcp bool)) {
	for _, tcp := range []bool{false, true} {
		name := "pipe"
		if tcp {
			name = "tcp"
		}
		t.Run(name, func(t *testing.T) { test(t, tcp) })
	}
}

func overTCP(tcp bool) func(f *fakeTarget) { return func(f *fakeTarget) { f.tcp = tcp } }

// memDisk is a fake target's 1 MiB LUN in memory (READ(16) and WRITE(16)
// with immediate data only: writes up to the default 8 KiB segment).
type memDisk struct {
	mu   sync.Mutex
	data [1 << 20]byte
	cmds atomic.Int64
}

func (m *memDisk) handle(f *fakeTarget, p *PDU) []*PDU {
	if p.Opcode() != opSCSICommand {
		return onCmd(nil)(f, p)
	}
	cdb := p.BHS[32:48]
	off := binary.BigEndian.Uint64(cdb[2:]) * 512
	n := uint64(binary.BigEndian.Uint32(cdb[10:])) * 512
	m.cmds.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	switch cdb[0] {
	case scsiRead16:
		return []*PDU{f.dataIn(p, 0, bytes.Clone(m.data[off:off+n]), 0, true)}
	case scsiWrite16:
		if uint64(len(p.Data)) != n {
			f.t.Errorf("WRITE(16) of %d bytes carried %d bytes of immediate data", n, len(p.Data))
		}
		copy(m.data[off:], p.Data)
		return []*PDU{f.response(p, statusGood, nil)}
	}
	return []*PDU{f.response(p, statusGood, nil)}
}

// pattern fills a block-sized buffer that names its offset and a round.
func pattern(off int64, round, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 16 {
		copy(b[i:], fmt.Sprintf("%08x.%06x:", off+int64(i), round%0xffffff))
	}
	return b
}

// Completions arrive as the target answers, not as the commands were
// started: each done is called once, with its own data.
func TestAsyncCompletesInTargetOrder(t *testing.T) {
	transports(t, func(t *testing.T, tcp bool) {
		const n = 8
		var mu sync.Mutex
		var held []*PDU
		d, _ := startFakeWith(t, Config{}, nil, overTCP(tcp), onCmd(func(f *fakeTarget, p *PDU) []*PDU {
			if !isCmd(p, scsiRead16) {
				return []*PDU{f.response(p, statusGood, nil)}
			}
			mu.Lock()
			defer mu.Unlock()
			held = append(held, p)
			if len(held) < n {
				return nil
			}
			var out []*PDU
			for i := len(held) - 1; i >= 0; i-- { // answer the last first
				q := held[i]
				off := int64(binary.BigEndian.Uint64(q.BHS[34:]) * 512)
				out = append(out, f.dataIn(q, 0, pattern(off, 0, 512), 0, true))
			}
			return out
		}))
		bufs := make([][]byte, n)
		order := make(chan int, 2*n)
		for i := range n {
			bufs[i] = make([]byte, 512)
			d.StartReadAt(bufs[i], int64(i)*512, func(err error) {
				if err != nil {
					t.Errorf("read %d: %v", i, err)
				}
				order <- i
			})
		}
		for k := range n {
			select {
			case i := <-order:
				if want := n - 1 - k; i != want {
					t.Errorf("completion %d was read %d, want %d (the target's order)", k, i, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("only %d of %d reads completed", k, n)
			}
		}
		for i, b := range bufs {
			if want := pattern(int64(i)*512, 0, 512); !bytes.Equal(b, want) {
				t.Errorf("read %d got %q, want %q", i, b[:16], want[:16])
			}
		}
		select {
		case i := <-order:
			t.Fatalf("read %d completed twice", i)
		case <-time.After(50 * time.Millisecond):
		}
	})
}

// A transfer above the LUN's Maximum Transfer Length is cut into commands
// the target accepts, sent one after another; done is called once, at the
// end, and the data lands in place.
func TestAsyncSplitsAtTargetLimit(t *testing.T) {
	transports(t, func(t *testing.T, tcp bool) {
		b0 := make([]byte, 64)
		b0[1], b0[3] = 0xb0, 0x3c
		binary.BigEndian.PutUint32(b0[8:], 8) // 8 blocks of 512 bytes
		pages := map[byte][]byte{0x00: {0, 0, 0, 3, 0x00, 0x80, 0xb0}, 0xb0: b0}
		var m memDisk
		var maxBlocks atomic.Uint32
		d, _ := startFakeWith(t, Config{}, nil, func(f *fakeTarget) { f.tcp = tcp; f.vpd = pages },
			func(f *fakeTarget, p *PDU) []*PDU {
				if isCmd(p, scsiRead16) || isCmd(p, scsiWrite16) {
					nb := binary.BigEndian.Uint32(p.BHS[32+10:])
					for old := maxBlocks.Load(); nb > old && !maxBlocks.CompareAndSwap(old, nb); old = maxBlocks.Load() {
					}
				}
				return m.handle(f, p)
			})
		if d.Limits().MaxTransferBlocks != 8 {
			t.Fatalf("limits %+v, want MaxTransferBlocks 8", d.Limits())
		}
		want := pattern(4096, 1, 20<<10) // 5 commands
		if err := wait(func(done func(error)) { d.StartWriteAt(want, 4096, true, done) }); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(want))
		if err := wait(func(done func(error)) { d.StartReadAt(got, 4096, done) }); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("read back differs from what was written")
		}
		m.mu.Lock()
		held := bytes.Equal(m.data[4096:4096+len(want)], want)
		m.mu.Unlock()
		if !held {
			t.Fatal("the target holds different data")
		}
		if mb := maxBlocks.Load(); mb != 8 {
			t.Fatalf("largest command %d blocks, want 8 (the limit)", mb)
		}
	})
}

// wait runs an asynchronous call and waits for its one completion.
func wait(start func(done func(error))) error {
	ch := make(chan error, 2)
	start(func(err error) { ch <- err })
	err := <-ch
	select {
	case <-ch:
		return errors.New("done called twice")
	case <-time.After(20 * time.Millisecond):
	}
	return err
}

// SCSI conditions reach done as typed errors, and the retry policy of the
// blocking calls applies: UNIT ATTENTION and BUSY are absorbed.
func TestAsyncErrorsAndRetries(t *testing.T) {
	var mu sync.Mutex
	script := map[uint64][]byte{} // LBA -> statuses to answer first
	d, _ := startFake(t, Config{}, nil, onCmd(func(f *fakeTarget, p *PDU) []*PDU {
		if !isCmd(p, scsiRead16) {
			return []*PDU{f.response(p, statusGood, nil)}
		}
		lba := binary.BigEndian.Uint64(p.BHS[34:])
		mu.Lock()
		defer mu.Unlock()
		if s := script[lba]; len(s) > 0 {
			script[lba] = s[1:]
			switch s[0] {
			case statusBusy:
				return []*PDU{f.response(p, statusBusy, nil)}
			case SenseUnitAttention:
				return []*PDU{f.response(p, statusCheckCondition, fixedSense(SenseUnitAttention, 0x2a, 0x04))}
			case SenseMediumError:
				return []*PDU{f.response(p, statusCheckCondition, fixedSense(SenseMediumError, 0x11, 0))}
			}
		}
		return []*PDU{f.dataIn(p, 0, pattern(int64(lba)*512, 0, 512), 0, true)}
	}))
	mu.Lock()
	script[1] = []byte{SenseUnitAttention, statusBusy, statusBusy}
	script[2] = []byte{SenseMediumError}
	mu.Unlock()
	buf := make([]byte, 512)
	if err := wait(func(done func(error)) { d.StartReadAt(buf, 512, done) }); err != nil {
		t.Fatalf("read through UNIT ATTENTION and BUSY: %v", err)
	}
	if !bytes.Equal(buf, pattern(512, 0, 512)) {
		t.Fatal("wrong data after the retries")
	}
	if st := d.Stats(); st.UnitAttentions != 1 || st.BusyRetries != 2 {
		t.Fatalf("stats %+v, want 1 unit attention and 2 busy retries", st)
	}
	err := wait(func(done func(error)) { d.StartReadAt(buf, 1024, done) })
	var se *SenseError
	if !errors.Is(err, ErrMedium) || !errors.As(err, &se) || se.ASC != 0x11 {
		t.Fatalf("read of a bad block: %v, want a typed medium error 11/00", err)
	}
	if err := wait(func(done func(error)) { d.StartReadAt(buf[:100], 0, done) }); !errors.Is(err, ErrAlignment) {
		t.Fatalf("unaligned read: %v, want ErrAlignment", err)
	}
	if err := wait(func(done func(error)) { d.StartWriteAt(buf, 1<<20, false, done) }); err == nil {
		t.Fatal("a write beyond the end succeeded")
	}
	if err := wait(func(done func(error)) { d.StartReadAt(nil, 0, done) }); err != nil {
		t.Fatalf("empty read: %v", err)
	}
}

// A request that ends at once (refused, or empty) calls done on another
// goroutine, never inside Start*At (a caller may hold a lock done takes).
func TestAsyncImmediateEndIsNotReentrant(t *testing.T) {
	d, _ := startFake(t, Config{}, nil, onCmd(func(f *fakeTarget, p *PDU) []*PDU {
		return []*PDU{f.response(p, statusGood, nil)}
	}))
	cases := []struct {
		name  string
		start func(done func(error))
		want  error
	}{
		{"unaligned", func(done func(error)) { d.StartReadAt(make([]byte, 100), 0, done) }, ErrAlignment},
		{"empty read", func(done func(error)) { d.StartReadAt(nil, 0, done) }, nil},
		{"empty write", func(done func(error)) { d.StartWriteAt(nil, 512, true, done) }, nil},
	}
	for _, c := range cases {
		var mu sync.Mutex
		called := make(chan error, 1)
		mu.Lock()
		c.start(func(err error) {
			mu.Lock() // deadlocks if called inside Start*At
			mu.Unlock()
			called <- err
		})
		mu.Unlock()
		select {
		case err := <-called:
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("%s: done got %v, want %v", c.name, err, c.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: done was never called", c.name)
		}
	}
}

// Closing a Disk with I/O in flight (sent and unanswered, and waiting out
// a BUSY) calls every done exactly once, with an error, before Close
// returns; I/O started after Close fails with ErrClosed.
func TestAsyncCloseWithIOInFlight(t *testing.T) {
	transports(t, func(t *testing.T, tcp bool) {
		var reads atomic.Int32
		d, _ := startFakeWith(t, Config{}, nil, overTCP(tcp), onCmd(func(f *fakeTarget, p *PDU) []*PDU {
			switch {
			case isCmd(p, scsiRead16):
				reads.Add(1)
				return nil // never answered
			case isCmd(p, scsiWrite16):
				return []*PDU{f.response(p, statusBusy, nil)} // busy for ever
			}
			return []*PDU{f.response(p, statusGood, nil)}
		}))
		const n = 16
		var calls [n + 1]atomic.Int32
		errs := make([]error, n+1)
		for i := range n {
			d.StartReadAt(make([]byte, 512), int64(i)*512, func(err error) {
				errs[i] = err
				calls[i].Add(1)
			})
		}
		d.StartWriteAt(make([]byte, 512), 0, false, func(err error) {
			errs[n] = err
			calls[n].Add(1)
		})
		waitFor(t, func() bool { return reads.Load() == n && d.Stats().BusyRetries > 0 })
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		for i := range calls {
			if c := calls[i].Load(); c != 1 {
				t.Fatalf("request %d: done called %d times by the end of Close, want 1", i, c)
			}
			if errs[i] == nil || !errors.Is(errs[i], ErrClosed) && !errors.Is(errs[i], ErrDisconnected) {
				t.Fatalf("request %d ended with %v, want ErrClosed or ErrDisconnected", i, errs[i])
			}
		}
		if err := wait(func(done func(error)) { d.StartReadAt(make([]byte, 512), 0, done) }); !errors.Is(err, ErrClosed) {
			t.Fatalf("read after close: %v, want ErrClosed", err)
		}
	})
}

// Many callback chains (each completion starts the next request) and
// blocking callers share one session whose CmdSN window and queue depth
// are smaller than the load, so requests queue; every write is read back
// intact. Run with -race.
func TestAsyncConcurrentLoad(t *testing.T) {
	transports(t, func(t *testing.T, tcp bool) {
		var m memDisk
		d, f := startFakeWith(t, Config{QueueDepth: 6}, nil, overTCP(tcp), m.handle)
		f.mu.Lock()
		f.maxWin = 5
		f.mu.Unlock()
		const chains, steps, bs = 8, 60, 4096
		var wg sync.WaitGroup
		for c := range chains {
			wg.Add(1)
			r := rand.New(rand.NewPCG(uint64(c), 1))
			region := int64(c) * 64 << 10 // 64 KiB per chain
			buf := make([]byte, bs)
			var step int
			var off int64
			var want []byte
			var next func()
			var wrote, read func(error)
			next = func() {
				if step == steps {
					wg.Done()
					return
				}
				step++
				off = region + r.Int64N(64<<10/bs)*bs
				want = pattern(off, c*steps+step, bs)
				d.StartWriteAt(want, off, false, wrote)
			}
			wrote = func(err error) {
				if err != nil {
					t.Errorf("chain %d write: %v", c, err)
					wg.Done()
					return
				}
				d.StartReadAt(buf, off, read)
			}
			read = func(err error) {
				if err != nil {
					t.Errorf("chain %d read: %v", c, err)
					wg.Done()
					return
				}
				if !bytes.Equal(buf, want) {
					t.Errorf("chain %d step %d: read back %q, want %q", c, step, buf[:16], want[:16])
				}
				next()
			}
			next()
		}
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				off := int64(chains*64<<10) + int64(g)*bs
				got := make([]byte, bs)
				for i := range 40 {
					want := pattern(off, i, bs)
					if err := d.WriteAt(want, off, i%2 == 0); err != nil {
						t.Error(err)
						return
					}
					if err := d.ReadAt(got, off); err != nil {
						t.Error(err)
						return
					}
					if !bytes.Equal(got, want) {
						t.Errorf("blocking caller %d: read back differs", g)
					}
				}
			}()
		}
		wg.Wait()
		if c := m.cmds.Load(); c < chains*steps*2+4*80 {
			t.Fatalf("the target saw %d commands, want at least %d", c, chains*steps*2+4*80)
		}
	})
}
