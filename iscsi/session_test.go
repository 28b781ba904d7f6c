package iscsi

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func isCmd(p *PDU, op byte) bool { return p.Opcode() == opSCSICommand && p.BHS[32] == op }

// A UNIT ATTENTION (here 2A/04, reservations released) is absorbed: the
// command is retried and succeeds.
func TestUnitAttentionIsRetried(t *testing.T) {
	var uas atomic.Int32
	uas.Store(2)
	d, _ := startFake(t, Config{}, nil, func(f *fakeTarget, p *PDU) []*PDU {
		if isCmd(p, scsiSyncCache16) {
			if uas.Add(-1) >= 0 {
				return []*PDU{f.response(p, statusCheckCondition, fixedSense(SenseUnitAttention, 0x2a, 0x04))}
			}
			return []*PDU{f.response(p, statusGood, nil)}
		}
		return nil
	})
	if err := d.Flush(); err != nil {
		t.Fatalf("flush through two UNIT ATTENTIONs: %v", err)
	}
	if st := d.Stats(); st.UnitAttentions != 2 || st.LastUnitAttention != 0x2a04 {
		t.Fatalf("stats %+v, want 2 unit attentions, last 2A/04", st)
	}
}

// A UNIT ATTENTION that never clears ends as ErrUnitAttention.
func TestUnitAttentionGivesUp(t *testing.T) {
	d, _ := startFake(t, Config{}, nil, onCmd(func(f *fakeTarget, p *PDU) []*PDU {
		return []*PDU{f.response(p, statusCheckCondition, fixedSense(SenseUnitAttention, 0x29, 0))}
	}))
	err := d.Flush()
	var se *SenseError
	if !errors.Is(err, ErrUnitAttention) || !errors.As(err, &se) || se.ASC != 0x29 {
		t.Fatalf("flush: %v, want a 29/00 UNIT ATTENTION error", err)
	}
}

func TestBusyAndTaskSetFullAreRetried(t *testing.T) {
	var n atomic.Int32
	d, _ := startFake(t, Config{}, nil, onCmd(func(f *fakeTarget, p *PDU) []*PDU {
		switch n.Add(1) {
		case 1:
			return []*PDU{f.response(p, statusBusy, nil)}
		case 2:
			return []*PDU{f.response(p, statusTaskSetFull, nil)}
		}
		return []*PDU{f.response(p, statusGood, nil)}
	}))
	if err := d.Flush(); err != nil {
		t.Fatalf("flush through BUSY and TASK SET FULL: %v", err)
	}
	if st := d.Stats(); st.BusyRetries != 2 {
		t.Fatalf("busy retries %d, want 2", st.BusyRetries)
	}
}

func TestBusyGivesUpAfterTimeout(t *testing.T) {
	d, _ := startFake(t, Config{Timeout: 100 * time.Millisecond}, nil, onCmd(func(f *fakeTarget, p *PDU) []*PDU {
		return []*PDU{f.response(p, statusBusy, nil)}
	}))
	if err := d.Flush(); !errors.Is(err, ErrBusy) {
		t.Fatalf("flush against a target stuck BUSY: %v, want ErrBusy", err)
	}
}

func TestReservationConflictIsItsOwnError(t *testing.T) {
	d, _ := startFake(t, Config{}, nil, onCmd(func(f *fakeTarget, p *PDU) []*PDU {
		return []*PDU{f.response(p, statusReservationConflict, nil)}
	}))
	err := d.WriteAt(make([]byte, 512), 0, false)
	if !errors.Is(err, ErrReservationConflict) {
		t.Fatalf("write: %v, want ErrReservationConflict", err)
	}
	if errors.Is(err, ErrBusy) || errors.Is(err, ErrDisconnected) {
		t.Fatalf("reservation conflict also matches another class: %v", err)
	}
}

func TestSenseErrorsAreTyped(t *testing.T) {
	cases := []struct {
		key, asc byte
		want     error
	}{
		{SenseMediumError, 0x11, ErrMedium},
		{SenseHardwareError, 0x44, ErrMedium},
		{SenseIllegalRequest, 0x24, ErrIllegalRequest},
		{SenseNotReady, 0x04, ErrNotReady},
		{SenseDataProtect, 0x27, ErrWriteProtected},
	}
	for _, c := range cases {
		d, _ := startFake(t, Config{}, nil, onCmd(func(f *fakeTarget, p *PDU) []*PDU {
			return []*PDU{f.response(p, statusCheckCondition, fixedSense(c.key, c.asc, 0))}
		}))
		err := d.Flush()
		if !errors.Is(err, c.want) {
			t.Errorf("sense key %#x: %v, want %v", c.key, err, c.want)
		}
		d.Close()
	}
}

