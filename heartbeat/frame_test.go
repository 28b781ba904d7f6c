package heartbeat

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func sampleFrame() Frame {
	return Frame{Type: MsgHeartbeat, Boot: 1700000000123456789, Seq: 42, Nonce: 0x0123456789abcdef, From: "node1", Medium: "nic1",
		Echo:    []uint64{0xfedcba9876543210},
		Payload: sampleHeartbeat().MarshalBinary()}
}

func sampleHeartbeat() Heartbeat {
	return Heartbeat{Round: 77, Term: 5, Role: RoleActive, HasPing: true, Eligible: true, PingScore: 2, TableVersion: 9, App: []byte("group=running")}
}

func TestFrameRoundTrip(t *testing.T) {
	c := NewCodec("pair", simKey)
	f := sampleFrame()
	b, err := c.Encode(f)
	if err != nil {
		t.Fatal(err)
	}
	got, end, err := c.Decode(b)
	f.Cluster = "pair"
	if err != nil || end != len(b) || !reflect.DeepEqual(got, f) {
		t.Fatalf("decode: %v %d\n got %+v\nwant %+v", err, end, got, f)
	}
	hb, err := UnmarshalHeartbeat(got.Payload)
	if err != nil || !reflect.DeepEqual(hb, sampleHeartbeat()) {
		t.Errorf("heartbeat %+v %v", hb, err)
	}
}

func TestFrameRefusesTamperingEveryByte(t *testing.T) {
	c := NewCodec("pair", simKey)
	b, _ := c.Encode(sampleFrame())
	for i := range b {
		for _, bit := range []byte{0x01, 0x80} {
			x := bytes.Clone(b)
			x[i] ^= bit
			if _, _, err := c.Decode(x); err == nil {
				t.Fatalf("flipping bit %#x of byte %d was accepted", bit, i)
			}
		}
	}
	for i := range b {
		if _, _, err := c.Decode(b[:i]); err == nil {
			t.Fatalf("frame truncated to %d bytes accepted", i)
		}
	}
}

func TestFrameWrongKeyAndCluster(t *testing.T) {
	b, _ := NewCodec("pair", []byte("another key, 32 bytes long......")).Encode(sampleFrame())
	if _, _, err := NewCodec("pair", simKey).Decode(b); !errors.Is(err, ErrAuth) {
		t.Errorf("wrong key: %v", err)
	}
	b, _ = NewCodec("other", simKey).Encode(sampleFrame())
	if _, _, err := NewCodec("pair", simKey).Decode(b); !errors.Is(err, ErrCluster) {
		t.Errorf("other cluster with our key: %v", err)
	}
}

func TestFrameEncodeLimits(t *testing.T) {
	c := NewCodec("pair", simKey)
	f := sampleFrame()
	f.Payload = make([]byte, MaxFrame)
	if _, err := c.Encode(f); err == nil {
		t.Error("oversized frame encoded")
	}
	f = sampleFrame()
	f.From = ""
	if _, err := c.Encode(f); err == nil {
		t.Error("empty sender encoded")
	}
}

// TestFrameNoncesRoundTrip: the run nonce and every echo survive the
// wire, with none, one and the most echoes a frame may carry.
func TestFrameNoncesRoundTrip(t *testing.T) {
	c := NewCodec("pair", simKey)
	for _, n := range []int{0, 1, MaxEcho} {
		f := sampleFrame()
		f.Echo = nil
		for i := range n {
			f.Echo = append(f.Echo, uint64(i)*0x100000001+1)
		}
		b, err := c.Encode(f)
		if err != nil {
			t.Fatalf("%d echoes: %v", n, err)
		}
		got, end, err := c.Decode(b)
		if err != nil || end != len(b) || got.Nonce != f.Nonce || !reflect.DeepEqual(got.Echo, f.Echo) {
			t.Fatalf("%d echoes: got nonce %#x echo %v (%v), want %#x %v", n, got.Nonce, got.Echo, err, f.Nonce, f.Echo)
		}
	}
}

