package nbd

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// FuzzDecodeRequest: the request decoder and validator never panic, accept
// only well-framed headers, and what they accept round-trips.
func FuzzDecodeRequest(f *testing.F) {
	f.Add(AppendRequest(nil, Request{Type: CmdWrite, Flags: CmdFlagFUA, Handle: 1, Offset: 4096, Length: 4096}))
	f.Add(AppendRequest(nil, Request{Type: CmdRead, Offset: ^uint64(0), Length: ^uint32(0)}))
	f.Add(AppendRequest(nil, Request{Type: CmdWriteZeroes, Flags: CmdFlagNoHole | CmdFlagFastZero}))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err != nil {
			return
		}
		if !bytes.Equal(AppendRequest(nil, r), b) {
			t.Fatalf("round trip of % x differs", b)
		}
		l := limits{size: 1 << 30, minBlock: 512, maxPayload: 32 << 20}
		v := l.validate(r)
		if v.errno == 0 && r.Type != CmdFlush && r.Type != CmdDisc {
			end := r.Offset + uint64(r.Length)
			if r.Length == 0 || end < r.Offset || end > l.size {
				t.Fatalf("out-of-range request accepted: %+v", r)
			}
			if (r.Type == CmdRead || r.Type == CmdWrite) && r.Length > l.maxPayload {
				t.Fatalf("oversized request accepted: %+v", r)
			}
		}
	})
}

// FuzzInfoRequest: the NBD_OPT_INFO/GO payload decoder is strict and total.
func FuzzInfoRequest(f *testing.F) {
	f.Add(goPayload("vol0", infoBlockSize, infoName))
	f.Add(goPayload(""))
	f.Add([]byte{0xff, 0xff, 0xff, 0xfa, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeInfoRequest(b)
		if err != nil {
			return
		}
		if !bytes.Equal(goPayload(req.name, req.infos...), b) {
			t.Fatalf("accepted payload % x does not re-encode to itself", b)
		}
	})
}

// FuzzSession feeds arbitrary client bytes to a whole server connection
// (handshake and transmission): it must never panic or hang, and the
// server must stay able to serve a well-behaved client afterwards.
func FuzzSession(f *testing.F) {
	var hello []byte
	hello = binary.BigEndian.AppendUint32(hello, clientFixedNewstyle|clientNoZeroes)
	opt := func(b []byte, o uint32, data []byte) []byte {
		b = binary.BigEndian.AppendUint64(b, magicIHaveOpt)
		b = binary.BigEndian.AppendUint32(b, o)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	goNow := opt(append([]byte(nil), hello...), optGo, goPayload(""))
	srGo := opt(opt(append([]byte(nil), hello...), optStructuredReply, nil), optGo, goPayload("", infoBlockSize))
	f.Add(hello)
	f.Add(opt(append([]byte(nil), hello...), optList, nil))
	f.Add(opt(append([]byte(nil), hello...), optExportName, nil))
	f.Add(append(append([]byte(nil), goNow...), AppendRequest(nil, Request{Type: CmdRead, Length: 512})...))
	w := AppendRequest(append([]byte(nil), srGo...), Request{Type: CmdWrite, Handle: 3, Offset: 512, Length: 512})
	w = append(w, make([]byte, 512)...)
	w = AppendRequest(w, Request{Type: CmdFlush, Handle: 4})
	w = AppendRequest(w, Request{Type: CmdDisc})
	f.Add(w)
	f.Add(AppendRequest(append([]byte(nil), goNow...), Request{Type: CmdWrite, Length: 1 << 20}))

	mem := newMem(64<<10, 512)
	srv, err := NewServer(mem, Options{MaxPayload: 16 << 10, HandshakeTimeout: time.Second})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		cs, ss := net.Pipe()
		done := make(chan struct{})
		go func() {
			srv.ServeConn(ss)
			close(done)
		}()
		go io.Copy(io.Discard, cs)
		cs.SetWriteDeadline(time.Now().Add(2 * time.Second))
		cs.Write(in)
		cs.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("server connection did not end after the client closed")
		}
	})
}
