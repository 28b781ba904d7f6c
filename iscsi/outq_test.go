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

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// The reader's non-blocking write sends what the socket takes; when the
// peer does not read, the rest (cut in the middle of a buffer) is handed to
// the helper writer, and the peer receives every byte once, in order.
func TestOutqReleaseWritingHandsRemainderToHelper(t *testing.T) {
	a, b := tcpPair(t)
	q := newOutq()
	var want []byte
	q.hold()
	for i := range 64 {
		buf := bytes.Repeat([]byte{byte(i)}, 128<<10+i) // 8 MiB in all: more than the socket buffers
		want = append(want, buf...)
		if q.push(net.Buffers{buf[:100], buf[100:]}, true) {
			t.Fatal("push during a hold told the sender to write")
		}
	}
	if err := q.releaseWriting(newNBWriter(a)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-q.kick:
	default:
		t.Fatal("a full socket did not wake the helper for the rest")
	}
	q.mu.Lock()
	left := 0
	for _, p := range q.pending {
		left += len(p)
	}
	q.mu.Unlock()
	if left == 0 || left == len(want) {
		t.Fatalf("%d of %d bytes left for the helper, want a part", left, len(want))
	}
	got := make(chan []byte)
	go func() {
		buf, _ := io.ReadAll(b)
		got <- buf
	}()
	if !q.claim() {
		t.Fatal("the helper could not claim the rest")
	}
	if err := q.drain(a); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if g := <-got; !bytes.Equal(g, want) {
		t.Fatalf("peer received %d bytes, want the %d pushed, in order", len(g), len(want))
	}
}

// Without a descriptor (net.Pipe) there is no non-blocking writer; the
// session then leaves every write to senders and the helper.
func TestNBWriterNeedsADescriptor(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if newNBWriter(a) != nil {
		t.Fatal("a non-blocking writer on net.Pipe")
	}
	c, _ := tcpPair(t)
	if newNBWriter(c) == nil {
		t.Fatal("no non-blocking writer on a TCP connection")
	}
}
