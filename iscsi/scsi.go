package iscsi

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// SCSI operation codes (SPC-4, SBC-3).
const (
	scsiTestUnitReady = 0x00
	scsiInquiry       = 0x12
	scsiUnmap         = 0x42
	scsiPRIn          = 0x5e
	scsiPROut         = 0x5f
	scsiRead16        = 0x88
	scsiWrite16       = 0x8a
	scsiSyncCache16   = 0x91
	scsiWriteSame16   = 0x93
	scsiServiceIn16   = 0x9e
	scsiReportLUNs    = 0xa0

	saReadCapacity16 = 0x10
)

func cdbTestUnitReady() []byte { return make([]byte, 6) }

func cdbInquiry(evpd bool, page byte, alloc uint16) []byte {
	c := make([]byte, 6)
	c[0] = scsiInquiry
	if evpd {
		c[1] = 1
		c[2] = page
	}
	binary.BigEndian.PutUint16(c[3:], alloc)
	return c
}

func cdbReadCapacity16(alloc uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1] = scsiServiceIn16, saReadCapacity16
	binary.BigEndian.PutUint32(c[10:], alloc)
	return c
}

// cdbRW16 builds READ(16) or WRITE(16).
func cdbRW16(op byte, lba uint64, blocks uint32, fua bool) []byte {
	c := make([]byte, 16)
	putRW16(c, op, lba, blocks, fua)
	return c
}

// putRW16 fills the 16-byte c with READ(16) or WRITE(16).
func putRW16(c []byte, op byte, lba uint64, blocks uint32, fua bool) {
	clear(c[:16])
	c[0] = op
	if fua {
		c[1] = 0x08
	}
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], blocks)
}

func cdbSyncCache16() []byte {
	c := make([]byte, 16)
	c[0] = scsiSyncCache16 // LBA 0, 0 blocks: the whole medium
	return c
}

func cdbWriteSame16(lba uint64, blocks uint32, unmap bool) []byte {
	c := make([]byte, 16)
	c[0] = scsiWriteSame16
	if unmap {
		c[1] = 0x08
	}
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], blocks)
	return c
}

func cdbReportLUNs(alloc uint32) []byte {
	c := make([]byte, 12)
	c[0] = scsiReportLUNs
	binary.BigEndian.PutUint32(c[6:], alloc)
	return c
}

// unmapParams builds the UNMAP CDB and its parameter list for one range.
func unmapParams(lba uint64, blocks uint32) (cdb, params []byte) {
	params = make([]byte, 24)
	binary.BigEndian.PutUint16(params[0:], 22)
	binary.BigEndian.PutUint16(params[2:], 16)
	binary.BigEndian.PutUint64(params[8:], lba)
	binary.BigEndian.PutUint32(params[16:], blocks)
	cdb = make([]byte, 10)
	cdb[0] = scsiUnmap
	binary.BigEndian.PutUint16(cdb[7:], uint16(len(params)))
	return cdb, params
}

// Sense is decoded sense data (fixed or descriptor format).
type Sense struct {
	Key, ASC, ASCQ byte
}

// decodeSense parses fixed (0x70/0x71) and descriptor (0x72/0x73) sense.
func decodeSense(b []byte) (Sense, error) {
	if len(b) < 1 {
		return Sense{}, fmt.Errorf("%w: empty sense data", ErrProtocol)
	}
	switch b[0] & 0x7f {
	case 0x70, 0x71:
		if len(b) < 3 {
			return Sense{}, fmt.Errorf("%w: fixed sense of %d bytes", ErrProtocol, len(b))
		}
		s := Sense{Key: b[2] & 0x0f}
		if len(b) >= 14 && b[7] >= 6 {
			s.ASC, s.ASCQ = b[12], b[13]
		}
		return s, nil
	case 0x72, 0x73:
		if len(b) < 4 {
			return Sense{}, fmt.Errorf("%w: descriptor sense of %d bytes", ErrProtocol, len(b))
		}
		return Sense{Key: b[1] & 0x0f, ASC: b[2], ASCQ: b[3]}, nil
	}
	return Sense{}, fmt.Errorf("%w: sense response code %#x", ErrProtocol, b[0])
}

