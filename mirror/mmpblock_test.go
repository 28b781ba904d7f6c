package mirror

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
	"time"
)

func sampleMMP() mmpBlock {
	return mmpBlock{State: mmpActive, Volume: [16]byte{1, 2, 3}, Seq: 42, Nonce: 0xfeedface, Updated: 1_700_000_000_123_456_789,
		Interval: time.Second, Grace: 8 * time.Second, PID: 4242, Node: "node1"}
}

func encodeMMP(m mmpBlock) []byte {
	b := make([]byte, blockBytes)
	m.encode(b)
	return b
}

// reseal fixes the checksum after a test edits a block.
func reseal(b []byte) []byte {
	binary.LittleEndian.PutUint32(b[crcOff:], crc32.Checksum(b[:crcOff], castagnoli))
	return b
}

func TestMMPBlockRoundTrip(t *testing.T) {
	for _, m := range []mmpBlock{sampleMMP(), {State: mmpReleased, Interval: time.Millisecond, Node: strings.Repeat("é", 40)}} {
		got, err := decodeMMP(encodeMMP(m))
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Node) > nodeNameBytes {
			m.Node = strings.Repeat("é", nodeNameBytes/2) // cut to whole characters
		}
		if got != m {
			t.Fatalf("round trip: %+v, want %+v", got, m)
		}
	}
	if _, err := decodeMMP(make([]byte, blockBytes)); !errors.Is(err, errMMPBlank) {
		t.Fatalf("zeroed slot: %v", err)
	}
	hb := make([]byte, blockBytes)
	copy(hb, "\x00\x40HMAC-signed heartbeat frame")
	if _, err := decodeMMP(hb); !errors.Is(err, errNotMMP) {
		t.Fatalf("a disk heartbeat frame: %v", err)
	}
}

// Every field is checked: a damaged or hostile block is refused.
func TestMMPBlockStrictDecode(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(b []byte)
		want string
	}{
		{"short", nil, "bytes"},
		{"bad checksum", func(b []byte) { b[100] ^= 1 }, "checksum"},
		{"version", func(b []byte) { b[mmpOffVersion] = 2; reseal(b) }, "version"},
		{"state", func(b []byte) { b[mmpOffState] = 3; reseal(b) }, "state"},
		{"zero interval", func(b []byte) { binary.LittleEndian.PutUint32(b[mmpOffInterval:], 0); reseal(b) }, "interval"},
		{"huge grace", func(b []byte) { binary.LittleEndian.PutUint32(b[mmpOffGrace:], mmpMaxMillis+1); reseal(b) }, "grace"},
		{"reserved", func(b []byte) { b[mmpOffReserved] = 1; reseal(b) }, "reserved"},
		{"tail", func(b []byte) { b[2000] = 1; reseal(b) }, "reserved"},
		{"node after NUL", func(b []byte) { b[mmpOffNode+20] = 'x'; reseal(b) }, "NUL"},
		{"node not UTF-8", func(b []byte) { b[mmpOffNode] = 0xff; reseal(b) }, "UTF-8"},
	} {
		b := encodeMMP(sampleMMP())
		if c.edit == nil {
			b = b[:100]
		} else {
			c.edit(b)
		}
		if _, err := decodeMMP(b); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error about %q", c.name, err, c.want)
		}
	}
}

func FuzzDecodeMMP(f *testing.F) {
	f.Add(encodeMMP(sampleMMP()))
	f.Add(make([]byte, blockBytes))
	f.Add([]byte("HAMIRMMP"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) >= blockBytes {
			b = reseal(b[:blockBytes]) // let the fuzzer reach past the checksum
		}
		m, err := decodeMMP(b)
		if err != nil {
			return
		}
		again, err := decodeMMP(encodeMMP(m))
		if err != nil || again != m {
			t.Fatalf("a decoded block does not round-trip: %+v %v, want %+v", again, err, m)
		}
	})
}
