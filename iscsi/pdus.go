package iscsi

import (
	"encoding/binary"
	"fmt"
)

// This file holds the typed views of the PDUs hamirror sends and receives
// (RFC 7143 section 11). Encoders fill a PDU; decoders check the opcode and
// every length and return ErrProtocol on anything malformed.

// sn carries the sequence numbers most target PDUs report.
type sn struct {
	StatSN, ExpCmdSN, MaxCmdSN uint32
}

func decodeSN(p *PDU) sn {
	return sn{StatSN: p.u32(24), ExpCmdSN: p.u32(28), MaxCmdSN: p.u32(32)}
}

func expectOp(p *PDU, op byte, name string) error {
	if p.Opcode() != op {
		return fmt.Errorf("%w: expected %s (opcode %#x), got opcode %#x", ErrProtocol, name, op, p.Opcode())
	}
	return nil
}

// encodeLUN puts a LUN number in SAM single-level format (peripheral
// addressing below 256, flat space addressing up to 16383).
func encodeLUN(lun uint64) [8]byte {
	var b [8]byte
	if lun < 256 {
		b[1] = byte(lun)
	} else {
		b[0] = 0x40 | byte(lun>>8)&0x3f
		b[1] = byte(lun)
	}
	return b
}

// decodeLUN is the inverse of encodeLUN for the first two bytes.
func decodeLUN(b []byte) uint64 {
	switch b[0] >> 6 {
	case 0:
		return uint64(b[1])
	case 1:
		return uint64(b[0]&0x3f)<<8 | uint64(b[1])
	}
	return binary.BigEndian.Uint64(b)
}

// scsiCommand is a SCSI Command PDU (opcode 0x01).
type scsiCommand struct {
	Immediate   bool
	Final       bool
	Read, Write bool
	// Ordered is the ORDERED task attribute (SAM-5): the target starts
	// the command only once every command it admitted before it ended.
	// Default SIMPLE.
	Ordered        bool
	LUN            uint64
	ITT            uint32
	ExpectedLength uint32
	CmdSN          uint32
	ExpStatSN      uint32
	CDB            []byte // up to 16 bytes
	Data           []byte // immediate data
}

func (c *scsiCommand) encode() (*PDU, error) {
	p := new(PDU)
	if err := c.encodeInto(p); err != nil {
		return nil, err
	}
	return p, nil
}

// encodeInto fills p (which must be zero) without allocating, for the
// per-command hot path.
func (c *scsiCommand) encodeInto(p *PDU) error {
	if len(c.CDB) == 0 || len(c.CDB) > 16 {
		return fmt.Errorf("iscsi: CDB of %d bytes (1..16 supported)", len(c.CDB))
	}
	p.Data = c.Data
	p.BHS[0] = opSCSICommand
	if c.Immediate {
		p.BHS[0] |= 0x40
	}
	flags := byte(1) // task attribute SIMPLE
	if c.Ordered {
		flags = 2 // ORDERED
	}
	if c.Final {
		flags |= 0x80
	}
	if c.Read {
		flags |= 0x40
	}
	if c.Write {
		flags |= 0x20
	}
	p.BHS[1] = flags
	lun := encodeLUN(c.LUN)
	copy(p.BHS[8:16], lun[:])
	p.put32(16, c.ITT)
	p.put32(20, c.ExpectedLength)
	p.put32(24, c.CmdSN)
	p.put32(28, c.ExpStatSN)
	copy(p.BHS[32:48], c.CDB)
	return nil
}

// scsiResponse is a SCSI Response PDU (opcode 0x21).
type scsiResponse struct {
	sn
	ITT       uint32
	Response  byte // 0 = command completed at target
	Status    byte
	Overflow  bool
	Underflow bool
	Residual  uint32
	Sense     []byte
}

