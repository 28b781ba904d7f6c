package mirror

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/hamirror/hamirror/mirror/legtest"
)

// sampleSuperblock is a valid superblock for a 64 MiB leg.
func sampleSuperblock(t testing.TB) *superblock {
	t.Helper()
	const leg = 64 << 20
	data := maxDataSize(leg, 1<<20, 16)
	l, err := computeLayout(leg, data, 1<<20, 16)
	if err != nil {
		t.Fatal(err)
	}
	u := [2][16]byte{{1, 2, 3}, {4, 5, 6}}
	return &superblock{
		VolumeUUID: [16]byte{9, 9, 9}, LegUUID: u[1], Slot: 1, Clean: true,
		LegSize: leg, DataSize: data, ChunkSize: 1 << 20, Events: 42, Created: 1e18, Updated: 2e18,
		LegStates: [2]legState{legInSync, legFailed}, LegUUIDs: u, LastWriter: "node-ä",
		Checkpoint: 3, BitmapGen: 77, BitmapOff: l.BitmapOff, BitmapLen: l.BitmapLen,
		HBOff: l.HBOff, HBSlotSize: hbSlotBytes, HBCount: 16,
		Gens: []generation{{77, 1}, {78, 40}},
	}
}

func encodeSB(sb *superblock) []byte {
	b := make([]byte, sbBytes)
	sb.encode(b)
	return b
}

func TestSuperblockRoundTrip(t *testing.T) {
	sb := sampleSuperblock(t)
	got, err := decodeSuperblock(encodeSB(sb))
	if err != nil {
		t.Fatal(err)
	}
	if got.LastWriter != sb.LastWriter || got.Events != 42 || got.Slot != 1 || !got.Clean ||
		got.LegStates != sb.LegStates || len(got.Gens) != 2 || got.Gens[1] != (generation{78, 40}) ||
		got.Checkpoint != 3 || got.BitmapGen != 77 || got.DataSize != sb.DataSize || got.LegUUIDs != sb.LegUUIDs {
		t.Fatalf("round trip changed the superblock:\n%+v\n%+v", sb, got)
	}
	if !bytes.Equal(encodeSB(got), encodeSB(sb)) {
		t.Fatal("re-encoding a decoded superblock gives different bytes")
	}
}

// Byte offsets pinned by FORMAT.md: a change here is a format change.
func TestSuperblockLayoutMatchesFormatDoc(t *testing.T) {
	b := encodeSB(sampleSuperblock(t))
	le := binary.LittleEndian
	checks := []struct {
		name string
		ok   bool
	}{
		{"magic at 0", string(b[0:8]) == "HAMIRROR"},
		{"version at 8", le.Uint32(b[8:]) == 1},
		{"size at 12", le.Uint32(b[12:]) == 4096},
		{"slot at 48", le.Uint32(b[48:]) == 1},
		{"flags at 52", le.Uint32(b[52:]) == 1},
		{"leg size at 56", le.Uint64(b[56:]) == 64<<20},
		{"chunk at 72", le.Uint64(b[72:]) == 1<<20},
		{"events at 80", le.Uint64(b[80:]) == 42},
		{"states at 104", b[104] == 0 && b[105] == 1},
		{"generation count at 108", le.Uint32(b[108:]) == 2},
		{"last writer at 144", strings.HasPrefix(string(b[144:208]), "node-ä\x00")},
		{"checkpoint at 208", le.Uint64(b[208:]) == 3},
		{"bitmap generation at 216", le.Uint64(b[216:]) == 77},
		{"heartbeat slot size at 248", le.Uint32(b[248:]) == 4096},
		{"generation 1 at 272", le.Uint64(b[272:]) == 78 && le.Uint64(b[280:]) == 40},
		{"crc32c at 4092", le.Uint32(b[4092:]) == crc32.Checksum(b[:4092], castagnoli)},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("FORMAT.md says %s", c.name)
		}
	}
}