// A read whose Data-In comes in several PDUs with status on the last.
func TestReadDataInPieces(t *testing.T) {
	want := bytes.Repeat([]byte("0123456789abcdef"), 4096/16)
	d, _ := startFake(t, Config{}, nil, func(f *fakeTarget, p *PDU) []*PDU {
		if isCmd(p, scsiRead16) {
			return []*PDU{
				f.dataIn(p, 0, want[:1024], 0, false),
				f.dataIn(p, 1024, want[1024:3072], 1, false),
				f.dataIn(p, 3072, want[3072:], 2, true),
			}
		}
		return nil
	})
	got := make([]byte, 4096)
	if err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read data differs")
	}
}

// A read that returns less than asked (underflow) is an error, not a
// silently short buffer.
func TestShortReadIsAnError(t *testing.T) {
	d, _ := startFake(t, Config{}, nil, func(f *fakeTarget, p *PDU) []*PDU {
		if isCmd(p, scsiRead16) {
			r := f.dataIn(p, 0, make([]byte, 512), 0, true)
			r.BHS[1] |= 0x02 // underflow
			r.put32(44, 512)
			return []*PDU{r}
		}
		return nil
	})
	if err := d.ReadAt(make([]byte, 1024), 0); err == nil {
		t.Fatal("a short read succeeded")
	}
}

// Hostile Data-In (beyond the buffer, out of order, unknown tag) kills the
// session with ErrProtocol; nothing panics and the caller gets the error.
func TestHostileDataIn(t *testing.T) {
	cases := map[string]func(f *fakeTarget, p *PDU) []*PDU{
		"overrun": func(f *fakeTarget, p *PDU) []*PDU {
			return []*PDU{f.dataIn(p, 0, make([]byte, 1024), 0, true)}
		},
		"offset beyond": func(f *fakeTarget, p *PDU) []*PDU {
			return []*PDU{f.dataIn(p, 1<<30, make([]byte, 4), 0, true)}
		},
		"out of order": func(f *fakeTarget, p *PDU) []*PDU {
			return []*PDU{f.dataIn(p, 256, make([]byte, 256), 0, true)}
		},
		"wrong DataSN": func(f *fakeTarget, p *PDU) []*PDU {
			return []*PDU{f.dataIn(p, 0, make([]byte, 512), 5, true)}
		},
		"unknown ITT": func(f *fakeTarget, p *PDU) []*PDU {
			r := f.dataIn(p, 0, make([]byte, 512), 0, true)
			r.put32(16, 0xdead)
			return []*PDU{r}
		},
		"sense length beyond segment": func(f *fakeTarget, p *PDU) []*PDU {
			r := f.response(p, statusCheckCondition, fixedSense(3, 0, 0))
			r.Data[1] = 200
			return []*PDU{r}
		},
		"reject": func(f *fakeTarget, p *PDU) []*PDU {
			r := &PDU{Data: p.BHS[:]}
			r.BHS[0] = opReject
			r.BHS[1] = 0x80
			r.BHS[2] = 0x04
			return []*PDU{f.stamp(r, true)}
		},
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			d, _ := startFake(t, Config{}, nil, func(f *fakeTarget, p *PDU) []*PDU {
				if isCmd(p, scsiRead16) {
					return h(f, p)
				}
				return nil
			})
			err := d.ReadAt(make([]byte, 512), 0)
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("read: %v, want ErrProtocol", err)
			}
			if d.Connected() {
				t.Fatal("session survived a protocol violation")
			}
		})
	}
}

// A target that stops answering fails the command with ErrTimeout within
// the timeout, and later calls fail at once with ErrDisconnected.
func TestSilentTargetTimesOut(t *testing.T) {
	cfg := Config{Timeout: 150 * time.Millisecond}
	d, _ := startFake(t, cfg, nil, func(f *fakeTarget, p *PDU) []*PDU { return nil })
	start := time.Now()
	err := d.WriteAt(make([]byte, 512), 0, false)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("write to a silent target: %v, want ErrTimeout", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("timeout took %v", el)
	}
	time.Sleep(20 * time.Millisecond)
	if err := d.Flush(); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("flush after the timeout: %v, want ErrDisconnected", err)
	}
}

