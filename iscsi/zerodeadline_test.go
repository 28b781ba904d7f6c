package iscsi

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// slowWrites answers every SCSI command after delay and counts WRITE
// SAME(16)s (the fake LUN advertises WRITE SAME of 8 blocks: its 1 MiB take
// 256 commands).
func slowWrites(delay time.Duration, writes *atomic.Int32) func(f *fakeTarget, p *PDU) []*PDU {
	return onCmd(func(f *fakeTarget, p *PDU) []*PDU {
		if p.BHS[32] == scsiWriteSame16 {
			writes.Add(1)
		}
		time.Sleep(delay)
		return []*PDU{f.response(p, statusGood, nil)}
	})
}

// Issue 10 finding 4: a zero of a large range (here 256 commands at 10 ms
// each, 2.5 s) stops issuing commands once the initiator timeout
// has passed since it began: its caller gave up by then, and a command
// landing later could overwrite newer data.
func TestZeroStopsIssuingAtTheTimeout(t *testing.T) {
	var writes atomic.Int32
	d, _ := startFakeWith(t, Config{Timeout: 200 * time.Millisecond, PingInterval: time.Hour}, nil, withVPD(blockLimits(8, false)), slowWrites(10*time.Millisecond, &writes))
	t0 := time.Now()
	err := d.Zero(0, 1<<20, false)
	took := time.Since(t0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("zero taking 256 commands of 10 ms with a 200 ms timeout: %v, want DeadlineExceeded", err)
	}
	at := writes.Load()
	time.Sleep(200 * time.Millisecond)
	if later := writes.Load(); later != at || at >= 256 {
		t.Fatalf("commands went on after Zero returned: %d at return, %d later (of 256)", at, later)
	}
	t.Logf("stopped after %d of 256 commands, %v", at, took.Round(time.Millisecond))
}

// ZeroContext issues nothing once its context is done.
func TestZeroContextCancelled(t *testing.T) {
	var writes atomic.Int32
	d, _ := startFakeWith(t, Config{}, nil, withVPD(blockLimits(8, false)), slowWrites(0, &writes))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.ZeroContext(ctx, 0, 1<<20, false); !errors.Is(err, context.Canceled) {
		t.Fatalf("ZeroContext with a cancelled context: %v", err)
	}
	if n := writes.Load(); n != 0 {
		t.Fatalf("%d commands sent after the caller gave up", n)
	}
	if err := d.ZeroContext(context.Background(), 0, 24*512, false); err != nil || writes.Load() != 3 {
		t.Fatalf("ZeroContext of 24 blocks: %v, %d commands", err, writes.Load())
	}
}
