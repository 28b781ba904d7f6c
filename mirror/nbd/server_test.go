package nbd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHandshakeInfoAndGo(t *testing.T) {
	mem := newMem(1<<20, 512)
	_, sock := startServer(t, mem, Options{ExportName: "vol0", Description: "test volume", MaxPayload: 1 << 20})
	c := dialRaw(t, sock)
	r := bufio.NewReader(c)
	greet(t, c, r, clientFixedNewstyle|clientNoZeroes)

	sendOpt(t, c, optInfo, goPayload("vol0", infoName, infoDescription, infoBlockSize))
	seen := map[uint16][]byte{}
	for {
		rep := readOptReply(t, r)
		if rep.opt != optInfo {
			t.Fatalf("reply for option %d, want %d", rep.opt, optInfo)
		}
		if rep.typ == repAck {
			break
		}
		if rep.typ != repInfo {
			t.Fatalf("INFO reply type %#x", rep.typ)
		}
		seen[binary.BigEndian.Uint16(rep.data)] = rep.data[2:]
	}
	exp := seen[infoExport]
	if len(exp) != 10 || binary.BigEndian.Uint64(exp) != 1<<20 {
		t.Fatalf("NBD_INFO_EXPORT % x", exp)
	}
	flags := binary.BigEndian.Uint16(exp[8:])
	for _, f := range []uint16{FlagHasFlags, FlagSendFlush, FlagSendFUA, FlagSendTrim, FlagSendWriteZeroes, FlagCanMultiConn} {
		if flags&f == 0 {
			t.Errorf("transmission flags %#x lack %#x", flags, f)
		}
	}
	if flags&(FlagReadOnly|FlagSendDF) != 0 {
		t.Errorf("transmission flags %#x: read-only or DF without structured replies", flags)
	}
	bs := seen[infoBlockSize]
	if len(bs) != 12 || binary.BigEndian.Uint32(bs) != 512 || binary.BigEndian.Uint32(bs[4:]) != 4096 || binary.BigEndian.Uint32(bs[8:]) != 1<<20 {
		t.Errorf("block sizes % x, want 512/4096/1MiB", bs)
	}
	if string(seen[infoName]) != "vol0" || string(seen[infoDescription]) != "test volume" {
		t.Errorf("name %q description %q", seen[infoName], seen[infoDescription])
	}

	// Unknown export: an error, and the session goes on.
	sendOpt(t, c, optGo, goPayload("nope"))
	if rep := readOptReply(t, r); rep.typ != repErrUnknown || !strings.Contains(string(rep.data), "nope") {
		t.Fatalf("unknown export: %#x %q", rep.typ, rep.data)
	}
	// Malformed GO payload.
	sendOpt(t, c, optGo, []byte{0, 0, 0, 9})
	if rep := readOptReply(t, r); rep.typ != repErrInvalid {
		t.Fatalf("malformed GO: %#x", rep.typ)
	}
	// Unsupported options get ERR_UNSUP; TLS is refused by policy.
	for _, opt := range []uint32{optExtendedHeaders, optSetMetaContext, optListMetaContext, 4, 12345} {
		sendOpt(t, c, opt, []byte("xyz"))
		if rep := readOptReply(t, r); rep.typ != repErrUnsup || rep.opt != opt {
			t.Fatalf("option %d: reply %#x for %d", opt, rep.typ, rep.opt)
		}
	}
	sendOpt(t, c, optStartTLS, nil)
	if rep := readOptReply(t, r); rep.typ != repErrPolicy {
		t.Fatalf("STARTTLS: %#x", rep.typ)
	}
	// LIST names the export.
	sendOpt(t, c, optList, nil)
	rep := readOptReply(t, r)
	if rep.typ != repServer || binary.BigEndian.Uint32(rep.data) != 4 || string(rep.data[4:8]) != "vol0" {
		t.Fatalf("LIST: %#x % x", rep.typ, rep.data)
	}
	if rep := readOptReply(t, r); rep.typ != repAck {
		t.Fatalf("LIST end: %#x", rep.typ)
	}
	sendOpt(t, c, optList, []byte("x"))
	if rep := readOptReply(t, r); rep.typ != repErrInvalid {
		t.Fatalf("LIST with data: %#x", rep.typ)
	}
	// GO with the name enters transmission: a read works.
	sendOpt(t, c, optGo, goPayload("vol0"))
	for rep := readOptReply(t, r); rep.typ != repAck; rep = readOptReply(t, r) {
		if rep.typ != repInfo {
			t.Fatalf("GO: %#x", rep.typ)
		}
	}
	cl := &client{t: t, c: c, r: r}
	if rp := cl.do(CmdRead, 0, 0, 512, nil); rp.errno != 0 || len(rp.data) != 512 {
		t.Fatalf("read after GO: %+v", rp)
	}
	cl.send(CmdDisc, 0, 1, 0, 0, nil)
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("after DISC: %v, want EOF", err)
	}
}

