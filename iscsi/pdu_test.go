package iscsi

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// RFC 3720 appendix B.4 CRC32C vectors.
func TestCRC32CVectors(t *testing.T) {
	seq := make([]byte, 32)
	for i := range seq {
		seq[i] = byte(i)
	}
	cases := []struct {
		in   []byte
		want uint32
	}{
		{make([]byte, 32), 0x8a9136aa},
		{bytes.Repeat([]byte{0xff}, 32), 0x62a8ab43},
		{seq, 0x46dd794e},
	}
	for _, c := range cases {
		if got := crc32c(c.in); got != c.want {
			t.Errorf("crc32c(%x...) = %#x, want %#x", c.in[:4], got, c.want)
		}
	}
}

func samplePDU() *PDU {
	c := scsiCommand{Final: true, Write: true, LUN: 3, ITT: 9, ExpectedLength: 5, CmdSN: 77, ExpStatSN: 5,
		CDB: cdbRW16(scsiWrite16, 1, 1, true), Data: []byte("hello")}
	p, _ := c.encode()
	return p
}

func TestPDURoundTrip(t *testing.T) {
	for _, d := range []Digests{{}, {Header: true}, {Data: true}, {Header: true, Data: true}} {
		p := samplePDU()
		wire, err := p.Marshal(nil, d)
		if err != nil {
			t.Fatal(err)
		}
		want := 48 + 8 // header + padded data
		if d.Header {
			want += 4
		}
		if d.Data {
			want += 4
		}
		if len(wire) != want {
			t.Fatalf("%+v: %d bytes on the wire, want %d", d, len(wire), want)
		}
		got, err := ReadPDU(bytes.NewReader(wire), d, 1024)
		if err != nil {
			t.Fatalf("%+v: %v", d, err)
		}
		if got.BHS != p.BHS || !bytes.Equal(got.Data, p.Data) {
			t.Fatalf("%+v: round trip differs", d)
		}
		if got.ITT() != 9 || got.Opcode() != opSCSICommand || got.BHS[1]&0x20 == 0 {
			t.Fatalf("decoded fields wrong: %x", got.BHS[:20])
		}
		if decodeLUN(got.BHS[8:16]) != 3 {
			t.Fatalf("LUN %d", decodeLUN(got.BHS[8:16]))
		}
	}
}

func TestPDUDigestMismatch(t *testing.T) {
	d := Digests{Header: true, Data: true}
	wire, _ := samplePDU().Marshal(nil, d)
	for _, pos := range []int{10, 48, 53, 60} { // header, header digest, data, data digest
		bad := append([]byte(nil), wire...)
		bad[pos] ^= 1
		_, err := ReadPDU(bytes.NewReader(bad), d, 1024)
		if pos == 10 || pos == 48 {
			if !errors.Is(err, ErrDigest) {
				t.Errorf("flip at %d: %v, want ErrDigest", pos, err)
			}
			continue
		}
		if !errors.Is(err, ErrDigest) {
			t.Errorf("flip at %d: %v, want ErrDigest", pos, err)
		}
	}
}

func TestPDULengthChecks(t *testing.T) {
	wire, _ := samplePDU().Marshal(nil, Digests{})
	if _, err := ReadPDU(bytes.NewReader(wire), Digests{}, 4); !errors.Is(err, ErrProtocol) {
		t.Fatalf("data segment above the limit: %v, want ErrProtocol", err)
	}
	for n := 1; n < len(wire); n += 7 {
		_, err := ReadPDU(bytes.NewReader(wire[:n]), Digests{}, 1024)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("truncated at %d: %v, want ErrUnexpectedEOF", n, err)
		}
	}
	if _, err := ReadPDU(bytes.NewReader(nil), Digests{}, 1024); err != io.EOF {
		t.Fatalf("empty stream: %v, want io.EOF", err)
	}
	p := &PDU{AHS: make([]byte, 3)}
	if _, err := p.Marshal(nil, Digests{}); err == nil {
		t.Fatal("AHS of 3 bytes marshalled")
	}
	// AHS is read and skipped correctly.
	p = samplePDU()
	p.AHS = []byte{0, 2, 1, 0, 0, 0, 0, 0}
	wire, _ = p.Marshal(nil, Digests{Header: true})
	got, err := ReadPDU(bytes.NewReader(wire), Digests{Header: true}, 1024)
	if err != nil || !bytes.Equal(got.AHS, p.AHS) || string(got.Data) != "hello" {
		t.Fatalf("PDU with AHS: %v %x %q", err, got.AHS, got.Data)
	}
}

