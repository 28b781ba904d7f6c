package nbd

import (
	"bytes"
	"errors"
	"testing"
)

func TestDecodeRequestRoundTrip(t *testing.T) {
	want := Request{Flags: CmdFlagFUA, Type: CmdWrite, Handle: 0x0102030405060708, Offset: 1 << 40, Length: 65536}
	b := AppendRequest(nil, want)
	if len(b) != requestSize {
		t.Fatalf("encoded %d bytes, want %d", len(b), requestSize)
	}
	got, err := DecodeRequest(b)
	if err != nil || got != want {
		t.Fatalf("DecodeRequest = %+v, %v; want %+v", got, err, want)
	}
}

func TestDecodeRequestRejectsBadFraming(t *testing.T) {
	good := AppendRequest(nil, Request{Type: CmdRead, Length: 512})
	if _, err := DecodeRequest(good[:27]); err == nil {
		t.Error("short header accepted")
	}
	if _, err := DecodeRequest(append(good, 0)); err == nil {
		t.Error("long header accepted")
	}
	bad := bytes.Clone(good)
	bad[0] ^= 0xff
	if _, err := DecodeRequest(bad); !errors.Is(err, ErrBadMagic) {
		t.Errorf("bad magic: err = %v, want ErrBadMagic", err)
	}
}

func TestValidate(t *testing.T) {
	l := limits{size: 1 << 20, minBlock: 512, maxPayload: 64 << 10}
	ro := l
	ro.readOnly = true
	sr := l
	sr.structured = true
	cases := []struct {
		name  string
		lim   limits
		req   Request
		errno uint32
	}{
		{"read ok", l, Request{Type: CmdRead, Offset: 4096, Length: 4096}, 0},
		{"read with FUA is accepted", l, Request{Type: CmdRead, Flags: CmdFlagFUA, Length: 512}, 0},
		{"write fua", l, Request{Type: CmdWrite, Flags: CmdFlagFUA, Offset: 512, Length: 512}, 0},
		{"write at end", l, Request{Type: CmdWrite, Offset: 1<<20 - 512, Length: 512}, 0},
		{"read past end", l, Request{Type: CmdRead, Offset: 1<<20 - 512, Length: 1024}, EINVAL},
		{"write past end", l, Request{Type: CmdWrite, Offset: 1 << 20, Length: 512}, ENOSPC},
		{"offset overflow", l, Request{Type: CmdWrite, Offset: ^uint64(0) - 100, Length: 512}, ENOSPC},
		{"misaligned offset", l, Request{Type: CmdRead, Offset: 100, Length: 512}, EINVAL},
		{"misaligned length", l, Request{Type: CmdWrite, Offset: 0, Length: 100}, EINVAL},
		{"misaligned zeroes", l, Request{Type: CmdWriteZeroes, Offset: 1, Length: 512}, EINVAL},
		{"misaligned trim is fine", l, Request{Type: CmdTrim, Offset: 1, Length: 700}, 0},
		{"trim past end", l, Request{Type: CmdTrim, Offset: 1 << 20, Length: 1}, ENOSPC},
		{"zero length", l, Request{Type: CmdRead, Length: 0}, EINVAL},
		{"oversized read", l, Request{Type: CmdRead, Length: 128 << 10}, EOVERFLOW},
		{"oversized write", l, Request{Type: CmdWrite, Length: 128 << 10}, EOVERFLOW},
		{"big zeroes are fine", l, Request{Type: CmdWriteZeroes, Length: 1 << 20}, 0},
		{"zeroes no-hole", l, Request{Type: CmdWriteZeroes, Flags: CmdFlagNoHole, Length: 512}, 0},
		{"no-hole on write", l, Request{Type: CmdWrite, Flags: CmdFlagNoHole, Length: 512}, EINVAL},
		{"DF without structured", l, Request{Type: CmdRead, Flags: CmdFlagDF, Length: 512}, EINVAL},
		{"DF with structured", sr, Request{Type: CmdRead, Flags: CmdFlagDF, Length: 512}, 0},
		{"fast zero not offered", l, Request{Type: CmdWriteZeroes, Flags: CmdFlagFastZero, Length: 512}, EINVAL},
		{"unknown flag", l, Request{Type: CmdRead, Flags: 1 << 9, Length: 512}, EINVAL},
		{"flush", l, Request{Type: CmdFlush}, 0},
		{"flush with range", l, Request{Type: CmdFlush, Length: 512}, EINVAL},
		{"cache unsupported", l, Request{Type: CmdCache, Length: 512}, EINVAL},
		{"block status unsupported", l, Request{Type: CmdBlockStatus, Length: 512}, EINVAL},
		{"unknown command", l, Request{Type: 99}, EINVAL},
		{"read-only write", ro, Request{Type: CmdWrite, Length: 512}, EPERM},
		{"read-only trim", ro, Request{Type: CmdTrim, Length: 512}, EPERM},
		{"read-only read", ro, Request{Type: CmdRead, Length: 512}, 0},
		{"read-only flush", ro, Request{Type: CmdFlush}, 0},
	}
	for _, c := range cases {
		v := c.lim.validate(c.req)
		if v.errno != c.errno {
			t.Errorf("%s: errno %d (%s), want %d", c.name, v.errno, v.reason, c.errno)
		}
		if v.errno != 0 && v.reason == "" {
			t.Errorf("%s: error without a reason", c.name)
		}
	}
}