func TestHandshakeExportNameAndAbort(t *testing.T) {
	mem := newMem(1<<20, 4096)
	_, sock := startServer(t, mem, Options{ExportName: "vol0"})

	// Old-fashioned EXPORT_NAME with the 124 zero bytes.
	c := dialRaw(t, sock)
	r := bufio.NewReader(c)
	greet(t, c, r, clientFixedNewstyle)
	sendOpt(t, c, optExportName, []byte("vol0"))
	var b [8 + 2 + 124]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint64(b[:]) != 1<<20 || !bytes.Equal(b[10:], make([]byte, 124)) {
		t.Fatalf("EXPORT_NAME reply % x", b[:16])
	}
	cl := &client{t: t, c: c, r: r}
	if rp := cl.do(CmdWrite, 0, 4096, 4096, bytes.Repeat([]byte{7}, 4096)); rp.errno != 0 {
		t.Fatalf("write: %+v", rp)
	}

	// Unknown name with EXPORT_NAME: the server must hang up.
	c2 := dialRaw(t, sock)
	r2 := bufio.NewReader(c2)
	greet(t, c2, r2, clientFixedNewstyle|clientNoZeroes)
	sendOpt(t, c2, optExportName, []byte("other"))
	if _, err := r2.ReadByte(); err != io.EOF {
		t.Fatalf("unknown EXPORT_NAME: %v, want EOF", err)
	}

	// ABORT is acknowledged, then the connection closes.
	c3 := dialRaw(t, sock)
	r3 := bufio.NewReader(c3)
	greet(t, c3, r3, clientFixedNewstyle|clientNoZeroes)
	sendOpt(t, c3, optAbort, nil)
	if rep := readOptReply(t, r3); rep.typ != repAck {
		t.Fatalf("ABORT: %#x", rep.typ)
	}
	if _, err := r3.ReadByte(); err != io.EOF {
		t.Fatalf("after ABORT: %v", err)
	}

	// Unknown client flags: disconnect.
	c4 := dialRaw(t, sock)
	r4 := bufio.NewReader(c4)
	greet(t, c4, r4, 1<<7)
	if _, err := r4.ReadByte(); err != io.EOF {
		t.Fatalf("unknown client flags: %v", err)
	}

	if got := mem.snapshot()[4096]; got != 7 {
		t.Fatalf("write through EXPORT_NAME session lost: %d", got)
	}
}

