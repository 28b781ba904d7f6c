package iscsi

import (
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// blockLimits builds VPD pages 0, 0xB0 and 0xB2 advertising WRITE SAME of
// up to ws blocks (and UNMAP through it when lbpws).
func blockLimits(ws uint64, lbpws bool) map[byte][]byte {
	b0 := make([]byte, 64)
	b0[1], b0[3] = 0xb0, 0x3c
	binary.BigEndian.PutUint64(b0[36:], ws)
	b2 := []byte{0, 0xb2, 0, 4, 0, 0, 0, 0}
	if lbpws {
		b2[5] = 0x40
	}
	return map[byte][]byte{0x00: {0, 0, 0, 4, 0x00, 0x80, 0xb0, 0xb2}, 0xb0: b0, 0xb2: b2}
}

type zeroLog struct {
	mu   sync.Mutex
	cdbs [][]byte
	data [][]byte
}

func (z *zeroLog) handler(refuseWriteSame bool) func(f *fakeTarget, p *PDU) []*PDU {
	return onCmd(func(f *fakeTarget, p *PDU) []*PDU {
		z.mu.Lock()
		z.cdbs = append(z.cdbs, append([]byte(nil), p.BHS[32:48]...))
		z.data = append(z.data, p.Data)
		z.mu.Unlock()
		if refuseWriteSame && p.BHS[32] == scsiWriteSame16 {
			return []*PDU{f.response(p, statusCheckCondition, fixedSense(SenseIllegalRequest, 0x20, 0))}
		}
		return []*PDU{f.response(p, statusGood, nil)}
	})
}

// withCapFlags sets byte 14 of the fake's READ CAPACITY(16) answer.
func withCapFlags(flags byte) func(f *fakeTarget) {
	return func(f *fakeTarget) { f.capFlags = flags }
}

func TestZeroUsesAdvertisedWriteSame(t *testing.T) {
	z := &zeroLog{}
	// Thin (LBPME) with unmapped blocks reading as zeros (LBPRZ): WRITE
	// SAME may unmap.
	d, _ := startFakeWith(t, Config{}, nil, func(f *fakeTarget) {
		withVPD(blockLimits(256, true))(f)
		withCapFlags(0xc0)(f)
	}, z.handler(false))
	if m := d.ZeroMethod(true); m != ZeroWriteSame {
		t.Fatalf("method %v with WRITE SAME advertised (limits %+v)", m, d.Limits())
	}
	if err := d.Zero(512, 300*512, true); err != nil {
		t.Fatal(err)
	}
	if len(z.cdbs) != 2 {
		t.Fatalf("%d commands for 300 blocks with a 256-block WRITE SAME limit, want 2", len(z.cdbs))
	}
	for i, want := range [][2]uint64{{1, 256}, {257, 44}} {
		c := z.cdbs[i]
		if c[0] != scsiWriteSame16 || c[1]&0x08 == 0 || binary.BigEndian.Uint64(c[2:]) != want[0] || uint64(binary.BigEndian.Uint32(c[10:])) != want[1] {
			t.Fatalf("command %d: %x, want WRITE SAME(16) UNMAP lba %d blocks %d", i, c, want[0], want[1])
		}
		if len(z.data[i]) != 512 {
			t.Fatalf("WRITE SAME carried %d bytes, want one block", len(z.data[i]))
		}
	}
	if m := d.ZeroMethod(false); m != ZeroWriteSame {
		t.Fatal("zero without unmap should still use WRITE SAME")
	}
}

// Linux LIO advertises WRITE SAME with UNMAP (LBPWS, emulate_tpws=1) on a
// LUN whose unmapped blocks need not read as zeros (LBPRZ 0: its backing
// device does not zero on discard), and then discards without writing:
// the range keeps its old data. Zero must read back as zeros, so the UNMAP
// bit goes only to a LUN that promises zeros for unmapped blocks.
func TestZeroWriteSameUnmapsOnlyWhereUnmappedBlocksReadZero(t *testing.T) {
	for _, c := range []struct {
		name      string
		capFlags  byte
		wantUnmap bool
	}{
		{"thin, unmapped blocks read zeros", 0xc0, true},
		{"thin, unmapped blocks undefined (LIO over a device that does not zero on discard)", 0x80, false},
		{"not thin", 0x00, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			z := &zeroLog{}
			d, _ := startFakeWith(t, Config{}, nil, func(f *fakeTarget) {
				withVPD(blockLimits(256, true))(f)
				withCapFlags(c.capFlags)(f)
			}, z.handler(false))
			if err := d.Zero(0, 8*512, true); err != nil {
				t.Fatal(err)
			}
			cdb := z.cdbs[0]
			if cdb[0] != scsiWriteSame16 {
				t.Fatalf("command %x, want WRITE SAME(16)", cdb)
			}
			if got := cdb[1]&0x08 != 0; got != c.wantUnmap {
				t.Fatalf("WRITE SAME(16) UNMAP bit %v, want %v (a discard that keeps old data would not read as zeros)", got, c.wantUnmap)
			}
			for _, b := range z.data[0] {
				if b != 0 {
					t.Fatal("WRITE SAME carried a non-zero block")
				}
			}
		})
	}
}