func TestSuperblockStrictDecoding(t *testing.T) {
	le := binary.LittleEndian
	cases := []struct {
		name   string
		mutate func(b []byte)
		want   string
	}{
		{"short", nil, "bytes"},
		{"magic", func(b []byte) { b[0] = 'X' }, "magic"},
		{"checksum", func(b []byte) { b[300] ^= 1 }, "checksum"},
		{"version", func(b []byte) { le.PutUint32(b[8:], 2) }, "version"},
		{"size field", func(b []byte) { le.PutUint32(b[12:], 512) }, "size field"},
		{"slot", func(b []byte) { le.PutUint32(b[48:], 2) }, "slot"},
		{"flags", func(b []byte) { le.PutUint32(b[52:], 6) }, "flags"},
		{"state", func(b []byte) { b[105] = 9 }, "state"},
		{"reserved", func(b []byte) { b[107] = 1 }, "reserved"},
		{"generations", func(b []byte) { le.PutUint32(b[108:], 65) }, "generations"},
		{"generation id 0", func(b []byte) { le.PutUint64(b[256:], 0) }, "ID 0"},
		{"bytes after generations", func(b []byte) { b[2000] = 1 }, "after the generation list"},
		{"own leg uuid", func(b []byte) { b[128] ^= 0xFF }, "own slot"},
		{"writer padding", func(b []byte) { b[207] = 'x' }, "NUL padding"},
		{"writer utf8", func(b []byte) { b[144] = 0xFF }, "UTF-8"},
		{"chunk not power of two", func(b []byte) { le.PutUint64(b[72:], 3<<20) }, "chunk size"},
		{"chunk too small", func(b []byte) { le.PutUint64(b[72:], 4096) }, "chunk size"},
		{"data size unaligned", func(b []byte) { le.PutUint64(b[64:], 1000) }, "data size"},
		{"data beyond leg", func(b []byte) { le.PutUint64(b[64:], 128<<20) }, "data size"},
		{"bitmap offset", func(b []byte) { le.PutUint64(b[224:], 4096) }, "offsets"},
		{"heartbeat slot size", func(b []byte) { le.PutUint32(b[248:], 512) }, "slot size"},
		{"heartbeat count", func(b []byte) { le.PutUint32(b[252:], 5000) }, "slot count"},
		{"checkpoint", func(b []byte) { le.PutUint64(b[208:], 1<<40) }, "checkpoint"},
		{"zero volume uuid", func(b []byte) { clear(b[16:32]) }, "zero volume"},
		{"leg size", func(b []byte) { le.PutUint64(b[56:], 1<<62) }, "leg size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := encodeSB(sampleSuperblock(t))
			if c.mutate == nil {
				b = b[:100]
			} else {
				c.mutate(b)
				if c.name != "checksum" {
					le.PutUint32(b[crcOff:], crc32.Checksum(b[:crcOff], castagnoli)) // only the field is wrong
				}
			}
			_, err := decodeSuperblock(b)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("decode with bad %s: %v, want an error about %q", c.name, err, c.want)
			}
		})
	}
}

func TestSuperblockCopiesAB(t *testing.T) {
	leg := legtest.NewMemLeg("m", 64<<20)
	sb := sampleSuperblock(t)
	buf := alignedBuf(sbBytes)
	sb.Events = 10
	if err := writeSuperblock(leg, sb, buf); err != nil {
		t.Fatal(err)
	}
	sb.Events = 11
	if err := writeSuperblock(leg, sb, buf); err != nil {
		t.Fatal(err)
	}
	got, err := readSuperblock(leg)
	if err != nil || got.Events != 11 {
		t.Fatalf("newest copy: %v, %v", got, err)
	}
	// A torn write of the newest copy (B, events 11) leaves copy A.
	end := leg.Size()
	if err := leg.WriteAt(bytes.Repeat([]byte{0xEE}, 512), end-sbBytes+1024, false); err != nil {
		t.Fatal(err)
	}
	got, err = readSuperblock(leg)
	if err != nil || got.Events != 10 {
		t.Fatalf("after tearing copy B: %+v, %v; want copy A with events 10", got, err)
	}
	// Both damaged: corrupt, not "no metadata".
	if err := leg.WriteAt(bytes.Repeat([]byte{0xEE}, 512), end-2*sbBytes+1024, false); err != nil {
		t.Fatal(err)
	}
	if _, err = readSuperblock(leg); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("both copies torn: %v, want ErrCorrupt", err)
	}
	if _, err = readSuperblock(legtest.NewMemLeg("blank", 1<<20)); !errors.Is(err, ErrNoMetadata) {
		t.Fatalf("blank leg: %v, want ErrNoMetadata", err)
	}
}

