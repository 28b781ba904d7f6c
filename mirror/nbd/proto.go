package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Magic numbers (doc/proto.md of the NBD project).
const (
	magicNBD        = 0x4e42444d41474943 // "NBDMAGIC"
	magicIHaveOpt   = 0x49484156454f5054 // "IHAVEOPT"
	magicOptReply   = 0x0003e889045565a9
	magicRequest    = 0x25609513
	magicSimple     = 0x67446698
	magicStructured = 0x668e33ef
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	clientFixedNewstyle = 1 << 0
	clientNoZeroes      = 1 << 1
)

// Transmission flags.
const (
	FlagHasFlags        = 1 << 0
	FlagReadOnly        = 1 << 1
	FlagSendFlush       = 1 << 2
	FlagSendFUA         = 1 << 3
	FlagRotational      = 1 << 4
	FlagSendTrim        = 1 << 5
	FlagSendWriteZeroes = 1 << 6
	FlagSendDF          = 1 << 7
	FlagCanMultiConn    = 1 << 8
)

// Options.
const (
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10
	optExtendedHeaders = 11
)

// Option reply types.
const (
	repAck          = 1
	repServer       = 2
	repInfo         = 3
	repErrUnsup     = 1<<31 | 1
	repErrPolicy    = 1<<31 | 2
	repErrInvalid   = 1<<31 | 3
	repErrUnknown   = 1<<31 | 6
	repErrShutdown  = 1<<31 | 7
	repErrBlockSize = 1<<31 | 8
	repErrTooBig    = 1<<31 | 9
)

// NBD_INFO types.
const (
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3
)

// Commands.
const (
	CmdRead        = 0
	CmdWrite       = 1
	CmdDisc        = 2
	CmdFlush       = 3
	CmdTrim        = 4
	CmdCache       = 5
	CmdWriteZeroes = 6
	CmdBlockStatus = 7
)

// Command flags.
const (
	CmdFlagFUA      = 1 << 0
	CmdFlagNoHole   = 1 << 1
	CmdFlagDF       = 1 << 2
	CmdFlagReqOne   = 1 << 3
	CmdFlagFastZero = 1 << 4
)

// Structured reply flags and chunk types.
const (
	replyFlagDone = 1 << 0

	replyTypeNone       = 0
	replyTypeOffsetData = 1
	replyTypeError      = 1<<15 | 1
)

// Errors carried in replies (the protocol's fixed errno values).
const (
	EPERM     = 1
	EIO       = 5
	ENOMEM    = 12
	EINVAL    = 22
	ENOSPC    = 28
	EOVERFLOW = 75
	ENOTSUP   = 95
	ESHUTDOWN = 108
)

// requestSize is the length of a (compact) request header on the wire.
const requestSize = 28

// Request is one decoded transmission-phase request header. The payload of a
// write follows it on the wire and is not part of the header.
type Request struct {
	Flags  uint16
	Type   uint16
	Handle uint64
	Offset uint64
	Length uint32
}

// ErrBadMagic is returned by DecodeRequest when the header does not start
// with the request magic: the stream is out of step and the only safe answer
// is to drop the connection.
var ErrBadMagic = errors.New("nbd: request magic mismatch (client out of step or not speaking NBD)")

// DecodeRequest decodes exactly one request header from b, which must be
// requestSize bytes. It checks only framing (length and magic); whether the
// command, flags and range make sense is checked by validate.
func DecodeRequest(b []byte) (Request, error) {
	if len(b) != requestSize {
		return Request{}, fmt.Errorf("nbd: request header is %d bytes, want %d", len(b), requestSize)
	}
	if m := binary.BigEndian.Uint32(b[0:4]); m != magicRequest {
		return Request{}, fmt.Errorf("%w: got %#08x", ErrBadMagic, m)
	}
	return Request{
		Flags:  binary.BigEndian.Uint16(b[4:6]),
		Type:   binary.BigEndian.Uint16(b[6:8]),
		Handle: binary.BigEndian.Uint64(b[8:16]),
		Offset: binary.BigEndian.Uint64(b[16:24]),
		Length: binary.BigEndian.Uint32(b[24:28]),
	}, nil
}

// AppendRequest appends the wire form of r to b (used by tests and the
// fuzzer's round trip).
func AppendRequest(b []byte, r Request) []byte {
	b = binary.BigEndian.AppendUint32(b, magicRequest)
	b = binary.BigEndian.AppendUint16(b, r.Flags)
	b = binary.BigEndian.AppendUint16(b, r.Type)
	b = binary.BigEndian.AppendUint64(b, r.Handle)
	b = binary.BigEndian.AppendUint64(b, r.Offset)
	return binary.BigEndian.AppendUint32(b, r.Length)
}

// limits are the export's geometry that every request is checked against.
type limits struct {
	size       uint64 // export size in bytes
	minBlock   uint32 // alignment of offsets and lengths
	maxPayload uint32 // largest READ/WRITE
	readOnly   bool
	structured bool // structured replies negotiated (DF allowed)
}

// verdict is what validate decided about a request.
type verdict struct {
	errno  uint32 // 0: serve it
	reason string // human text for a structured error reply
}

