package iscsi

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"
)

func TestCDBEncodings(t *testing.T) {
	c := cdbRW16(scsiWrite16, 0x0102030405060708, 0x0a0b0c0d, true)
	if c[0] != 0x8a || c[1] != 0x08 || binary.BigEndian.Uint64(c[2:]) != 0x0102030405060708 || binary.BigEndian.Uint32(c[10:]) != 0x0a0b0c0d {
		t.Fatalf("WRITE(16) FUA %x", c)
	}
	if c := cdbRW16(scsiRead16, 1, 1, false); c[0] != 0x88 || c[1] != 0 {
		t.Fatalf("READ(16) %x", c)
	}
	if c := cdbReadCapacity16(32); c[0] != 0x9e || c[1] != 0x10 || c[13] != 32 {
		t.Fatalf("READ CAPACITY(16) %x", c)
	}
	if c := cdbInquiry(true, 0x83, 1024); c[1] != 1 || c[2] != 0x83 || binary.BigEndian.Uint16(c[3:]) != 1024 {
		t.Fatalf("INQUIRY VPD %x", c)
	}
	if c := cdbWriteSame16(9, 8, true); c[0] != 0x93 || c[1] != 0x08 {
		t.Fatalf("WRITE SAME(16) UNMAP %x", c)
	}
	cdb, params := unmapParams(100, 50)
	if cdb[0] != 0x42 || binary.BigEndian.Uint16(cdb[7:]) != 24 || binary.BigEndian.Uint16(params) != 22 ||
		binary.BigEndian.Uint16(params[2:]) != 16 || binary.BigEndian.Uint64(params[8:]) != 100 || binary.BigEndian.Uint32(params[16:]) != 50 {
		t.Fatalf("UNMAP %x %x", cdb, params)
	}
	if c := cdbSyncCache16(); c[0] != 0x91 || len(c) != 16 {
		t.Fatalf("SYNCHRONIZE CACHE(16) %x", c)
	}
	if c := cdbReportLUNs(4096); c[0] != 0xa0 || binary.BigEndian.Uint32(c[6:]) != 4096 {
		t.Fatalf("REPORT LUNS %x", c)
	}
}

func TestPRCDBs(t *testing.T) {
	cases := map[byte]ReservationType{prOutRegister: 0, prOutReserve: WriteExclusiveRegistrantsOnly,
		prOutPreempt: WriteExclusiveRegistrantsOnly, prOutPreemptAndAbort: ExclusiveAccess, prOutClear: 0}
	for sa, typ := range cases {
		c := cdbPROut(sa, typ)
		if c[0] != 0x5f || c[1] != sa || c[2] != byte(typ) || binary.BigEndian.Uint32(c[5:]) != 24 {
			t.Errorf("PR OUT sa %d: %x", sa, c)
		}
	}
	p := prOutParams(0x1111, 0x2222)
	if binary.BigEndian.Uint64(p) != 0x1111 || binary.BigEndian.Uint64(p[8:]) != 0x2222 || len(p) != 24 {
		t.Fatalf("PR OUT parameters %x", p)
	}
	if c := cdbPRIn(prInReadReservation, 24); c[0] != 0x5e || c[1] != 1 || binary.BigEndian.Uint16(c[7:]) != 24 {
		t.Fatalf("PR IN %x", c)
	}
}

func TestDecodeSense(t *testing.T) {
	s, err := decodeSense(fixedSense(SenseUnitAttention, 0x2a, 0x04))
	if err != nil || s != (Sense{SenseUnitAttention, 0x2a, 0x04}) {
		t.Fatalf("fixed: %+v %v", s, err)
	}
	s, err = decodeSense([]byte{0x72, 0x05, 0x24, 0x00, 0, 0, 0, 0})
	if err != nil || s != (Sense{SenseIllegalRequest, 0x24, 0}) {
		t.Fatalf("descriptor: %+v %v", s, err)
	}
	s, err = decodeSense([]byte{0xf0, 0, 0x03})
	if err != nil || s.Key != SenseMediumError || s.ASC != 0 {
		t.Fatalf("short fixed: %+v %v", s, err)
	}
	for _, bad := range [][]byte{nil, {0x70, 0}, {0x72, 1}, {0x10, 0, 0, 0}} {
		if _, err := decodeSense(bad); !errors.Is(err, ErrProtocol) {
			t.Errorf("decodeSense(%x): %v", bad, err)
		}
	}
}

func TestResultCheck(t *testing.T) {
	if err := (result{Status: statusGood}).check("X"); err != nil {
		t.Fatal(err)
	}
	if err := (result{Status: statusCheckCondition, Sense: fixedSense(SenseRecoveredError, 0x17, 0)}).check("X"); err != nil {
		t.Fatalf("RECOVERED ERROR is success: %v", err)
	}
	if err := (result{Response: 1}).check("X"); err == nil {
		t.Fatal("target failure response accepted")
	}
	if err := (result{Status: statusCheckCondition}).check("X"); err == nil {
		t.Fatal("CHECK CONDITION without sense accepted")
	}
	err := (result{Status: statusTaskAborted}).check("WRITE(16)")
	var se *StatusError
	if !errors.As(err, &se) || se.Status != statusTaskAborted {
		t.Fatalf("TASK ABORTED: %v", err)
	}
}