func TestLayout(t *testing.T) {
	for _, size := range []int64{1 << 20, 64 << 20, 1<<30 + 12345, 3 << 40} {
		for _, chunk := range []int64{64 << 10, 1 << 20} {
			d := maxDataSize(size, chunk, 16)
			l, err := computeLayout(size, d, chunk, 16)
			if err != nil {
				t.Fatalf("size %d chunk %d: %v", size, chunk, err)
			}
			if d%blockBytes != 0 || l.HBOff < d || l.HBOff-d >= 2*blockBytes+l.BitmapLen {
				t.Fatalf("size %d chunk %d: data %d, heartbeat at %d: wasteful or overlapping", size, chunk, d, l.HBOff)
			}
			if l.SBOff[1]+sbBytes > size || l.BitmapOff+l.BitmapLen != l.SBOff[0] || l.HBOff+16*hbSlotBytes != l.BitmapOff {
				t.Fatalf("size %d: regions not packed at the end: %+v", size, l)
			}
			if _, err := computeLayout(size, d+blockBytes, chunk, 16); err == nil && bitmapBlocks(ceilDiv(d+blockBytes, chunk)) == bitmapBlocks(ceilDiv(d, chunk)) {
				t.Fatalf("size %d: data size %d is not the maximum", size, d)
			}
		}
	}
}

func TestBitmapBlockRoundTripAndStrictness(t *testing.T) {
	n := int64(chunksPerBlock + 100)
	bs := newBitset(n)
	for _, c := range []int64{0, 63, 64, chunksPerBlock - 1, chunksPerBlock, n - 1} {
		bs.set(c)
	}
	for b := int64(0); b < bs.blocks(); b++ {
		buf := make([]byte, blockBytes)
		bs.encodeBlock(b, buf)
		got := newBitset(n)
		if err := got.decodeBlock(b, buf); err != nil {
			t.Fatal(err)
		}
		if b == 1 && (!got.get(chunksPerBlock) || !got.get(n-1) || got.count() != 2) {
			t.Fatalf("block 1 decoded to %v", got)
		}
		if err := got.decodeBlock(1-b, buf); err == nil || !strings.Contains(err.Error(), "index") {
			t.Fatalf("block %d decoded as block %d: %v", b, 1-b, err)
		}
	}
	buf := make([]byte, blockBytes)
	bs.encodeBlock(1, buf)
	buf[200] |= 1 // chunk beyond the last
	binary.LittleEndian.PutUint32(buf[crcOff:], crc32.Checksum(buf[:crcOff], castagnoli))
	if err := newBitset(n).decodeBlock(1, buf); err == nil || !strings.Contains(err.Error(), "beyond") {
		t.Fatalf("bit past the last chunk: %v", err)
	}
	buf[5] ^= 1
	if err := newBitset(n).decodeBlock(1, buf); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("corrupt block: %v", err)
	}
	if c := bs.next(65); c != chunksPerBlock-1 {
		t.Fatalf("next(65) = %d", c)
	}
}

