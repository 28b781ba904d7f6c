package hblab

import (
	"fmt"
	"sync"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// eventLog keeps a member's events for a test to wait on.
type eventLog struct {
	id     string
	mu     sync.Mutex
	events []heartbeat.Event
	notify chan struct{} // closed and replaced at every event
}

func newEventLog(id string) *eventLog { return &eventLog{id: id, notify: make(chan struct{})} }

func (l *eventLog) add(e heartbeat.Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	close(l.notify)
	l.notify = make(chan struct{})
	l.mu.Unlock()
}

// Events returns every event so far.
func (l *eventLog) Events() []heartbeat.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]heartbeat.Event(nil), l.events...)
}

// WaitEvent waits up to timeout for an event (past or future) matching ok.
func (l *eventLog) WaitEvent(timeout time.Duration, ok func(heartbeat.Event) bool) (heartbeat.Event, error) {
	deadline := time.After(timeout)
	seen := 0
	for {
		l.mu.Lock()
		evs, ch := l.events[seen:], l.notify
		seen = len(l.events)
		l.mu.Unlock()
		for _, e := range evs {
			if ok(e) {
				return e, nil
			}
		}
		select {
		case <-ch:
		case <-deadline:
			return heartbeat.Event{}, fmt.Errorf("%s: no matching event within %v", l.id, timeout)
		}
	}
}
