package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memBackend is an in-memory Backend for the package's own tests; the
// mirror engine is wired in by cmd/mirrord and tested there.
type memBackend struct {
	mu      sync.RWMutex
	data    []byte
	block   int
	flushes atomic.Int64
	fuas    atomic.Int64
	zeros   atomic.Int64
	unmaps  atomic.Int64
	delay   time.Duration // per write, to keep requests in flight
	failAt  int64         // WriteAt/ReadAt at this offset fails (with -1: never)
}

func newMem(size int64, block int) *memBackend {
	return &memBackend{data: make([]byte, size), block: block, failAt: -1}
}

func (m *memBackend) Size() int64    { return int64(len(m.data)) }
func (m *memBackend) BlockSize() int { return m.block }
func (m *memBackend) ReadAt(p []byte, off int64) error {
	if off == m.failAt {
		return errors.New("injected read error")
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	copy(p, m.data[off:])
	return nil
}
func (m *memBackend) WriteAt(p []byte, off int64, fua bool) error {
	if m.delay > 0 {
		time.Sleep(m.delay)
	}
	if off == m.failAt {
		return errors.New("injected write error")
	}
	if fua {
		m.fuas.Add(1)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.data[off:], p)
	return nil
}
func (m *memBackend) Flush() error { m.flushes.Add(1); return nil }
func (m *memBackend) Zero(off, n int64, unmap bool) error {
	m.zeros.Add(1)
	if unmap {
		m.unmaps.Add(1)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.data[off : off+n])
	return nil
}
func (m *memBackend) snapshot() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte(nil), m.data...)
}

// startServer serves b on a fresh unix socket and returns its path.
func startServer(t *testing.T, b Backend, opts Options) (*Server, string) {
	t.Helper()
	srv, err := NewServer(b, opts)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "nbdt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	ln, err := Listen("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return srv, sock
}

// client is a minimal NBD client for protocol tests (the interop tests use
// the real ones).
type client struct {
	t    *testing.T
	c    net.Conn
	r    *bufio.Reader
	size uint64
	flag uint16
	sr   bool // structured replies negotiated
}