// TestFrameNoncesStrict: a zero run nonce, a zero or repeated echo and
// too many echoes are refused on both sides; so are echo counts that
// overrun the frame (re-signed, so only the length check can catch them).
func TestFrameNoncesStrict(t *testing.T) {
	c := NewCodec("pair", simKey)
	bad := []func(*Frame){
		func(f *Frame) { f.Nonce = 0 },
		func(f *Frame) { f.Echo = []uint64{0} },
		func(f *Frame) { f.Echo = []uint64{7, 8, 7} },
		func(f *Frame) { f.Echo = make([]uint64, MaxEcho+1) },
	}
	for i, mod := range bad {
		f := sampleFrame()
		mod(&f)
		if _, err := c.Encode(f); !errors.Is(err, ErrMalformed) {
			t.Errorf("case %d encoded: %v", i, err)
		}
	}
	// Build the bad frames by hand: a good frame, the field changed, the
	// MAC recomputed, so the decoder's own checks must refuse them.
	good, _ := c.Encode(sampleFrame())
	echoAt := headerLen + 1 + len("pair") + 1 + len("node1") + 1 + len("nic1")
	resign := func(b []byte) []byte {
		b = b[:len(b)-macLen]
		m := hmac.New(sha256.New, simKey)
		m.Write(b)
		return m.Sum(b)
	}
	cases := map[string]func([]byte) []byte{
		"zero nonce":      func(b []byte) []byte { copy(b[24:32], make([]byte, 8)); return b },
		"zero echo":       func(b []byte) []byte { copy(b[echoAt+1:], make([]byte, 8)); return b },
		"echo overrun":    func(b []byte) []byte { b[echoAt] = 9; return b },
		"too many echoes": func(b []byte) []byte { b[echoAt] = MaxEcho + 1; return b },
		"version 1":       func(b []byte) []byte { b[4] = 1; return b },
	}
	for name, mod := range cases {
		b := resign(mod(bytes.Clone(good)))
		if _, _, err := c.Decode(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: decoded (%v)", name, err)
		}
	}
	if _, _, err := c.Decode(resign(bytes.Clone(good))); err != nil {
		t.Fatalf("re-signing alone broke the frame: %v", err)
	}
}

// TestHeartbeatPayloadRoundTrip: every field survives, with no app
// state, a little and the most a node may send.
func TestHeartbeatPayloadRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, MaxAppState} {
		h := sampleHeartbeat()
		h.App = nil
		if n > 0 {
			h.App = bytes.Repeat([]byte{0xa5}, n)
		}
		b := h.MarshalBinary()
		got, err := UnmarshalHeartbeat(b)
		if err != nil || !reflect.DeepEqual(got, h) || len(b) != heartbeatFixed+n {
			t.Errorf("%d bytes of app state: got %+v (%v), %d bytes on the wire", n, got, err, len(b))
		}
	}
}