// check turns a command's result into nil or a typed error.
func (r result) check(op string) error {
	if r.Response != 0 {
		return &StatusError{Op: op, Response: r.Response}
	}
	switch r.Status {
	case statusGood, statusConditionMet:
		return nil
	case statusCheckCondition:
		s, err := decodeSense(r.Sense)
		if err != nil {
			return fmt.Errorf("iscsi: %s: CHECK CONDITION with bad sense data: %w", op, err)
		}
		if s.Key == SenseRecoveredError || s.Key == SenseNoSense && s.ASC == 0 {
			return nil
		}
		return &SenseError{Op: op, Key: s.Key, ASC: s.ASC, ASCQ: s.ASCQ}
	}
	return &StatusError{Op: op, Status: r.Status}
}

// Inquiry is what the standard INQUIRY and the VPD pages tell about a LUN.
type Inquiry struct {
	DeviceType byte
	Vendor     string
	Product    string
	Revision   string
	Serial     string   // Unit Serial Number page (0x80)
	DeviceIDs  []string // Device Identification page (0x83), e.g. "naa.6001405..."
}

func trimASCII(b []byte) string { return strings.TrimSpace(strings.TrimRight(string(b), "\x00")) }

func decodeStdInquiry(b []byte) (Inquiry, error) {
	if len(b) < 36 {
		return Inquiry{}, fmt.Errorf("%w: standard INQUIRY data of %d bytes (need 36)", ErrProtocol, len(b))
	}
	return Inquiry{
		DeviceType: b[0] & 0x1f,
		Vendor:     trimASCII(b[8:16]),
		Product:    trimASCII(b[16:32]),
		Revision:   trimASCII(b[32:36]),
	}, nil
}

// vpdPayload checks a VPD page header and returns its payload.
func vpdPayload(b []byte, page byte) ([]byte, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%w: VPD page %#x of %d bytes", ErrProtocol, page, len(b))
	}
	if b[1] != page {
		return nil, fmt.Errorf("%w: asked for VPD page %#x, got %#x", ErrProtocol, page, b[1])
	}
	n := int(binary.BigEndian.Uint16(b[2:]))
	if 4+n > len(b) {
		n = len(b) - 4 // truncated by our allocation length
	}
	return b[4 : 4+n], nil
}

func decodeSupportedVPD(b []byte) (map[byte]bool, error) {
	p, err := vpdPayload(b, 0x00)
	if err != nil {
		return nil, err
	}
	m := map[byte]bool{}
	for _, x := range p {
		m[x] = true
	}
	return m, nil
}

func decodeSerialVPD(b []byte) (string, error) {
	p, err := vpdPayload(b, 0x80)
	if err != nil {
		return "", err
	}
	return trimASCII(p), nil
}

// decodeDeviceIDVPD returns the LUN's designators (association 0) as
// strings: "naa.HEX", "eui.HEX", "t10.ASCII" or "id.HEX".
func decodeDeviceIDVPD(b []byte) ([]string, error) {
	p, err := vpdPayload(b, 0x83)
	if err != nil {
		return nil, err
	}
	var ids []string
	for len(p) > 0 {
		if len(p) < 4 {
			return nil, fmt.Errorf("%w: truncated designator in VPD page 0x83", ErrProtocol)
		}
		codeSet, assoc, typ, n := p[0]&0x0f, p[1]>>4&3, p[1]&0x0f, int(p[3])
		if 4+n > len(p) {
			return nil, fmt.Errorf("%w: designator of %d bytes overruns VPD page 0x83", ErrProtocol, n)
		}
		d := p[4 : 4+n]
		p = p[4+n:]
		if assoc != 0 {
			continue
		}
		switch {
		case typ == 3:
			ids = append(ids, fmt.Sprintf("naa.%x", d))
		case typ == 2:
			ids = append(ids, fmt.Sprintf("eui.%x", d))
		case typ == 1 && codeSet == 2:
			ids = append(ids, "t10."+trimASCII(d))
		case codeSet == 2 || codeSet == 3:
			ids = append(ids, fmt.Sprintf("id%d.%s", typ, trimASCII(d)))
		default:
			ids = append(ids, fmt.Sprintf("id%d.%x", typ, d))
		}
	}
	return ids, nil
}