func dialRaw(t *testing.T, sock string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

// greet reads the server's greeting and sends client flags.
func greet(t *testing.T, c net.Conn, r *bufio.Reader, cflags uint32) {
	t.Helper()
	var g [18]byte
	if _, err := io.ReadFull(r, g[:]); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	if binary.BigEndian.Uint64(g[0:]) != magicNBD || binary.BigEndian.Uint64(g[8:]) != magicIHaveOpt {
		t.Fatalf("bad greeting % x", g)
	}
	if hf := binary.BigEndian.Uint16(g[16:]); hf != flagFixedNewstyle|flagNoZeroes {
		t.Fatalf("handshake flags %#x", hf)
	}
	writeAll(t, c, binary.BigEndian.AppendUint32(nil, cflags))
}

func writeAll(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func sendOpt(t *testing.T, c net.Conn, opt uint32, data []byte) {
	t.Helper()
	b := binary.BigEndian.AppendUint64(nil, magicIHaveOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	writeAll(t, c, append(b, data...))
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func readOptReply(t *testing.T, r *bufio.Reader) optReply {
	t.Helper()
	var h [20]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		t.Fatalf("option reply: %v", err)
	}
	if m := binary.BigEndian.Uint64(h[0:]); m != magicOptReply {
		t.Fatalf("option reply magic %#x", m)
	}
	rep := optReply{opt: binary.BigEndian.Uint32(h[8:]), typ: binary.BigEndian.Uint32(h[12:])}
	rep.data = make([]byte, binary.BigEndian.Uint32(h[16:]))
	if _, err := io.ReadFull(r, rep.data); err != nil {
		t.Fatalf("option reply data: %v", err)
	}
	return rep
}

func goPayload(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

// dial connects and negotiates with NBD_OPT_GO (structured replies if sr).
func dial(t *testing.T, sock string, sr bool) *client {
	t.Helper()
	c := dialRaw(t, sock)
	cl := &client{t: t, c: c, r: bufio.NewReader(c), sr: sr}
	greet(t, c, cl.r, clientFixedNewstyle|clientNoZeroes)
	if sr {
		sendOpt(t, c, optStructuredReply, nil)
		if rep := readOptReply(t, cl.r); rep.typ != repAck {
			t.Fatalf("structured reply refused: %#x", rep.typ)
		}
	}
	sendOpt(t, c, optGo, goPayload("", infoBlockSize))
	for {
		rep := readOptReply(t, cl.r)
		if rep.typ == repAck {
			break
		}
		if rep.typ != repInfo {
			t.Fatalf("GO answered %#x: %s", rep.typ, rep.data)
		}
		if binary.BigEndian.Uint16(rep.data) == infoExport {
			cl.size = binary.BigEndian.Uint64(rep.data[2:])
			cl.flag = binary.BigEndian.Uint16(rep.data[10:])
		}
	}
	return cl
}

func (cl *client) send(typ, flags uint16, handle, off uint64, length uint32, payload []byte) {
	cl.t.Helper()
	b := AppendRequest(nil, Request{Flags: flags, Type: typ, Handle: handle, Offset: off, Length: length})
	writeAll(cl.t, cl.c, append(b, payload...))
}

// reply is one complete reply as the test client saw it.
type reply struct {
	handle uint64
	errno  uint32
	msg    string
	data   []byte
}

// recv reads one reply; for simple replies to reads, readLen says how much
// data follows a successful header.
func (cl *client) recv(readLen map[uint64]int) (reply, error) {
	var m [4]byte
	if _, err := io.ReadFull(cl.r, m[:]); err != nil {
		return reply{}, err
	}
	switch binary.BigEndian.Uint32(m[:]) {
	case magicSimple:
		var h [12]byte
		if _, err := io.ReadFull(cl.r, h[:]); err != nil {
			return reply{}, err
		}
		rp := reply{errno: binary.BigEndian.Uint32(h[0:]), handle: binary.BigEndian.Uint64(h[4:])}
		if n := readLen[rp.handle]; n > 0 && rp.errno == 0 {
			rp.data = make([]byte, n)
			if _, err := io.ReadFull(cl.r, rp.data); err != nil {
				return reply{}, err
			}
		}
		return rp, nil
	case magicStructured:
		var h [16]byte
		if _, err := io.ReadFull(cl.r, h[:]); err != nil {
			return reply{}, err
		}
		flags, typ := binary.BigEndian.Uint16(h[0:]), binary.BigEndian.Uint16(h[2:])
		rp := reply{handle: binary.BigEndian.Uint64(h[4:])}
		p := make([]byte, binary.BigEndian.Uint32(h[12:]))
		if _, err := io.ReadFull(cl.r, p); err != nil {
			return reply{}, err
		}
		if flags != replyFlagDone {
			return reply{}, fmt.Errorf("chunk flags %#x, want DONE (one chunk per reply)", flags)
		}
		switch typ {
		case replyTypeOffsetData:
			rp.data = p[8:]
		case replyTypeError:
			rp.errno = binary.BigEndian.Uint32(p[0:])
			rp.msg = string(p[6 : 6+binary.BigEndian.Uint16(p[4:])])
		case replyTypeNone:
		default:
			return reply{}, fmt.Errorf("unexpected chunk type %d", typ)
		}
		return rp, nil
	}
	return reply{}, fmt.Errorf("bad reply magic % x", m)
}

// do sends one request and waits for its reply.
func (cl *client) do(typ, flags uint16, off uint64, length uint32, payload []byte) reply {
	cl.t.Helper()
	cl.send(typ, flags, 7, off, length, payload)
	rl := map[uint64]int{}
	if typ == CmdRead {
		rl[7] = int(length)
	}
	rp, err := cl.recv(rl)
	if err != nil {
		cl.t.Fatalf("reply to cmd %d: %v", typ, err)
	}
	if rp.handle != 7 {
		cl.t.Fatalf("reply handle %d, want 7", rp.handle)
	}
	return rp
}