func TestCommandsAndErrors(t *testing.T) {
	for _, sr := range []bool{false, true} {
		name := "simple"
		if sr {
			name = "structured"
		}
		t.Run(name, func(t *testing.T) {
			mem := newMem(1<<20, 512)
			_, sock := startServer(t, mem, Options{MaxPayload: 64 << 10})
			cl := dial(t, sock, sr)
			if cl.size != 1<<20 {
				t.Fatalf("size %d", cl.size)
			}
			if sr != (cl.flag&FlagSendDF != 0) {
				t.Errorf("DF flag %v with structured replies %v", cl.flag&FlagSendDF != 0, sr)
			}
			data := make([]byte, 8192)
			for i := range data {
				data[i] = byte(i * 7)
			}
			if rp := cl.do(CmdWrite, CmdFlagFUA, 512, 8192, data); rp.errno != 0 {
				t.Fatalf("write: %+v", rp)
			}
			if mem.fuas.Load() != 1 {
				t.Errorf("FUA not passed to the backend")
			}
			if rp := cl.do(CmdRead, 0, 512, 8192, nil); rp.errno != 0 || !bytes.Equal(rp.data, data) {
				t.Fatalf("read back differs (errno %d)", rp.errno)
			}
			if rp := cl.do(CmdFlush, 0, 0, 0, nil); rp.errno != 0 || mem.flushes.Load() != 1 {
				t.Fatalf("flush: %+v, %d backend flushes", rp, mem.flushes.Load())
			}
			// WRITE_ZEROES punches unless NO_HOLE.
			if rp := cl.do(CmdWriteZeroes, CmdFlagNoHole, 512, 512, nil); rp.errno != 0 || mem.unmaps.Load() != 0 {
				t.Fatalf("write zeroes no-hole: %+v unmaps %d", rp, mem.unmaps.Load())
			}
			if rp := cl.do(CmdWriteZeroes, CmdFlagFUA, 1024, 512, nil); rp.errno != 0 || mem.unmaps.Load() != 1 || mem.flushes.Load() != 2 {
				t.Fatalf("write zeroes fua: %+v unmaps %d flushes %d", rp, mem.unmaps.Load(), mem.flushes.Load())
			}
			// TRIM zeroes only the whole blocks inside an unaligned range.
			if rp := cl.do(CmdTrim, 0, 1600, 1536, nil); rp.errno != 0 {
				t.Fatalf("trim: %+v", rp)
			}
			got := mem.snapshot()
			want := append([]byte(nil), data...)
			clear(want[0:1024])    // the two WRITE_ZEROES
			clear(want[1536:2560]) // blocks 2048..3072 of the export
			if !bytes.Equal(got[512:512+8192], want) {
				t.Fatalf("zero/trim touched the wrong bytes")
			}
			// Errors: each answered, the session goes on.
			for _, c := range []struct {
				typ, flags uint16
				off        uint64
				n          uint32
				payload    []byte
				errno      uint32
			}{
				{CmdRead, 0, 100, 512, nil, EINVAL},
				{CmdRead, 0, 1 << 20, 512, nil, EINVAL},
				{CmdWrite, 0, 1 << 20, 512, make([]byte, 512), ENOSPC},
				{CmdWrite, 0, 0, 100, make([]byte, 100), EINVAL},
				{CmdRead, 0, 0, 128 << 10, nil, EOVERFLOW},
				{CmdWrite, 0, 0, 128 << 10, make([]byte, 128<<10), EOVERFLOW},
				{CmdBlockStatus, 0, 0, 512, nil, EINVAL},
				{CmdRead, 1 << 12, 0, 512, nil, EINVAL},
			} {
				rp := cl.do(c.typ, c.flags, c.off, c.n, c.payload)
				if rp.errno != c.errno {
					t.Errorf("cmd %d off %d len %d: errno %d, want %d", c.typ, c.off, c.n, rp.errno, c.errno)
				}
				if sr && rp.msg == "" {
					t.Errorf("cmd %d: structured error without a message", c.typ)
				}
			}
			// Backend failures become EIO, and the session survives them.
			mem.failAt = 8192
			if rp := cl.do(CmdRead, 0, 8192, 512, nil); rp.errno != EIO {
				t.Errorf("backend read error: errno %d, want EIO", rp.errno)
			}
			if rp := cl.do(CmdWrite, 0, 8192, 512, make([]byte, 512)); rp.errno != EIO {
				t.Errorf("backend write error: errno %d, want EIO", rp.errno)
			}
			mem.failAt = -1
			if rp := cl.do(CmdRead, 0, 512, 8192, nil); rp.errno != 0 || !bytes.Equal(rp.data, want) {
				t.Fatalf("session broken after errors")
			}
		})
	}
}

func TestReadOnlyExport(t *testing.T) {
	mem := newMem(1<<20, 512)
	_, sock := startServer(t, mem, Options{ReadOnly: true})
	cl := dial(t, sock, true)
	if cl.flag&FlagReadOnly == 0 {
		t.Fatal("read-only export not advertised")
	}
	if rp := cl.do(CmdWrite, 0, 0, 512, bytes.Repeat([]byte{1}, 512)); rp.errno != EPERM {
		t.Fatalf("write on read-only export: errno %d", rp.errno)
	}
	if mem.snapshot()[0] != 0 {
		t.Fatal("read-only export was written")
	}
}