func decodeSCSIResponse(p *PDU) (scsiResponse, error) {
	var r scsiResponse
	if err := expectOp(p, opSCSIResponse, "SCSI Response"); err != nil {
		return r, err
	}
	if p.BHS[1]&0x80 == 0 {
		return r, fmt.Errorf("%w: SCSI Response without the F bit", ErrProtocol)
	}
	r.sn = decodeSN(p)
	r.ITT = p.ITT()
	r.Response = p.BHS[2]
	r.Status = p.BHS[3]
	r.Overflow = p.BHS[1]&0x04 != 0
	r.Underflow = p.BHS[1]&0x02 != 0
	if r.Overflow && r.Underflow {
		return r, fmt.Errorf("%w: SCSI Response with both overflow and underflow", ErrProtocol)
	}
	r.Residual = p.u32(44)
	if len(p.Data) > 0 {
		if len(p.Data) < 2 {
			return r, fmt.Errorf("%w: SCSI Response data segment of %d bytes has no SenseLength", ErrProtocol, len(p.Data))
		}
		n := int(binary.BigEndian.Uint16(p.Data))
		if 2+n > len(p.Data) {
			return r, fmt.Errorf("%w: SenseLength %d exceeds the %d-byte data segment", ErrProtocol, n, len(p.Data))
		}
		r.Sense = p.Data[2 : 2+n]
	}
	return r, nil
}

// dataIn is a SCSI Data-In PDU (opcode 0x25) without its data.
type dataIn struct {
	sn
	ITT, TTT     uint32
	Final        bool
	Ack          bool
	HasStatus    bool
	Status       byte
	Overflow     bool
	Underflow    bool
	DataSN       uint32
	BufferOffset uint32
	Residual     uint32
	Length       int
}

func decodeDataIn(p *PDU, dataLen int) (dataIn, error) {
	var d dataIn
	if err := expectOp(p, opDataIn, "Data-In"); err != nil {
		return d, err
	}
	f := p.BHS[1]
	d.sn = decodeSN(p)
	d.ITT, d.TTT = p.ITT(), p.u32(20)
	d.Final = f&0x80 != 0
	d.Ack = f&0x40 != 0
	d.HasStatus = f&0x01 != 0
	d.Overflow = f&0x04 != 0
	d.Underflow = f&0x02 != 0
	d.Status = p.BHS[3]
	d.DataSN, d.BufferOffset, d.Residual = p.u32(36), p.u32(40), p.u32(44)
	d.Length = dataLen
	if d.HasStatus && !d.Final {
		return d, fmt.Errorf("%w: Data-In with status but without the F bit", ErrProtocol)
	}
	if d.Overflow && d.Underflow {
		return d, fmt.Errorf("%w: Data-In with both overflow and underflow", ErrProtocol)
	}
	return d, nil
}

// r2t is a Ready To Transfer PDU (opcode 0x31).
type r2t struct {
	sn
	ITT, TTT     uint32
	R2TSN        uint32
	BufferOffset uint32
	Length       uint32
}

func decodeR2T(p *PDU) (r2t, error) {
	var r r2t
	if err := expectOp(p, opR2T, "R2T"); err != nil {
		return r, err
	}
	if len(p.Data) != 0 {
		return r, fmt.Errorf("%w: R2T with a %d-byte data segment", ErrProtocol, len(p.Data))
	}
	r.sn = decodeSN(p)
	r.ITT, r.TTT = p.ITT(), p.u32(20)
	r.R2TSN, r.BufferOffset, r.Length = p.u32(36), p.u32(40), p.u32(44)
	if r.Length == 0 {
		return r, fmt.Errorf("%w: R2T asks for 0 bytes", ErrProtocol)
	}
	if r.TTT == reservedTag {
		return r, fmt.Errorf("%w: R2T with the reserved target transfer tag", ErrProtocol)
	}
	return r, nil
}

// dataOut is a SCSI Data-Out PDU (opcode 0x05).
type dataOut struct {
	Final        bool
	LUN          uint64
	ITT, TTT     uint32
	ExpStatSN    uint32
	DataSN       uint32
	BufferOffset uint32
	Data         []byte
}

func (d *dataOut) encode() *PDU {
	p := &PDU{Data: d.Data}
	p.BHS[0] = opDataOut
	if d.Final {
		p.BHS[1] = 0x80
	}
	lun := encodeLUN(d.LUN)
	copy(p.BHS[8:16], lun[:])
	p.put32(16, d.ITT)
	p.put32(20, d.TTT)
	p.put32(28, d.ExpStatSN)
	p.put32(36, d.DataSN)
	p.put32(40, d.BufferOffset)
	return p
}