func TestSignatures(t *testing.T) {
	mk := func(off int, magic string) []byte {
		b := make([]byte, 128<<10)
		copy(b[off:], magic)
		return b
	}
	cases := map[string][]byte{
		"XFS":   mk(0, "XFSB"),
		"btrfs": mk(0x10040, "_BHRfS_M"),
		"GPT":   mk(512, "EFI PART"),
		"MBR":   mk(510, "\x55\xAA"),
		"LUKS":  mk(0, "LUKS\xba\xbe"),
		"swap":  mk(4086, "SWAPSPACE2"),
		"ext2":  mk(1080, "\x53\xEF"),
	}
	for want, head := range cases {
		if got := signature(head); !strings.Contains(got, want) {
			t.Errorf("signature of %s image: %q", want, got)
		}
	}
	if got := signature(make([]byte, 128<<10)); got != "" {
		t.Errorf("blank image recognised as %q", got)
	}
}

func TestCreateRefusesXFSWithoutForce(t *testing.T) {
	a, b := legtest.NewMemLeg("a", 8<<20), legtest.NewMemLeg("b", 8<<20)
	if err := b.WriteAt([]byte("XFSB"), 0, false); err != nil {
		t.Fatal(err)
	}
	_, err := Create([2]Leg{a, b}, CreateOptions{})
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "XFS") || !strings.Contains(err.Error(), "b") {
		t.Fatalf("create over XFS: %v", err)
	}
	if _, err := Create([2]Leg{a, b}, CreateOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	off, size, n, err := HeartbeatSlots(b)
	if err != nil || size != 4096 || n != 15 || off <= 0 || off+int64(n+1)*size > b.Size() {
		t.Fatalf("HeartbeatSlots: %d %d %d %v", off, size, n, err)
	}
}

func TestCreateInitialSync(t *testing.T) {
	a, b := legtest.NewMemLeg("a", 8<<20), legtest.NewMemLeg("b", 8<<20)
	if err := a.WriteAt(bytes.Repeat([]byte{5}, 8192), 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := Create([2]Leg{a, b}, CreateOptions{InitialSync: true, ChunkSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	v, err := Assemble([2]Leg{a, b}, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	waitInSync(t, v)
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes()[:v.Size()], b.Bytes()[:v.Size()]) {
		t.Fatal("initial sync did not copy leg 0 onto leg 1")
	}
}

func FuzzDecodeSuperblock(f *testing.F) {
	f.Add(encodeSB(sampleSuperblock(f)))
	f.Add(make([]byte, sbBytes))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < sbBytes {
			b = append(b, make([]byte, sbBytes-len(b))...)
		}
		b = b[:sbBytes]
		// Let the fuzzer reach past the checksum.
		binary.LittleEndian.PutUint32(b[crcOff:], crc32.Checksum(b[:crcOff], castagnoli))
		sb, err := decodeSuperblock(b)
		if err != nil {
			return
		}
		again, err := decodeSuperblock(encodeSB(sb))
		if err != nil {
			t.Fatalf("a decoded superblock does not re-decode: %v", err)
		}
		if again.Events != sb.Events || again.DataSize != sb.DataSize || len(again.Gens) != len(sb.Gens) {
			t.Fatal("re-decode differs")
		}
	})
}

func FuzzDecodeBitmapBlock(f *testing.F) {
	bs := newBitset(40000)
	bs.set(5)
	buf := make([]byte, blockBytes)
	bs.encodeBlock(0, buf)
	f.Add(buf, int64(0), int64(40000))
	f.Add(make([]byte, blockBytes), int64(1), int64(1))
	f.Fuzz(func(t *testing.T, b []byte, blk, n int64) {
		if n <= 0 || n > 1<<20 {
			return
		}
		if len(b) >= blockBytes {
			b = b[:blockBytes]
			binary.LittleEndian.PutUint32(b[crcOff:], crc32.Checksum(b[:crcOff], castagnoli))
		}
		bs := newBitset(n)
		if err := bs.decodeBlock(blk, b); err != nil {
			if bs.count() != 0 {
				t.Fatal("a failed decode changed the bitmap")
			}
			return
		}
		if c := bs.count(); c > n {
			t.Fatalf("%d bits set in a %d-chunk bitmap", c, n)
		}
	})
}
