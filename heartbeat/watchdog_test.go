package heartbeat

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// stepClock is a fake Clock an operator (the test) sets by hand, wall
// clock steps included; its ticker never fires, so a Member on it steps
// only once at start: its loop is as good as hung.
type stepClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}
func (c *stepClock) set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }
func (c *stepClock) NewTicker(time.Duration) (<-chan time.Time, func()) {
	return make(chan time.Time), func() {}
}

// TestHealthyNotFooledByClockSteppedBack: the systemd watchdog check must
// report a hung loop as unhealthy even when the clock is set back while it
// hangs (main compared wall-clock nanoseconds: a step back of an hour made
// a hung loop look healthy for an hour).
func TestHealthyNotFooledByClockSteppedBack(t *testing.T) {
	c := memConfig()
	c.Self = "n1"
	disk := &memDisk{b: make([]byte, 4*1024)}
	dl, err := c.DiskLinkFor("disk-a", disk, 0, 1024, 4)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_700_000_000, 0)
	clk := &stepClock{now: t0}
	m, err := NewMember(c, simKey, []Link{newMemNet().attach("n1", "nic1"), dl}, MemberOptions{Clock: clk, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if m.Healthy(time.Hour) {
		t.Error("healthy before the loop ever stepped")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(5 * time.Second); !m.Healthy(time.Second); {
		if time.Now().After(deadline) {
			t.Fatal("the loop never stepped")
		}
		time.Sleep(5 * time.Millisecond)
	}
	clk.set(t0.Add(500 * time.Millisecond))
	if !m.Healthy(time.Second) {
		t.Error("unhealthy 500ms after a step, maxAge 1s")
	}
	clk.set(t0.Add(2 * time.Second))
	if m.Healthy(time.Second) {
		t.Error("healthy 2s after the last step, maxAge 1s")
	}
	clk.set(t0.Add(-time.Hour)) // the clock is set back while the loop hangs
	if m.Healthy(time.Second) {
		t.Error("a clock set back an hour made a hung loop look healthy")
	}
}

// TestHealthyMeasuresOnTheMonotonicClock: with the real clock the step
// time keeps its monotonic reading, which is what makes the age immune to
// wall clock steps (time.Time.Sub then ignores the wall clock).
func TestHealthyMeasuresOnTheMonotonicClock(t *testing.T) {
	c := memConfig()
	c.Self = "n1"
	dl, _ := c.DiskLinkFor("disk-a", &memDisk{b: make([]byte, 4*1024)}, 0, 1024, 4)
	m, err := NewMember(c, simKey, []Link{newMemNet().attach("n1", "nic1"), dl}, MemberOptions{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	m.step(func(time.Time) {}, nil)
	last := m.lastStep.Load()
	if last == nil || !strings.Contains(last.String(), " m=") {
		t.Fatalf("step time %v has no monotonic reading", last)
	}
	if !m.Healthy(time.Minute) {
		t.Error("unhealthy right after a step")
	}
	time.Sleep(20 * time.Millisecond)
	if m.Healthy(10 * time.Millisecond) {
		t.Error("healthy 20ms after the last step, maxAge 10ms")
	}
}