// TestHeartbeatPayloadStrict: wrong lengths, unknown roles and flags and
// an app state over the limit are refused.
func TestHeartbeatPayloadStrict(t *testing.T) {
	good := Heartbeat{Role: RoleStandby, App: []byte("abc")}.MarshalBinary()
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	big := Heartbeat{App: make([]byte, MaxAppState+1)}.MarshalBinary() // MarshalBinary does not check
	for name, bad := range map[string][]byte{
		"short":          good[:heartbeatFixed-1],
		"app cut":        good[:len(good)-1],
		"trailing":       append(bytes.Clone(good), 0),
		"role 3":         mod(func(b []byte) []byte { b[16] = 3; return b }),
		"unknown flag":   mod(func(b []byte) []byte { b[17] |= 4; return b }),
		"app over limit": big,
		"app length":     mod(func(b []byte) []byte { b[28] = 2; return b }),
		"term too large": Heartbeat{Term: maxTerm + 1}.MarshalBinary(), // a restart would refuse it as corrupt
		"v2 payload":     {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		// round, role, flags, ping, table version, app length, app "abc":
		// the layout before the term
		"without term": append(append(make([]byte, 8), 1, 2, 0), append(make([]byte, 9), 3, 'a', 'b', 'c')...),
	} {
		if _, err := UnmarshalHeartbeat(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %x accepted: %v", name, bad, err)
		}
	}
}

// TestOldFrameVersionsRefused: the seeds of frame versions 1 and 2 kept
// in testdata/fuzz are refused, and the message says why.
func TestOldFrameVersionsRefused(t *testing.T) {
	c := NewCodec("pair", simKey)
	for name, version := range map[string]string{"heartbeat": "version 1", "heartbeat-v2": "version 2",
		"heartbeat-v2-no-echo": "version 2", "table-v2": "version 2"} {
		b := readSeed(t, "FuzzDecodeFrame", name)
		if _, _, err := c.Decode(b); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), version+", this node speaks 3") {
			t.Errorf("seed %s: %v", name, err)
		}
	}
}

// readSeed reads one seed of a []byte corpus in testdata/fuzz.
func readSeed(t *testing.T, fuzz, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "fuzz", fuzz, name))
	if err != nil {
		t.Fatal(err)
	}
	_, lit, _ := strings.Cut(string(raw), "[]byte(")
	lit, _, _ = strings.Cut(lit, ")\n")
	b, err := strconv.Unquote(lit)
	if err != nil {
		t.Fatalf("seed %s: %v", name, err)
	}
	return []byte(b)
}

// writeSeeds keeps the seed corpus in testdata/fuzz in sync (go test
// reads testdata/fuzz/FuzzXxx/* as seeds); it only adds missing files.
func writeSeed(t testing.TB, fuzz string, name string, b []byte) {
	dir := filepath.Join("testdata", "fuzz", fuzz)
	path := filepath.Join(dir, name)
	if _, err := os.Stat(path); err == nil {
		return
	}
	os.MkdirAll(dir, 0o755)
	os.WriteFile(path, []byte("go test fuzz v1\n[]byte("+quoteGo(b)+")\n"), 0o644)
}

func quoteGo(b []byte) string {
	var s bytes.Buffer
	s.WriteByte('"')
	for _, c := range b {
		s.WriteString(`\x`)
		s.WriteByte("0123456789abcdef"[c>>4])
		s.WriteByte("0123456789abcdef"[c&15])
	}
	s.WriteByte('"')
	return s.String()
}

func FuzzDecodeFrame(f *testing.F) {
	c := NewCodec("pair", simKey)
	b, _ := c.Encode(sampleFrame())
	f.Add(b)
	tb := BuildTable([]NodeID{"a", "b"}, nil, "a", 1)
	b2, _ := c.Encode(Frame{Type: MsgTable, Boot: 1, Seq: 2, Nonce: 7, Echo: []uint64{1, 2, 3}, From: "a", Medium: "serial", Payload: tb.MarshalBinary()})
	f.Add(b2)
	f.Fuzz(func(t *testing.T, p []byte) {
		fr, end, err := c.Decode(p)
		if err != nil {
			return
		}
		if end > len(p) {
			t.Fatalf("end %d beyond input %d", end, len(p))
		}
		again, err := c.Encode(fr)
		if err != nil || !bytes.Equal(again, p[:end]) {
			t.Fatalf("accepted frame does not re-encode identically: %v", err)
		}
		UnmarshalHeartbeat(fr.Payload)
		UnmarshalTable(fr.Payload)
	})
}