func TestZeroFallsBackWhenWriteSameIsRefused(t *testing.T) {
	z := &zeroLog{}
	d, _ := startFakeWith(t, Config{}, nil, withVPD(blockLimits(1024, false)), z.handler(true))
	if err := d.Zero(0, 64*512, false); err != nil {
		t.Fatal(err)
	}
	last := z.cdbs[len(z.cdbs)-1]
	if z.cdbs[0][0] != scsiWriteSame16 || last[0] != scsiWrite16 {
		t.Fatalf("commands %x: want WRITE SAME refused, then WRITE(16)", z.cdbs)
	}
	for _, b := range z.data[len(z.data)-1] {
		if b != 0 {
			t.Fatal("fallback wrote non-zero data")
		}
	}
}

func TestZeroWithoutAdvertisementWritesZeros(t *testing.T) {
	z := &zeroLog{}
	d, _ := startFake(t, Config{}, nil, z.handler(false))
	if m := d.ZeroMethod(true); m != ZeroWrite {
		t.Fatalf("method %v with nothing advertised", m)
	}
	if err := d.Zero(0, 8*512, true); err != nil {
		t.Fatal(err)
	}
	if c := z.cdbs[0]; c[0] != scsiWrite16 || binary.BigEndian.Uint32(c[10:]) != 8 {
		t.Fatalf("command %x, want WRITE(16) of 8 blocks", c)
	}
	if err := d.Zero(100, 512, false); !errors.Is(err, ErrAlignment) {
		t.Fatalf("unaligned zero: %v", err)
	}
}

// An asynchronous "please log out" from the target ends the session; the
// Disk logs in again.
func TestAsyncLogoutRequestReconnects(t *testing.T) {
	d, f := startFake(t, Config{ReconnectInterval: 10 * time.Millisecond}, nil, onCmd(func(f *fakeTarget, p *PDU) []*PDU {
		return []*PDU{f.response(p, statusGood, nil)}
	}))
	a := &PDU{}
	a.BHS[0], a.BHS[1] = opAsync, 0x80
	a.put32(16, reservedTag)
	a.BHS[36] = asyncLogoutRequest
	f.mu.Lock()
	c := f.conn
	f.mu.Unlock()
	if err := writePDU(c, f.stamp(a, true), Digests{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return d.Stats().Reconnects == 1 && d.Connected() })
	if err := d.Flush(); err != nil {
		t.Fatalf("flush after the target-requested logout: %v", err)
	}
}

// Config.ZeroByWriting, by what the LUN says it is: tgtd (vendor IET,
// product VIRTUAL-DISK) runs UNMAP and WRITE SAME for initiators its
// reservation shuts out, so by default Zero writes zeros there; other
// arrays get what they advertise; always and never are the operator's.
func TestZeroByWritingModes(t *testing.T) {
	for _, c := range []struct {
		mode            ZeroWritingMode
		vendor, product string
		unmap, noUnmap  ZeroMethod
	}{
		{"", "IET", "VIRTUAL-DISK", ZeroWrite, ZeroWrite},
		{ZeroWritingAuto, "IET", "VIRTUAL-DISK", ZeroWrite, ZeroWrite},
		{ZeroWritingAuto, "LIO-ORG", "FILEIO", ZeroWriteSame, ZeroWriteSame},
		{ZeroWritingAuto, "IET", "OTHER", ZeroWriteSame, ZeroWriteSame},
		{ZeroWritingAlways, "LIO-ORG", "FILEIO", ZeroWrite, ZeroWrite},
		{ZeroWritingNever, "IET", "VIRTUAL-DISK", ZeroWriteSame, ZeroWriteSame},
	} {
		z := &zeroLog{}
		setup := func(f *fakeTarget) {
			f.vpd, f.vendor, f.product = blockLimits(256, true), c.vendor, c.product
		}
		d, _ := startFakeWith(t, Config{ZeroByWriting: c.mode}, nil, setup, z.handler(false))
		if u, n := d.ZeroMethod(true), d.ZeroMethod(false); u != c.unmap || n != c.noUnmap {
			t.Errorf("mode %q on %s %s: methods %v / %v, want %v / %v", c.mode, c.vendor, c.product, u, n, c.unmap, c.noUnmap)
			continue
		}
		if err := d.Zero(0, 8*512, true); err != nil {
			t.Fatal(err)
		}
		z.mu.Lock()
		op := z.cdbs[len(z.cdbs)-1][0]
		z.mu.Unlock()
		if want := map[ZeroMethod]byte{ZeroWrite: scsiWrite16, ZeroWriteSame: scsiWriteSame16}[c.unmap]; op != want {
			t.Errorf("mode %q on %s %s: Zero sent opcode %#x, want %#x", c.mode, c.vendor, c.product, op, want)
		}
	}
	bad := Config{ZeroByWriting: "sometimes"}
	bad.EnsureDefaults()
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "iscsi.zero_by_writing") {
		t.Fatalf("ZeroByWriting \"sometimes\": %v, want an error naming iscsi.zero_by_writing", err)
	}
}

func withVPD(pages map[byte][]byte) func(f *fakeTarget) {
	return func(f *fakeTarget) { f.vpd = pages }
}

func TestReadOnlyDiskRefusesWrites(t *testing.T) {
	z := &zeroLog{}
	d, _ := startFake(t, Config{ReadOnly: true}, nil, z.handler(false))
	if err := d.WriteAt(make([]byte, 512), 0, false); !errors.Is(err, ErrWriteProtected) {
		t.Fatalf("write on a read-only disk: %v", err)
	}
	if err := d.Zero(0, 512, false); !errors.Is(err, ErrWriteProtected) {
		t.Fatalf("zero on a read-only disk: %v", err)
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if len(z.cdbs) != 0 {
		t.Fatalf("a read-only disk sent %d commands", len(z.cdbs))
	}
}