func TestLUNEncoding(t *testing.T) {
	for _, lun := range []uint64{0, 1, 255, 256, 1000, 16383} {
		b := encodeLUN(lun)
		if got := decodeLUN(b[:]); got != lun {
			t.Errorf("LUN %d round-trips to %d (%x)", lun, got, b)
		}
	}
	if b := encodeLUN(1000); b[0] != 0x43 || b[1] != 0xe8 {
		t.Errorf("LUN 1000 flat space encoding %x", b[:2])
	}
}

func TestDecodeTypedPDUsRejectMalformed(t *testing.T) {
	resp := &PDU{}
	resp.BHS[0], resp.BHS[1] = opSCSIResponse, 0x80
	resp.Data = []byte{0, 10, 1}
	if _, err := decodeSCSIResponse(resp); !errors.Is(err, ErrProtocol) {
		t.Errorf("SenseLength beyond data: %v", err)
	}
	resp.Data = []byte{0}
	if _, err := decodeSCSIResponse(resp); !errors.Is(err, ErrProtocol) {
		t.Errorf("1-byte data segment: %v", err)
	}
	resp.Data, resp.BHS[1] = nil, 0x86
	if _, err := decodeSCSIResponse(resp); !errors.Is(err, ErrProtocol) {
		t.Errorf("overflow and underflow: %v", err)
	}
	resp.BHS[1] = 0
	if _, err := decodeSCSIResponse(resp); !errors.Is(err, ErrProtocol) {
		t.Errorf("no F bit: %v", err)
	}
	r := &PDU{}
	r.BHS[0] = opR2T
	if _, err := decodeR2T(r); !errors.Is(err, ErrProtocol) {
		t.Errorf("R2T for 0 bytes: %v", err)
	}
	r.put32(44, 10)
	r.put32(20, reservedTag)
	if _, err := decodeR2T(r); !errors.Is(err, ErrProtocol) {
		t.Errorf("R2T with reserved TTT: %v", err)
	}
	di := &PDU{}
	di.BHS[0], di.BHS[1] = opDataIn, 0x01
	if _, err := decodeDataIn(di, 0); !errors.Is(err, ErrProtocol) {
		t.Errorf("Data-In with S but not F: %v", err)
	}
	rej := &PDU{Data: make([]byte, 20)}
	rej.BHS[0] = opReject
	if _, err := decodeReject(rej); !errors.Is(err, ErrProtocol) {
		t.Errorf("short Reject: %v", err)
	}
	lr := &PDU{}
	lr.BHS[0], lr.BHS[1] = opLoginResp, 0xc0
	if _, err := decodeLoginResponse(lr); !errors.Is(err, ErrProtocol) {
		t.Errorf("login response with T and C: %v", err)
	}
	lr.BHS[1], lr.BHS[3] = 0x80, 1
	if _, err := decodeLoginResponse(lr); !errors.Is(err, ErrProtocol) {
		t.Errorf("login response version 1: %v", err)
	}
	if _, err := decodeNOPIn(resp); !errors.Is(err, ErrProtocol) {
		t.Errorf("wrong opcode: %v", err)
	}
}

func TestTextCodec(t *testing.T) {
	pairs := []kv{{"TargetName", "iqn.2026-01.x:y"}, {"MaxBurstLength", "262144"}, {"Empty", ""}}
	got, err := decodeText(append(encodeText(pairs), 0, 0))
	if err != nil || len(got) != 3 || got[1] != pairs[1] || got[2] != pairs[2] {
		t.Fatalf("round trip: %v %v", got, err)
	}
	bad := [][]byte{
		[]byte("Key=value"),     // not terminated
		[]byte("novalue\x00"),   // no '='
		[]byte("=value\x00"),    // empty key
		[]byte("bad key=1\x00"), // space in key
		append(bytes.Repeat([]byte("k"), 64), "=1\x00"...),
		append([]byte("k="), append(bytes.Repeat([]byte("v"), 8193), 0)...),
	}
	for _, b := range bad {
		if _, err := decodeText(b); !errors.Is(err, ErrProtocol) {
			t.Errorf("decodeText(%.20q): %v, want ErrProtocol", b, err)
		}
	}
	targets, err := parseSendTargets(encodeText([]kv{
		{"TargetName", "iqn.a"}, {"TargetAddress", "10.0.0.1:3260,1"}, {"TargetAddress", "[::1]:3260,1"},
		{"TargetName", "iqn.b"},
	}))
	if err != nil || len(targets) != 2 || len(targets[0].Addresses) != 2 || targets[1].Name != "iqn.b" {
		t.Fatalf("SendTargets: %+v %v", targets, err)
	}
	if _, err := parseSendTargets(encodeText([]kv{{"TargetAddress", "x"}})); !errors.Is(err, ErrProtocol) {
		t.Fatalf("address before name: %v", err)
	}
}