// nopOut is a NOP-Out PDU (opcode 0x00): a ping of ours (ITT set, TTT
// reserved) or the answer to a target's ping (ITT reserved, TTT echoed).
type nopOut struct {
	ITT, TTT  uint32
	LUN       uint64
	CmdSN     uint32
	ExpStatSN uint32
}

func (n *nopOut) encode() *PDU {
	p := &PDU{}
	p.BHS[0] = opNOPOut | 0x40 // always immediate
	p.BHS[1] = 0x80
	lun := encodeLUN(n.LUN)
	copy(p.BHS[8:16], lun[:])
	p.put32(16, n.ITT)
	p.put32(20, n.TTT)
	p.put32(24, n.CmdSN)
	p.put32(28, n.ExpStatSN)
	return p
}

// nopIn is a NOP-In PDU (opcode 0x20).
type nopIn struct {
	sn
	ITT, TTT uint32
	LUN      [8]byte
}

func decodeNOPIn(p *PDU) (nopIn, error) {
	var n nopIn
	if err := expectOp(p, opNOPIn, "NOP-In"); err != nil {
		return n, err
	}
	n.sn = decodeSN(p)
	n.ITT, n.TTT = p.ITT(), p.u32(20)
	copy(n.LUN[:], p.BHS[8:16])
	return n, nil
}

// asyncMessage is an Asynchronous Message PDU (opcode 0x32).
type asyncMessage struct {
	sn
	Event      byte
	VCode      byte
	Parameters [3]uint16
	Sense      []byte
}

// Async events (RFC 7143 section 11.9.1).
const (
	asyncSCSIEvent      = 0
	asyncLogoutRequest  = 1
	asyncDropConnection = 2
	asyncDropSession    = 3
	asyncNegotiate      = 4
)

func decodeAsync(p *PDU) (asyncMessage, error) {
	var a asyncMessage
	if err := expectOp(p, opAsync, "Asynchronous Message"); err != nil {
		return a, err
	}
	a.sn = decodeSN(p)
	a.Event, a.VCode = p.BHS[36], p.BHS[37]
	for i := range a.Parameters {
		a.Parameters[i] = binary.BigEndian.Uint16(p.BHS[38+2*i:])
	}
	if len(p.Data) >= 2 {
		n := int(binary.BigEndian.Uint16(p.Data))
		if 2+n > len(p.Data) {
			return a, fmt.Errorf("%w: async SenseLength %d exceeds the %d-byte data segment", ErrProtocol, n, len(p.Data))
		}
		a.Sense = p.Data[2 : 2+n]
	}
	return a, nil
}

// reject is a Reject PDU (opcode 0x3f); RejectedITT is the ITT of the
// header it carries.
type reject struct {
	sn
	Reason      byte
	RejectedITT uint32
	RejectedOp  byte
}

func decodeReject(p *PDU) (reject, error) {
	var r reject
	if err := expectOp(p, opReject, "Reject"); err != nil {
		return r, err
	}
	r.sn = decodeSN(p)
	r.Reason = p.BHS[2]
	if len(p.Data) < bhsLen {
		return r, fmt.Errorf("%w: Reject carries %d bytes, not the 48-byte rejected header", ErrProtocol, len(p.Data))
	}
	r.RejectedOp = p.Data[0] & 0x3f
	r.RejectedITT = binary.BigEndian.Uint32(p.Data[16:])
	return r, nil
}

// loginRequest is a Login Request PDU (opcode 0x03).
type loginRequest struct {
	Transit   bool
	Continue  bool
	CSG, NSG  byte
	ISID      [6]byte
	TSIH      uint16
	ITT       uint32
	CID       uint16
	CmdSN     uint32
	ExpStatSN uint32
	Data      []byte
}

func (l *loginRequest) encode() *PDU {
	p := &PDU{Data: l.Data}
	p.BHS[0] = opLoginReq | 0x40
	f := l.CSG<<2 | l.NSG
	if l.Transit {
		f |= 0x80
	}
	if l.Continue {
		f |= 0x40
	}
	p.BHS[1] = f
	// VersionMax and VersionMin are both 0.
	copy(p.BHS[8:14], l.ISID[:])
	binary.BigEndian.PutUint16(p.BHS[14:], l.TSIH)
	p.put32(16, l.ITT)
	binary.BigEndian.PutUint16(p.BHS[20:], l.CID)
	p.put32(24, l.CmdSN)
	p.put32(28, l.ExpStatSN)
	return p
}