func FuzzUnmarshalHeartbeat(f *testing.F) {
	f.Add(sampleHeartbeat().MarshalBinary())
	f.Add(Heartbeat{App: make([]byte, MaxAppState)}.MarshalBinary())
	f.Fuzz(func(t *testing.T, p []byte) {
		h, err := UnmarshalHeartbeat(p)
		if err != nil {
			return
		}
		if len(h.App) > MaxAppState || !bytes.Equal(h.MarshalBinary(), p) {
			t.Fatal("accepted heartbeat does not re-encode identically")
		}
	})
}

func FuzzUnmarshalTable(f *testing.F) {
	tb := BuildTable([]NodeID{"n1", "n2", "n3"}, map[NodeID][]string{"n1": {"10.0.0.1"}}, "n1", 3)
	tb.Fail("n2")
	f.Add(tb.MarshalBinary())
	f.Fuzz(func(t *testing.T, p []byte) {
		tb, err := UnmarshalTable(p)
		if err != nil {
			return
		}
		if !bytes.Equal(tb.MarshalBinary(), p) {
			t.Fatal("accepted table does not re-encode identically")
		}
	})
}

func TestFuzzSeedsPresent(t *testing.T) {
	c := NewCodec("pair", simKey)
	b, _ := c.Encode(sampleFrame())
	// The "heartbeat" and "two-frames-with-noise" seeds are version 1
	// frames, the *-v2* seeds version 2 (no round, eligibility or app
	// state): kept as refused input (TestOldFrameVersionsRefused). The v3
	// seeds carry nonces, echoes, the term and app state; v3-without-term
	// is a payload laid out before the term was added (refused).
	writeSeed(t, "FuzzDecodeFrame", "heartbeat-v3", b)
	f := sampleFrame()
	f.Echo = []uint64{1, 2, 0xffffffffffffffff}
	b3, _ := c.Encode(f)
	writeSeed(t, "FuzzDecodeFrame", "heartbeat-v3-three-echoes", b3)
	f.Echo = nil
	f.Payload = Heartbeat{Round: 1, Role: RoleStandby, App: bytes.Repeat([]byte{0x5a}, MaxAppState)}.MarshalBinary()
	b4, _ := c.Encode(f)
	writeSeed(t, "FuzzDecodeFrame", "heartbeat-v3-no-echo-largest-app", b4)
	tb2 := BuildTable([]NodeID{"a", "b"}, nil, "a", 1)
	b5, _ := c.Encode(Frame{Type: MsgTable, Boot: 1, Seq: 2, Nonce: 9, Echo: []uint64{5}, From: "a", Medium: "serial", Payload: tb2.MarshalBinary()})
	writeSeed(t, "FuzzDecodeFrame", "table-v3", b5)
	writeSeed(t, "FuzzSerialReader", "two-v3-frames-with-noise", append(append([]byte("noise\x7e"), EncodeSerial(b)...), EncodeSerial(b4)...))
	tb := BuildTable([]NodeID{"n1", "n2"}, nil, "n1", 1)
	writeSeed(t, "FuzzUnmarshalTable", "two-nodes", tb.MarshalBinary())
	writeSeed(t, "FuzzUnmarshalHeartbeat", "v3-with-app", sampleHeartbeat().MarshalBinary())
	if _, err := UnmarshalHeartbeat(readSeed(t, "FuzzUnmarshalHeartbeat", "v3-without-term")); !errors.Is(err, ErrMalformed) {
		t.Errorf("a payload laid out before the term was accepted: %v", err)
	}
	writeSeed(t, "FuzzUnmarshalHeartbeat", "v2-payload", []byte{2, 1, 2, 0, 0, 0, 0, 0, 0, 0, 9})
	for _, fz := range []string{"FuzzDecodeFrame", "FuzzSerialReader", "FuzzUnmarshalTable", "FuzzUnmarshalHeartbeat"} {
		if ents, _ := os.ReadDir(filepath.Join("testdata", "fuzz", fz)); len(ents) == 0 {
			t.Errorf("no seed corpus for %s", fz)
		}
	}
}