// Limits are the Block Limits (0xB0) and Logical Block Provisioning
// (0xB2) VPD pages: what the LUN advertises for transfers, UNMAP and
// WRITE SAME. Zero means "not advertised".
type Limits struct {
	MaxTransferBlocks     uint32
	OptimalTransferBlocks uint32
	MaxUnmapBlocks        uint32
	MaxUnmapDescriptors   uint32
	MaxWriteSameBlocks    uint64
	UnmapSupported        bool // LBPU
	WriteSameUnmap        bool // LBPWS
}

func decodeBlockLimitsVPD(b []byte, l *Limits) error {
	p, err := vpdPayload(b, 0xb0)
	if err != nil {
		return err
	}
	if len(p) < 16 {
		return fmt.Errorf("%w: Block Limits VPD of %d bytes", ErrProtocol, len(p))
	}
	l.MaxTransferBlocks = binary.BigEndian.Uint32(p[4:])
	l.OptimalTransferBlocks = binary.BigEndian.Uint32(p[8:])
	if len(p) >= 24 {
		l.MaxUnmapBlocks = binary.BigEndian.Uint32(p[16:])
		l.MaxUnmapDescriptors = binary.BigEndian.Uint32(p[20:])
	}
	if len(p) >= 40 {
		l.MaxWriteSameBlocks = binary.BigEndian.Uint64(p[32:])
	}
	return nil
}

func decodeLBPVPD(b []byte, l *Limits) error {
	p, err := vpdPayload(b, 0xb2)
	if err != nil {
		return err
	}
	if len(p) < 2 {
		return fmt.Errorf("%w: Logical Block Provisioning VPD of %d bytes", ErrProtocol, len(p))
	}
	l.UnmapSupported = p[1]&0x80 != 0
	l.WriteSameUnmap = p[1]&0x40 != 0
	return nil
}

// Capacity is READ CAPACITY(16)'s answer.
type Capacity struct {
	Blocks    uint64 // number of logical blocks
	BlockSize uint32
	LBPME     bool // thin provisioning enabled
	LBPRZ     bool // unmapped blocks read as zeros
}

func decodeCapacity16(b []byte) (Capacity, error) {
	if len(b) < 32 {
		return Capacity{}, fmt.Errorf("%w: READ CAPACITY(16) data of %d bytes", ErrProtocol, len(b))
	}
	c := Capacity{
		Blocks:    binary.BigEndian.Uint64(b) + 1,
		BlockSize: binary.BigEndian.Uint32(b[8:]),
		LBPME:     b[14]&0x80 != 0,
		LBPRZ:     b[14]&0x40 != 0,
	}
	if c.BlockSize < 512 || c.BlockSize > 1<<20 || c.BlockSize&(c.BlockSize-1) != 0 {
		return c, fmt.Errorf("%w: logical block size %d", ErrProtocol, c.BlockSize)
	}
	if c.Blocks == 0 || c.Blocks > 1<<63/uint64(c.BlockSize) {
		return c, fmt.Errorf("%w: capacity of %d blocks", ErrProtocol, c.Blocks)
	}
	return c, nil
}

func decodeReportLUNs(b []byte) ([]uint64, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("%w: REPORT LUNS data of %d bytes", ErrProtocol, len(b))
	}
	n := int(binary.BigEndian.Uint32(b))
	if n%8 != 0 {
		return nil, fmt.Errorf("%w: REPORT LUNS list length %d", ErrProtocol, n)
	}
	b = b[8:]
	if n > len(b) {
		n = len(b) - len(b)%8 // truncated by our allocation length
	}
	var luns []uint64
	for i := 0; i < n; i += 8 {
		luns = append(luns, decodeLUN(b[i:i+8]))
	}
	return luns, nil
}