// Idle sessions ping with NOP-Out; a target that answers keeps the session.
func TestIdlePingKeepsSessionAlive(t *testing.T) {
	cfg := Config{Timeout: 200 * time.Millisecond, PingInterval: 40 * time.Millisecond}
	var pings atomic.Int32
	d, _ := startFake(t, cfg, nil, func(f *fakeTarget, p *PDU) []*PDU {
		if p.Opcode() == opNOPOut {
			pings.Add(1)
			if p.ITT() == reservedTag || p.u32(20) != reservedTag {
				t.Errorf("ping NOP-Out ITT %#x TTT %#x", p.ITT(), p.u32(20))
			}
			r := &PDU{}
			r.BHS[0], r.BHS[1] = opNOPIn, 0x80
			r.put32(16, p.ITT())
			r.put32(20, reservedTag)
			return []*PDU{f.stamp(r, true)}
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond)
	if pings.Load() < 3 {
		t.Fatalf("%d pings in 500ms with a 40ms interval", pings.Load())
	}
	if !d.Connected() {
		t.Fatal("an answering target was declared dead")
	}
}

// An idle session whose target does not answer pings dies with ErrTimeout.
func TestUnansweredPingKillsSession(t *testing.T) {
	cfg := Config{Timeout: 100 * time.Millisecond, PingInterval: 30 * time.Millisecond}
	d, _ := startFake(t, cfg, nil, func(f *fakeTarget, p *PDU) []*PDU { return nil })
	deadline := time.Now().Add(2 * time.Second)
	for d.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("session with an unanswered ping still up after 2s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := d.Flush(); !errors.Is(err, ErrTimeout) {
		t.Fatalf("flush: %v, want the ping timeout (ErrTimeout) as the reason", err)
	}
}

// A target's NOP-In ping (TTT set) is answered with a NOP-Out echoing it.
func TestTargetPingIsAnswered(t *testing.T) {
	var mu sync.Mutex
	var answered []uint32
	d, _ := startFake(t, Config{}, nil, func(f *fakeTarget, p *PDU) []*PDU {
		if isCmd(p, scsiSyncCache16) {
			ping := &PDU{}
			ping.BHS[0], ping.BHS[1] = opNOPIn, 0x80
			ping.put32(16, reservedTag)
			ping.put32(20, 0x4242)
			return []*PDU{f.stamp(ping, false), f.response(p, statusGood, nil)}
		}
		if p.Opcode() == opNOPOut {
			mu.Lock()
			answered = append(answered, p.u32(20))
			mu.Unlock()
		}
		return nil
	})
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for {
		mu.Lock()
		n := len(answered)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("target ping not answered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if answered[0] != 0x4242 {
		t.Fatalf("NOP-Out echoed TTT %#x, want 0x4242", answered[0])
	}
}

// Writes beyond the immediate data follow R2Ts: the target asks for two
// bursts and receives exactly the bytes it asked for, split at the
// target's MaxRecvDataSegmentLength.
func TestWriteFollowsR2T(t *testing.T) {
	const size = 12 << 10
	want := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7, 8}, size/8)
	answer := []kv{{"InitialR2T", "Yes"}, {"ImmediateData", "Yes"}, {"MaxRecvDataSegmentLength", "2048"},
		{"FirstBurstLength", "4096"}, {"MaxBurstLength", "8192"}}
	var mu sync.Mutex
	got := make([]byte, size)
	var received int
	var cmd *PDU
	d, _ := startFake(t, Config{}, answer, func(f *fakeTarget, p *PDU) []*PDU {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case isCmd(p, scsiWrite16):
			cmd = p
			if len(p.Data) != 2048 {
				t.Errorf("immediate data %d bytes, want 2048 (MaxRecvDataSegmentLength)", len(p.Data))
			}
			copy(got, p.Data)
			received = len(p.Data)
			r2t := func(ttt, sn, off, n uint32) *PDU {
				r := &PDU{}
				r.BHS[0], r.BHS[1] = opR2T, 0x80
				r.put32(16, p.ITT())
				r.put32(20, ttt)
				r.put32(36, sn)
				r.put32(40, off)
				r.put32(44, n)
				return f.stamp(r, false)
			}
			return []*PDU{r2t(100, 0, 2048, 8192), r2t(101, 1, 10240, 2048)}
		case p.Opcode() == opDataOut:
			off := p.u32(40)
			if p.u32(20) != 100 && p.u32(20) != 101 {
				t.Errorf("Data-Out TTT %#x", p.u32(20))
			}
			if len(p.Data) > 2048 {
				t.Errorf("Data-Out of %d bytes above the target's 2048", len(p.Data))
			}
			copy(got[off:], p.Data)
			received += len(p.Data)
			if received == size {
				return []*PDU{f.response(cmd, statusGood, nil)}
			}
		}
		return nil
	})
	if err := d.WriteAt(want, 0, true); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(got, want) {
		t.Fatal("target received different data")
	}
	if cmd.BHS[33]&0x08 == 0 {
		t.Fatal("FUA bit not set in WRITE(16)")
	}
}

