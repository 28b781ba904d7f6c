package iscsi

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net"
)

// Opcodes (RFC 7143 section 11.1.1). Initiator opcodes are below 0x20.
const (
	opNOPOut       = 0x00
	opSCSICommand  = 0x01
	opTaskMgmt     = 0x02
	opLoginReq     = 0x03
	opTextReq      = 0x04
	opDataOut      = 0x05
	opLogoutReq    = 0x06
	opNOPIn        = 0x20
	opSCSIResponse = 0x21
	opTaskMgmtResp = 0x22
	opLoginResp    = 0x23
	opTextResp     = 0x24
	opDataIn       = 0x25
	opLogoutResp   = 0x26
	opR2T          = 0x31
	opAsync        = 0x32
	opReject       = 0x3f
)

const (
	bhsLen = 48
	// reservedTag is the "no tag" value of ITT and TTT.
	reservedTag = 0xffffffff
	// maxDataSegment bounds any data segment we accept (the 24-bit field
	// allows 16 MiB; RFC 7143 caps MaxRecvDataSegmentLength at 2^24-1).
	maxDataSegment = 1<<24 - 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is the iSCSI digest (RFC 7143 section 13.1).
func crc32c(b ...[]byte) uint32 {
	var c uint32
	for _, p := range b {
		c = crc32.Update(c, castagnoli, p)
	}
	return c
}

// Digests says which digests a connection uses; both are off during login.
type Digests struct {
	Header bool
	Data   bool
}

// PDU is one iSCSI protocol data unit as it travels on the wire: the basic
// header segment, the additional header segments and the data segment
// (without padding or digests). Typed views (scsiCommand, dataIn, ...) are
// encoded into and decoded from it.
type PDU struct {
	BHS  [bhsLen]byte
	AHS  []byte
	Data []byte
}

// Opcode is the PDU's opcode without the immediate bit.
func (p *PDU) Opcode() byte { return p.BHS[0] & 0x3f }

// ITT is the initiator task tag (bytes 16-19 in every PDU).
func (p *PDU) ITT() uint32 { return binary.BigEndian.Uint32(p.BHS[16:]) }

func (p *PDU) u32(off int) uint32 { return binary.BigEndian.Uint32(p.BHS[off:]) }

func (p *PDU) put32(off int, v uint32) { binary.BigEndian.PutUint32(p.BHS[off:], v) }

// setLengths fills TotalAHSLength and DataSegmentLength from AHS and Data.
func (p *PDU) setLengths() {
	p.BHS[4] = byte(len(p.AHS) / 4)
	n := len(p.Data)
	p.BHS[5], p.BHS[6], p.BHS[7] = byte(n>>16), byte(n>>8), byte(n)
}

func pad4(n int) int { return (4 - n%4) % 4 }

// Marshal appends the PDU's wire form (with padding and the digests d asks
// for) to buf. AHS must be a multiple of 4 bytes.
func (p *PDU) Marshal(buf []byte, d Digests) ([]byte, error) {
	bufs, err := p.writeBuffers(d)
	if err != nil {
		return buf, err
	}
	for _, b := range bufs {
		buf = append(buf, b...)
	}
	return buf, nil
}

// writeBuffers returns the PDU as net.Buffers ready for one writev: the
// header (with its digest) in a fresh slice, the data without copying, then
// padding and data digest.
func (p *PDU) writeBuffers(d Digests) (net.Buffers, error) {
	return p.appendBuffers(nil, d)
}

// appendBuffers is writeBuffers appending to bufs (so a caller can reuse
// one slice for every PDU it queues).
func (p *PDU) appendBuffers(bufs net.Buffers, d Digests) (net.Buffers, error) {
	if len(p.AHS)%4 != 0 || len(p.AHS) > 255*4 {
		return bufs, fmt.Errorf("iscsi: AHS length %d is not a multiple of 4 up to 1020", len(p.AHS))
	}
	if len(p.Data) > maxDataSegment {
		return bufs, fmt.Errorf("iscsi: data segment of %d bytes exceeds 2^24-1", len(p.Data))
	}
	p.setLengths()
	if len(p.AHS) == 0 && !d.Header {
		// The BHS itself: the PDU must stay unchanged until written
		// (a task's command PDU does: it is reused only after its
		// command ended, and the session writes nothing of an ended
		// command).
		bufs = append(bufs, p.BHS[:])
		return p.appendData(bufs, d), nil
	}
	hdr := make([]byte, 0, bhsLen+len(p.AHS)+4)
	hdr = append(hdr, p.BHS[:]...)
	hdr = append(hdr, p.AHS...)
	if d.Header {
		hdr = binary.LittleEndian.AppendUint32(hdr, crc32c(hdr))
	}
	bufs = append(bufs, hdr)
	return p.appendData(bufs, d), nil
}

// appendData appends the data segment, its padding and digest.
func (p *PDU) appendData(bufs net.Buffers, d Digests) net.Buffers {
	n := len(p.Data)
	if n == 0 {
		return bufs
	}
	bufs = append(bufs, p.Data)
	padding := zeroPad[:pad4(n)]
	tail := append([]byte(nil), padding...)
	if d.Data {
		tail = binary.LittleEndian.AppendUint32(tail, crc32c(p.Data, padding))
	}
	if len(tail) > 0 {
		bufs = append(bufs, tail)
	}
	return bufs
}

// zeroPad is the padding of data segments (never written to).
var zeroPad [4]byte

// header is a decoded PDU header before its data segment has been read.
// The session's reader reuses one for every PDU.
type header struct {
	pdu     PDU
	dataLen int
	scratch [8]byte // header digest, data padding and digest
}

// readHeader reads the BHS, the AHS and the header digest, and checks every
// length against maxData (our MaxRecvDataSegmentLength).
func readHeader(r io.Reader, d Digests, maxData int) (header, error) {
	var h header
	err := readHeaderInto(r, &h, d, maxData)
	return h, err
}

// readHeaderInto is readHeader filling h (AHS and Data are reset; BHS is
// overwritten, so decoders must copy what they keep of it).
func readHeaderInto(r io.Reader, h *header, d Digests, maxData int) error {
	h.pdu.AHS, h.pdu.Data, h.dataLen = nil, nil, 0
	if _, err := io.ReadFull(r, h.pdu.BHS[:]); err != nil {
		return err
	}
	// The AHS (at most 1020 bytes) and the header digest are read before
	// any length is trusted, so a corrupted header is reported as such.
	ahsLen := int(h.pdu.BHS[4]) * 4
	if ahsLen > 0 {
		h.pdu.AHS = make([]byte, ahsLen)
		if _, err := io.ReadFull(r, h.pdu.AHS); err != nil {
			return unexpectedEOF(err)
		}
	}
	if d.Header {
		dig := h.scratch[:4]
		if _, err := io.ReadFull(r, dig); err != nil {
			return unexpectedEOF(err)
		}
		if got, want := binary.LittleEndian.Uint32(dig), crc32c(h.pdu.BHS[:], h.pdu.AHS); got != want {
			return fmt.Errorf("%w: header digest %#08x, computed %#08x", ErrDigest, got, want)
		}
	}
	h.dataLen = int(h.pdu.BHS[5])<<16 | int(h.pdu.BHS[6])<<8 | int(h.pdu.BHS[7])
	if h.dataLen > maxData {
		return fmt.Errorf("%w: data segment of %d bytes exceeds the negotiated %d (opcode %#x)",
			ErrProtocol, h.dataLen, maxData, h.pdu.Opcode())
	}
	return nil
}

// readData reads the data segment of h into dst (len(dst) must equal
// h.dataLen), then its padding and digest.
func readData(r io.Reader, h *header, dst []byte, d Digests) error {
	if len(dst) != h.dataLen {
		return fmt.Errorf("iscsi: internal: data buffer %d for segment %d", len(dst), h.dataLen)
	}
	if h.dataLen == 0 {
		return nil
	}
	if _, err := io.ReadFull(r, dst); err != nil {
		return unexpectedEOF(err)
	}
	tail := h.scratch[:]
	n := pad4(h.dataLen)
	if d.Data {
		n += 4
	}
	if n == 0 {
		return nil
	}
	if _, err := io.ReadFull(r, tail[:n]); err != nil {
		return unexpectedEOF(err)
	}
	if d.Data {
		p := pad4(h.dataLen)
		got := binary.LittleEndian.Uint32(tail[p:])
		if want := crc32c(dst, tail[:p]); got != want {
			return fmt.Errorf("%w: data digest %#08x, computed %#08x", ErrDigest, got, want)
		}
	}
	return nil
}

// ReadPDU reads one whole PDU, refusing data segments above maxData.
func ReadPDU(r io.Reader, d Digests, maxData int) (*PDU, error) {
	h, err := readHeader(r, d, maxData)
	if err != nil {
		return nil, err
	}
	h.pdu.Data = make([]byte, h.dataLen)
	if err := readData(r, &h, h.pdu.Data, d); err != nil {
		return nil, err
	}
	return &h.pdu, nil
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