// loginResponse is a Login Response PDU (opcode 0x23).
type loginResponse struct {
	sn
	Transit      bool
	Continue     bool
	CSG, NSG     byte
	ISID         [6]byte
	TSIH         uint16
	ITT          uint32
	StatusClass  byte
	StatusDetail byte
	Data         []byte
}

func decodeLoginResponse(p *PDU) (loginResponse, error) {
	var l loginResponse
	if err := expectOp(p, opLoginResp, "Login Response"); err != nil {
		return l, err
	}
	f := p.BHS[1]
	l.Transit, l.Continue = f&0x80 != 0, f&0x40 != 0
	l.CSG, l.NSG = f>>2&3, f&3
	if l.Transit && l.Continue {
		return l, fmt.Errorf("%w: Login Response with both T and C bits", ErrProtocol)
	}
	if p.BHS[3] != 0 {
		return l, fmt.Errorf("%w: target speaks iSCSI version %d, not 0", ErrProtocol, p.BHS[3])
	}
	copy(l.ISID[:], p.BHS[8:14])
	l.TSIH = binary.BigEndian.Uint16(p.BHS[14:])
	l.ITT = p.ITT()
	l.sn = decodeSN(p)
	l.StatusClass, l.StatusDetail = p.BHS[36], p.BHS[37]
	l.Data = p.Data
	return l, nil
}

// textRequest is a Text Request PDU (opcode 0x04).
type textRequest struct {
	Final     bool
	Continue  bool
	ITT, TTT  uint32
	CmdSN     uint32
	ExpStatSN uint32
	Data      []byte
}

func (t *textRequest) encode() *PDU {
	p := &PDU{Data: t.Data}
	p.BHS[0] = opTextReq | 0x40
	if t.Final {
		p.BHS[1] |= 0x80
	}
	if t.Continue {
		p.BHS[1] |= 0x40
	}
	p.put32(16, t.ITT)
	p.put32(20, t.TTT)
	p.put32(24, t.CmdSN)
	p.put32(28, t.ExpStatSN)
	return p
}

// textResponse is a Text Response PDU (opcode 0x24).
type textResponse struct {
	sn
	Final, Continue bool
	ITT, TTT        uint32
	Data            []byte
}

func decodeTextResponse(p *PDU) (textResponse, error) {
	var t textResponse
	if err := expectOp(p, opTextResp, "Text Response"); err != nil {
		return t, err
	}
	t.Final, t.Continue = p.BHS[1]&0x80 != 0, p.BHS[1]&0x40 != 0
	if t.Final && t.Continue {
		return t, fmt.Errorf("%w: Text Response with both F and C bits", ErrProtocol)
	}
	t.sn = decodeSN(p)
	t.ITT, t.TTT = p.ITT(), p.u32(20)
	t.Data = p.Data
	return t, nil
}

// logoutRequest is a Logout Request PDU (opcode 0x06) closing the session.
type logoutRequest struct {
	ITT       uint32
	CID       uint16
	CmdSN     uint32
	ExpStatSN uint32
}

func (l *logoutRequest) encode() *PDU {
	p := &PDU{}
	p.BHS[0] = opLogoutReq | 0x40
	p.BHS[1] = 0x80 // reason 0: close the session
	p.put32(16, l.ITT)
	binary.BigEndian.PutUint16(p.BHS[20:], l.CID)
	p.put32(24, l.CmdSN)
	p.put32(28, l.ExpStatSN)
	return p
}

// logoutResponse is a Logout Response PDU (opcode 0x26).
type logoutResponse struct {
	sn
	ITT      uint32
	Response byte
}

func decodeLogoutResponse(p *PDU) (logoutResponse, error) {
	var l logoutResponse
	if err := expectOp(p, opLogoutResp, "Logout Response"); err != nil {
		return l, err
	}
	l.sn = decodeSN(p)
	l.ITT, l.Response = p.ITT(), p.BHS[2]
	return l, nil
}