// Many requests in flight on one connection: every reply arrives whole,
// with the right handle and data.
func TestConcurrentRequestsOneConnection(t *testing.T) {
	mem := newMem(4<<20, 512)
	mem.delay = time.Millisecond
	_, sock := startServer(t, mem, Options{MaxInFlight: 16})
	cl := dial(t, sock, false)
	const n = 256
	rng := rand.New(rand.NewPCG(1, 2))
	blocks := make([][]byte, n)
	for i := range n {
		blocks[i] = make([]byte, 4096*(1+i%4))
		for j := range blocks[i] {
			blocks[i][j] = byte(rng.Uint32())
		}
	}
	// Write n blocks pipelined, then read them pipelined.
	var wbuf bytes.Buffer
	for i := range n {
		wbuf.Write(AppendRequest(nil, Request{Type: CmdWrite, Handle: uint64(i), Offset: uint64(i) * 16384, Length: uint32(len(blocks[i]))}))
		wbuf.Write(blocks[i])
	}
	go cl.c.Write(wbuf.Bytes())
	seen := map[uint64]bool{}
	for range n {
		rp, err := cl.recv(nil)
		if err != nil || rp.errno != 0 || seen[rp.handle] || rp.handle >= n {
			t.Fatalf("write reply %+v, %v", rp, err)
		}
		seen[rp.handle] = true
	}
	rl := map[uint64]int{}
	var rbuf bytes.Buffer
	for i := range n {
		rl[uint64(i)] = len(blocks[i])
		rbuf.Write(AppendRequest(nil, Request{Type: CmdRead, Handle: uint64(i), Offset: uint64(i) * 16384, Length: uint32(len(blocks[i]))}))
	}
	go cl.c.Write(rbuf.Bytes())
	for range n {
		rp, err := cl.recv(rl)
		if err != nil || rp.errno != 0 {
			t.Fatalf("read reply %+v, %v", rp, err)
		}
		if !bytes.Equal(rp.data, blocks[rp.handle]) {
			t.Fatalf("read %d returned other data", rp.handle)
		}
	}
}