// The initiator never sends a command beyond the target's MaxCmdSN.
func TestCmdSNWindowIsRespected(t *testing.T) {
	var mu sync.Mutex
	var pending []*PDU
	var maxSeen uint32
	var violation bool
	d, f := startFake(t, Config{}, nil, func(f *fakeTarget, p *PDU) []*PDU {
		if !isCmd(p, scsiSyncCache16) {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		f.mu.Lock()
		limit := f.expCmd + f.window() - 1
		f.mu.Unlock()
		if serialLT(limit, p.u32(24)) {
			violation = true
		}
		maxSeen = max(maxSeen, uint32(len(pending)+1))
		pending = append(pending, p)
		if len(pending) < 4 {
			return nil // hold them: the window is full
		}
		var out []*PDU
		for _, q := range pending {
			out = append(out, f.response(q, statusGood, nil))
		}
		pending = nil
		return out
	})
	f.mu.Lock()
	f.maxWin = 4
	f.mu.Unlock()
	// Let the window shrink to 4 on the next response.
	if err := d.TestUnitReady(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.Flush(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if violation {
		t.Fatal("a command was sent beyond MaxCmdSN")
	}
	if maxSeen != 4 {
		t.Fatalf("at most %d commands were in flight, want the full window of 4", maxSeen)
	}
}

// After the target drops the connection, the Disk logs in again by itself.
func TestReconnectAfterDrop(t *testing.T) {
	var drop atomic.Bool
	d, f := startFake(t, Config{ReconnectInterval: 20 * time.Millisecond}, nil, onCmd(func(f *fakeTarget, p *PDU) []*PDU {
		if drop.CompareAndSwap(true, false) {
			f.mu.Lock()
			f.conn.Close()
			f.mu.Unlock()
			return nil
		}
		return []*PDU{f.response(p, statusGood, nil)}
	}))
	_ = f
	drop.Store(true)
	if err := d.Flush(); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("flush on a dropped connection: %v, want ErrDisconnected", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !d.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("no reconnect within 2s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := d.Flush(); err != nil {
		t.Fatalf("flush after reconnect: %v", err)
	}
	if d.Stats().Reconnects != 1 {
		t.Fatalf("reconnects %d, want 1", d.Stats().Reconnects)
	}
}

func TestClosedDisk(t *testing.T) {
	d, _ := startFake(t, Config{}, nil, func(f *fakeTarget, p *PDU) []*PDU { return nil })
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); !errors.Is(err, ErrClosed) {
		t.Fatalf("flush after close: %v, want ErrClosed", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

// A target that keeps MaxCmdSN below the next CmdSN (while answering
// pings) must not make commands wait forever.
func TestClosedWindowTimesOut(t *testing.T) {
	cfg := Config{Timeout: 150 * time.Millisecond, PingInterval: 30 * time.Millisecond}
	// A window of one command that slides with each completion...
	d, f := startFakeWith(t, cfg, nil, func(f *fakeTarget) { f.maxWin = 1 }, onCmd(func(f *fakeTarget, p *PDU) []*PDU {
		return []*PDU{f.response(p, statusGood, nil)}
	}))
	// ...then stops sliding: the next command may go, the one after not.
	f.mu.Lock()
	f.fixed, f.fixedMax = true, f.expCmd
	f.mu.Unlock()
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := d.Flush()
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("flush behind a closed window: %v, want ErrTimeout", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("took %v", el)
	}
}

// A corrupted header or data digest drops the connection with ErrDigest
// (the data is never handed to the caller as good), and the Disk logs in
// again.
func TestDigestMismatchDropsConnection(t *testing.T) {
	answer := []kv{{"HeaderDigest", "CRC32C"}, {"DataDigest", "CRC32C"}}
	for _, flip := range []int{5, 48 + 4 + 10} { // in the header, in the data
		var corrupt atomic.Bool
		corrupt.Store(true)
		d, f := startFake(t, Config{HeaderDigest: true, DataDigest: true, ReconnectInterval: 10 * time.Millisecond}, answer,
			onCmd(func(f *fakeTarget, p *PDU) []*PDU {
				if !isCmd(p, scsiRead16) {
					return []*PDU{f.response(p, statusGood, nil)}
				}
				r := f.dataIn(p, 0, make([]byte, 512), 0, true)
				if !corrupt.CompareAndSwap(true, false) {
					return []*PDU{r}
				}
				w, err := r.Marshal(nil, Digests{Header: true, Data: true})
				if err != nil {
					t.Error(err)
				}
				w[flip] ^= 0x40
				return []*PDU{raw(w)}
			}))
		_ = f
		if p := d.Params(); !p.HeaderDigest || !p.DataDigest {
			t.Fatalf("digests not negotiated: %+v", p)
		}
		err := d.ReadAt(make([]byte, 512), 0)
		if !errors.Is(err, ErrDigest) {
			t.Fatalf("flip at %d: read %v, want ErrDigest", flip, err)
		}
		waitFor(t, d.Connected)
		if err := d.ReadAt(make([]byte, 512), 0); err != nil {
			t.Fatalf("read after reconnect: %v", err)
		}
		d.Close()
	}
}