func TestDecodeCapacity(t *testing.T) {
	b := make([]byte, 32)
	binary.BigEndian.PutUint64(b, 1023)
	binary.BigEndian.PutUint32(b[8:], 4096)
	b[14] = 0xc0
	c, err := decodeCapacity16(b)
	if err != nil || c.Blocks != 1024 || c.BlockSize != 4096 || !c.LBPME || !c.LBPRZ {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bs := range []uint32{0, 100, 3000, 1 << 21} {
		binary.BigEndian.PutUint32(b[8:], bs)
		if _, err := decodeCapacity16(b); !errors.Is(err, ErrProtocol) {
			t.Errorf("block size %d accepted", bs)
		}
	}
	if _, err := decodeCapacity16(b[:12]); !errors.Is(err, ErrProtocol) {
		t.Error("short data accepted")
	}
}

func TestDecodeVPD(t *testing.T) {
	if _, err := decodeSerialVPD([]byte{0, 0x83, 0, 0}); !errors.Is(err, ErrProtocol) {
		t.Error("wrong page accepted")
	}
	sn, err := decodeSerialVPD([]byte{0, 0x80, 0, 6, 'A', 'B', 'C', ' ', ' ', 0})
	if err != nil || sn != "ABC" {
		t.Fatalf("serial %q %v", sn, err)
	}
	page := []byte{0, 0x83, 0, 0,
		0x01, 0x03, 0, 8, 0x60, 1, 2, 3, 4, 5, 6, 7, // NAA, binary
		0x02, 0x01, 0, 4, 'I', 'E', 'T', ' ', // T10, ASCII
		0x01, 0x14, 0, 4, 0, 0, 0, 1, // relative target port (association 1): skipped
	}
	binary.BigEndian.PutUint16(page[2:], uint16(len(page)-4))
	ids, err := decodeDeviceIDVPD(page)
	if err != nil || !slices.Equal(ids, []string{"naa.6001020304050607", "t10.IET"}) {
		t.Fatalf("device ids %v %v", ids, err)
	}
	page[7] = 200
	if _, err := decodeDeviceIDVPD(page); !errors.Is(err, ErrProtocol) {
		t.Fatal("overrunning designator accepted")
	}
	var l Limits
	bl := make([]byte, 64)
	bl[1], bl[3] = 0xb0, 0x3c
	binary.BigEndian.PutUint32(bl[8:], 2048)
	binary.BigEndian.PutUint32(bl[20:], 8192)
	binary.BigEndian.PutUint32(bl[24:], 16)
	binary.BigEndian.PutUint64(bl[36:], 65535)
	if err := decodeBlockLimitsVPD(bl, &l); err != nil || l.MaxTransferBlocks != 2048 || l.MaxUnmapBlocks != 8192 ||
		l.MaxUnmapDescriptors != 16 || l.MaxWriteSameBlocks != 65535 {
		t.Fatalf("block limits %+v %v", l, err)
	}
	if err := decodeLBPVPD([]byte{0, 0xb2, 0, 4, 0, 0xc0, 0, 0}, &l); err != nil || !l.UnmapSupported || !l.WriteSameUnmap {
		t.Fatalf("LBP %+v %v", l, err)
	}
	if err := decodeBlockLimitsVPD([]byte{0, 0xb0, 0, 4, 0, 0, 0, 0}, &l); !errors.Is(err, ErrProtocol) {
		t.Fatal("short block limits accepted")
	}
	sup, err := decodeSupportedVPD([]byte{0, 0, 0, 3, 0, 0x80, 0xb0})
	if err != nil || !sup[0xb0] || sup[0xb2] {
		t.Fatalf("supported %v %v", sup, err)
	}
}

func TestDecodeListsAndReservations(t *testing.T) {
	b := []byte{0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	luns, err := decodeReportLUNs(b)
	if err != nil || !slices.Equal(luns, []uint64{0, 1}) {
		t.Fatalf("luns %v %v", luns, err)
	}
	if _, err := decodeReportLUNs([]byte{0, 0, 0, 5, 0, 0, 0, 0}); !errors.Is(err, ErrProtocol) {
		t.Fatal("LUN list length 5 accepted")
	}
	k := make([]byte, 24)
	binary.BigEndian.PutUint32(k, 7)
	binary.BigEndian.PutUint32(k[4:], 16)
	binary.BigEndian.PutUint64(k[8:], 0xa)
	binary.BigEndian.PutUint64(k[16:], 0xb)
	gen, keys, err := decodeReadKeys(k)
	if err != nil || gen != 7 || !slices.Equal(keys, []uint64{0xa, 0xb}) {
		t.Fatalf("keys %d %x %v", gen, keys, err)
	}
	r := make([]byte, 24)
	binary.BigEndian.PutUint32(r[4:], 16)
	binary.BigEndian.PutUint64(r[8:], 0xa)
	r[21] = 5
	res, err := decodeReadReservation(r)
	if err != nil || !res.Held || res.Key != 0xa || res.Type != WriteExclusiveRegistrantsOnly {
		t.Fatalf("reservation %+v %v", res, err)
	}
	res, err = decodeReadReservation(r[:8])
	if err == nil || res.Held {
		t.Fatalf("truncated reservation accepted: %+v", res)
	}
	binary.BigEndian.PutUint32(r[4:], 0)
	if res, err := decodeReadReservation(r[:8]); err != nil || res.Held {
		t.Fatalf("no reservation: %+v %v", res, err)
	}
}
