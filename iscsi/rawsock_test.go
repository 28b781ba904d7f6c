package iscsi

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
)

// The session's raw reader first yields what the login's bufio.Reader had
// buffered, then the socket, then io.EOF when the peer closes.
func TestSessionReaderKeepsBufferedBytes(t *testing.T) {
	a, b := tcpPair(t)
	if _, err := b.Write([]byte("login-leftover|")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(a)
	if _, err := br.ReadString('-'); err != nil { // "login-" consumed, "leftover|" buffered
		t.Fatal(err)
	}
	r := sessionReader(a, br)
	if _, ok := r.(*rawReader); !ok {
		t.Fatalf("sessionReader on TCP is %T, want the raw reader", r)
	}
	go func() {
		b.Write([]byte("after"))
		b.Close()
	}()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "leftover|after" {
		t.Fatalf("read %q, want the buffered bytes then the socket's", got)
	}
	if n, err := r.Read(make([]byte, 4)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read after the peer closed: %d, %v; want io.EOF", n, err)
	}
	// Without a descriptor the login's reader is used as it is.
	p, q := net.Pipe()
	defer p.Close()
	defer q.Close()
	pbr := bufio.NewReader(p)
	if sessionReader(p, pbr) != io.Reader(pbr) {
		t.Fatal("net.Pipe: sessionReader did not keep the login's reader")
	}
}