func TestDecodeInfoRequest(t *testing.T) {
	got, err := decodeInfoRequest(goPayload("vol", infoBlockSize, infoName))
	if err != nil || got.name != "vol" || len(got.infos) != 2 || got.infos[0] != infoBlockSize || got.infos[1] != infoName {
		t.Fatalf("decode = %+v, %v", got, err)
	}
	bad := map[string][]byte{
		"empty":           nil,
		"short":           {0, 0, 0, 0, 0},
		"name overruns":   {0, 0, 0, 9, 'a', 0, 0},
		"huge name":       {0xff, 0xff, 0xff, 0xff, 0, 0},
		"missing infos":   {0, 0, 0, 0, 0, 2, 0, 3},
		"trailing bytes":  append(goPayload("", infoName), 0),
		"odd info length": {0, 0, 0, 0, 0, 1, 0},
	}
	for name, b := range bad {
		if _, err := decodeInfoRequest(b); err == nil {
			t.Errorf("%s: accepted % x", name, b)
		}
	}
}

func TestReplyEncodings(t *testing.T) {
	s := appendSimpleReply(nil, EIO, 42)
	want := []byte{0x67, 0x44, 0x66, 0x98, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 42}
	if !bytes.Equal(s, want) {
		t.Errorf("simple reply % x, want % x", s, want)
	}
	e := appendErrorChunk(nil, 9, EINVAL, "bad")
	if len(e) != 20+6+3 || e[4] != 0 || e[5] != replyFlagDone || e[6] != 0x80 || e[7] != 1 {
		t.Errorf("error chunk % x", e)
	}
	long := appendErrorChunk(nil, 9, EINVAL, string(make([]byte, 10000)))
	if len(long) != 20+6+4096 {
		t.Errorf("error message not capped: %d bytes", len(long))
	}
	o := appendOptReply(nil, optGo, repErrUnsup, []byte("x"))
	if len(o) != 21 || o[12] != 0x80 || o[15] != 1 || o[19] != 1 {
		t.Errorf("option reply % x", o)
	}
}

func TestBufPoolAlignedAndSized(t *testing.T) {
	p := newBufPool()
	for _, n := range []int{1, 512, 4096, 4097, 65536, 1 << 20, 32 << 20, 40 << 20} {
		b := p.get(n)
		if len(b) != n {
			t.Fatalf("get(%d) has length %d", n, len(b))
		}
		if addr := uintptrOf(b); addr%4096 != 0 {
			t.Fatalf("get(%d) not 4096-aligned: %#x", n, addr)
		}
		p.put(b)
	}
}