// A hostile client is dropped; another client's session carries on.
func TestHostileClientsDoNotHarmOthers(t *testing.T) {
	mem := newMem(1<<20, 512)
	srv, sock := startServer(t, mem, Options{MaxPayload: 64 << 10})
	good := dial(t, sock, true)
	if rp := good.do(CmdWrite, 0, 0, 512, bytes.Repeat([]byte{9}, 512)); rp.errno != 0 {
		t.Fatal(rp)
	}
	hostile := map[string]func(t *testing.T){
		"garbage before greeting": func(t *testing.T) {
			c := dialRaw(t, sock)
			c.Write(bytes.Repeat([]byte("GET / HTTP/1.1\r\n"), 100))
			io.Copy(io.Discard, c)
		},
		"huge option": func(t *testing.T) {
			c := dialRaw(t, sock)
			r := bufio.NewReader(c)
			greet(t, c, r, clientFixedNewstyle)
			b := binary.BigEndian.AppendUint64(nil, magicIHaveOpt)
			b = binary.BigEndian.AppendUint32(b, optGo)
			b = binary.BigEndian.AppendUint32(b, 1<<31)
			c.Write(b)
			if _, err := r.ReadByte(); err != io.EOF {
				t.Errorf("huge option: %v, want EOF", err)
			}
		},
		"bad request magic": func(t *testing.T) {
			cl := dial(t, sock, false)
			cl.c.Write(bytes.Repeat([]byte{0xAB}, 28))
			if _, err := cl.r.ReadByte(); err != io.EOF {
				t.Errorf("bad magic: %v, want EOF", err)
			}
		},
		"4 GiB write payload": func(t *testing.T) {
			cl := dial(t, sock, false)
			cl.send(CmdWrite, 0, 1, 0, 0xFFFFFFFF, nil)
			if _, err := cl.r.ReadByte(); err != io.EOF {
				t.Errorf("oversized write: %v, want EOF", err)
			}
		},
		"hang up mid-request": func(t *testing.T) {
			cl := dial(t, sock, false)
			cl.c.Write(AppendRequest(nil, Request{Type: CmdWrite, Handle: 1, Length: 4096})[:20])
			cl.c.Close()
		},
		"hang up with reads in flight": func(t *testing.T) {
			cl := dial(t, sock, false)
			for i := range 32 {
				cl.send(CmdRead, 0, uint64(i), 0, 64<<10, nil)
			}
			cl.c.Close()
		},
	}
	for name, f := range hostile {
		t.Run(name, f)
		if rp := good.do(CmdRead, 0, 0, 512, nil); rp.errno != 0 || rp.data[0] != 9 {
			t.Fatalf("after %s: good client broken: %+v", name, rp)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.Connections() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open, want only the good one", srv.Connections())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Shutdown answers every request already read before closing.
func TestShutdownDrains(t *testing.T) {
	mem := newMem(1<<20, 512)
	mem.delay = 50 * time.Millisecond
	srv, err := NewServer(mem, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ln, err := Listen("unix:" + dir + "/s")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir + "/s"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	go srv.Serve(ln)
	cl := dial(t, dir+"/s", false)
	const n = 8
	for i := range n {
		cl.send(CmdWrite, 0, uint64(i), uint64(i)*512, 512, bytes.Repeat([]byte{byte(i + 1)}, 512))
	}
	time.Sleep(20 * time.Millisecond) // let the server read them (the test of draining, not of timing)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}()
	got := 0
	for {
		rp, err := cl.recv(nil)
		if err != nil {
			break
		}
		if rp.errno != 0 {
			t.Errorf("reply %d errno %d", rp.handle, rp.errno)
		}
		got++
	}
	wg.Wait()
	if got != n {
		t.Fatalf("%d of %d writes answered before close", got, n)
	}
	snap := mem.snapshot()
	for i := range n {
		if snap[i*512] != byte(i+1) {
			t.Fatalf("write %d not applied", i)
		}
	}
	if _, err := Listen("unix:" + dir + "/s"); err != nil {
		t.Fatalf("stale socket not reusable: %v", err)
	}
}

func TestNewServerRejectsBadGeometry(t *testing.T) {
	for _, m := range []*memBackend{newMem(1000, 512), newMem(4096, 3), newMem(0, 512)} {
		if _, err := NewServer(m, Options{}); err == nil {
			t.Errorf("size %d block %d accepted", m.Size(), m.block)
		}
	}
	if _, err := Listen("udp:1.2.3.4:5"); err == nil {
		t.Error("udp listen address accepted")
	}
}

// barrierBackend blocks every write until `want` writes are inside WriteAt
// at once: a server that served one connection's requests one by one
// would never get there.
type barrierBackend struct {
	*memBackend
	mu      sync.Mutex
	inside  int
	maxSeen int
	want    int
	release chan struct{}
}

func (b *barrierBackend) WriteAt(p []byte, off int64, fua bool) error {
	b.mu.Lock()
	b.inside++
	b.maxSeen = max(b.maxSeen, b.inside)
	if b.inside == b.want {
		close(b.release)
	}
	b.mu.Unlock()
	select {
	case <-b.release:
	case <-time.After(10 * time.Second):
	}
	b.mu.Lock()
	b.inside--
	b.mu.Unlock()
	return b.memBackend.WriteAt(p, off, fua)
}

func TestRequestsOfOneConnectionRunConcurrently(t *testing.T) {
	b := &barrierBackend{memBackend: newMem(1<<20, 512), want: 4, release: make(chan struct{})}
	_, sock := startServer(t, b, Options{})
	cl := dial(t, sock, false)
	for i := range 4 {
		cl.send(CmdWrite, 0, uint64(i), uint64(i)*4096, 4096, make([]byte, 4096))
	}
	for range 4 {
		if rp, err := cl.recv(nil); err != nil || rp.errno != 0 {
			t.Fatalf("reply %+v %v", rp, err)
		}
	}
	if b.maxSeen < 4 {
		t.Fatalf("at most %d writes ran at once; the server serialised the connection", b.maxSeen)
	}
}