// validate checks a decoded request against the export. It is pure: the
// connection loop acts on the verdict. Requests with a payload that is
// refused still have their payload consumed by the caller.
func (l *limits) validate(r Request) verdict {
	const fuaOnly = CmdFlagFUA
	allowed := uint16(0)
	switch r.Type {
	case CmdRead:
		allowed = fuaOnly
		if l.structured {
			allowed |= CmdFlagDF
		}
	case CmdWrite, CmdTrim:
		allowed = fuaOnly
	case CmdWriteZeroes:
		allowed = fuaOnly | CmdFlagNoHole
	case CmdFlush, CmdDisc:
		allowed = fuaOnly
	default:
		return verdict{EINVAL, fmt.Sprintf("command %d is not supported", r.Type)}
	}
	if r.Flags&^allowed != 0 {
		return verdict{EINVAL, fmt.Sprintf("flags %#x are not valid for command %d", r.Flags&^allowed, r.Type)}
	}
	switch r.Type {
	case CmdFlush, CmdDisc:
		if r.Offset != 0 || r.Length != 0 {
			return verdict{EINVAL, "flush and disconnect must have offset and length zero"}
		}
		return verdict{}
	}
	if l.readOnly && r.Type != CmdRead {
		return verdict{EPERM, "export is read-only"}
	}
	if r.Length == 0 {
		return verdict{EINVAL, "zero-length request"}
	}
	if (r.Type == CmdRead || r.Type == CmdWrite) && r.Length > l.maxPayload {
		return verdict{EOVERFLOW, fmt.Sprintf("request of %d bytes exceeds the maximum of %d", r.Length, l.maxPayload)}
	}
	end := r.Offset + uint64(r.Length)
	if end < r.Offset || end > l.size {
		if r.Type == CmdRead {
			return verdict{EINVAL, fmt.Sprintf("range %d+%d is beyond the export size %d", r.Offset, r.Length, l.size)}
		}
		return verdict{ENOSPC, fmt.Sprintf("range %d+%d is beyond the export size %d", r.Offset, r.Length, l.size)}
	}
	if r.Type != CmdTrim && (r.Offset%uint64(l.minBlock) != 0 || r.Length%l.minBlock != 0) {
		return verdict{EINVAL, fmt.Sprintf("range %d+%d is not aligned to the %d-byte block size", r.Offset, r.Length, l.minBlock)}
	}
	return verdict{}
}

// appendSimpleReply appends a simple reply header.
func appendSimpleReply(b []byte, errno uint32, handle uint64) []byte {
	b = binary.BigEndian.AppendUint32(b, magicSimple)
	b = binary.BigEndian.AppendUint32(b, errno)
	return binary.BigEndian.AppendUint64(b, handle)
}

// appendChunkHeader appends a structured reply chunk header.
func appendChunkHeader(b []byte, flags, typ uint16, handle uint64, length uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, magicStructured)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	return binary.BigEndian.AppendUint32(b, length)
}

// appendErrorChunk appends a complete final NBD_REPLY_TYPE_ERROR chunk.
func appendErrorChunk(b []byte, handle uint64, errno uint32, msg string) []byte {
	if len(msg) > 4096 {
		msg = msg[:4096]
	}
	b = appendChunkHeader(b, replyFlagDone, replyTypeError, handle, uint32(6+len(msg)))
	b = binary.BigEndian.AppendUint32(b, errno)
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

// appendOptReply appends a fixed-newstyle option reply header and payload.
func appendOptReply(b []byte, opt, typ uint32, payload []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, magicOptReply)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// infoRequest is the decoded payload of NBD_OPT_INFO / NBD_OPT_GO.
type infoRequest struct {
	name  string
	infos []uint16
}

// decodeInfoRequest strictly decodes the INFO/GO payload: a 32-bit name
// length, the name, a 16-bit count and that many 16-bit info types, with no
// bytes left over.
func decodeInfoRequest(b []byte) (infoRequest, error) {
	if len(b) < 6 {
		return infoRequest{}, fmt.Errorf("payload of %d bytes is shorter than the 6-byte minimum", len(b))
	}
	n := binary.BigEndian.Uint32(b[0:4])
	if uint64(n) > uint64(len(b)-6) {
		return infoRequest{}, fmt.Errorf("name length %d overruns the %d-byte payload", n, len(b))
	}
	if n > maxString {
		return infoRequest{}, fmt.Errorf("name length %d exceeds %d", n, maxString)
	}
	name := b[4 : 4+n]
	rest := b[4+n:]
	count := int(binary.BigEndian.Uint16(rest[0:2]))
	rest = rest[2:]
	if len(rest) != 2*count {
		return infoRequest{}, fmt.Errorf("%d info requests need %d bytes, payload has %d", count, 2*count, len(rest))
	}
	req := infoRequest{name: string(name), infos: make([]uint16, count)}
	for i := range count {
		req.infos[i] = binary.BigEndian.Uint16(rest[2*i:])
	}
	return req, nil
}

// maxString is the protocol's limit on strings (export names, messages).
const maxString = 4096
