package iscsi

import (
	"errors"
	"testing"
	"time"
)

func TestSerialArithmetic(t *testing.T) {
	cases := []struct {
		a, b uint32
		lt   bool
	}{{1, 2, true}, {2, 1, false}, {0xffffffff, 0, true}, {0, 0xffffffff, false}, {5, 5, false}, {0, 1 << 30, true}}
	for _, c := range cases {
		if serialLT(c.a, c.b) != c.lt {
			t.Errorf("serialLT(%#x, %#x) = %v", c.a, c.b, !c.lt)
		}
	}
}

func TestWindow(t *testing.T) {
	w := window{exp: 10, max: 12}
	if !w.open(12) || w.open(13) {
		t.Fatal("window [10,12] wrong")
	}
	w.update(11, 20)
	if w.exp != 11 || w.max != 20 {
		t.Fatalf("update: %+v", w)
	}
	w.update(5, 9) // stale: edges never move back
	if w.exp != 11 || w.max != 20 {
		t.Fatalf("stale update moved the window: %+v", w)
	}
	w.update(30, 20) // MaxCmdSN < ExpCmdSN-1: ignored
	if w.exp != 11 {
		t.Fatalf("invalid update applied: %+v", w)
	}
	w.update(21, 20) // MaxCmdSN = ExpCmdSN-1: a closed window is valid
	if w.exp != 21 || w.open(21) {
		t.Fatalf("closed window: %+v", w)
	}
	w = window{exp: 0xfffffffe, max: 0xffffffff}
	w.update(0xffffffff, 3) // wraps
	if !w.open(2) || w.open(4) {
		t.Fatalf("wrapped window: %+v", w)
	}
}

func TestLivenessRules(t *testing.T) {
	l := liveness{Timeout: 5 * time.Second, PingInterval: 2 * time.Second}
	t0 := time.Unix(1000, 0)
	cases := []struct {
		name string
		in   livenessInput
		ping bool
		dead bool
	}{
		{"fresh", livenessInput{Now: t0, LastRecv: t0}, false, false},
		{"idle: ping", livenessInput{Now: t0.Add(2 * time.Second), LastRecv: t0}, true, false},
		{"ping outstanding: wait", livenessInput{Now: t0.Add(4 * time.Second), LastRecv: t0, PingSent: t0.Add(2 * time.Second)}, false, false},
		{"ping unanswered", livenessInput{Now: t0.Add(7 * time.Second), LastRecv: t0, PingSent: t0.Add(2 * time.Second)}, false, true},
		{"command within timeout", livenessInput{Now: t0.Add(time.Second), LastRecv: t0.Add(time.Second), OldestTask: t0, OldestOp: "WRITE(16)"}, false, false},
		{"window closed briefly", livenessInput{Now: t0.Add(time.Second), LastRecv: t0.Add(time.Second), WindowClosedSince: t0}, false, false},
		{"window kept closed", livenessInput{Now: t0.Add(5 * time.Second), LastRecv: t0.Add(5 * time.Second), WindowClosedSince: t0}, false, true},
		{"command unanswered", livenessInput{Now: t0.Add(5 * time.Second), LastRecv: t0.Add(4 * time.Second), OldestTask: t0, OldestOp: "WRITE(16)"}, false, true},
	}
	for _, c := range cases {
		ping, dead := l.check(c.in)
		if ping != c.ping || (dead != nil) != c.dead {
			t.Errorf("%s: ping %v dead %v", c.name, ping, dead)
		}
		if dead != nil && !errors.Is(dead, ErrTimeout) {
			t.Errorf("%s: %v is not ErrTimeout", c.name, dead)
		}
	}
}
