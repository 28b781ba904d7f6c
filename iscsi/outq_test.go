package iscsi

import (
	"bytes"
	"io"
	"net"
	"testing"
)

// TestOutqHoldBatchesSenders checks the reader's hold: while it completes a
// batch of tasks, the callers' next commands are only queued, and release
// hands them to the helper writer, which sends them in order in one go.
func TestOutqHoldBatchesSenders(t *testing.T) {
	q := newOutq()
	if !q.push(net.Buffers{[]byte("a")}, true) {
		t.Fatal("an idle queue must let the sender write itself")
	}
	q.mu.Lock()
	q.flushing, q.pending = false, nil
	q.mu.Unlock()

	q.hold()
	if !q.holding() {
		t.Fatal("holding() = false after hold")
	}
	for _, s := range []string{"one", "two", "three"} {
		if q.push(net.Buffers{[]byte(s)}, true) {
			t.Fatalf("push(%q) during a hold told the sender to write", s)
		}
	}
	select {
	case <-q.kick:
		t.Fatal("the helper was woken during the hold")
	default:
	}
	q.release()
	if q.holding() {
		t.Fatal("holding() = true after release")
	}
	select {
	case <-q.kick:
	default:
		t.Fatal("release did not wake the helper for the queued PDUs")
	}
	if !q.claim() {
		t.Fatal("the helper could not claim the queued PDUs")
	}
	a, b := net.Pipe()
	defer a.Close()
	got := make(chan []byte)
	go func() {
		buf, _ := io.ReadAll(b)
		got <- buf
	}()
	if err := q.drain(a); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if w := <-got; !bytes.Equal(w, []byte("onetwothree")) {
		t.Fatalf("wrote %q, want the held PDUs in order", w)
	}
	if q.push(net.Buffers{[]byte("x")}, true) != true {
		t.Fatal("after the drain the next sender must write itself again")
	}
}

// TestOutqReleaseWithoutPendingStaysQuiet: a hold with nothing queued wakes
// nobody.
func TestOutqReleaseWithoutPendingStaysQuiet(t *testing.T) {
	q := newOutq()
	q.hold()
	q.release()
	select {
	case <-q.kick:
		t.Fatal("release woke the helper with nothing queued")
	default:
	}
}
