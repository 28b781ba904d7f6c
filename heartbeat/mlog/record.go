package mlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// Entry is one management log entry. (Node, Seq) names it in the whole
// cluster: Seq counts the entries Node wrote, from 1, without gaps.
type Entry struct {
	Time      time.Time        `json:"time"`
	Node      heartbeat.NodeID `json:"node"`
	Seq       uint64           `json:"seq"`
	Level     slog.Level       `json:"level"`
	Component string           `json:"component"`
	Message   string           `json:"message"`
	Fields    []Field          `json:"fields,omitempty"`
}

// Field is one structured key/value of an entry.
type Field struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Limits of one entry; longer values are cut by Write, refused by decode.
const (
	MaxName    = 64   // node, component, field key
	MaxMessage = 4096 // message
	MaxValue   = 1024 // field value
	MaxFields  = 32
)

// Record format (on disk, in the spool and on the channel), big-endian:
//
//	0 4 payload length N (1..maxPayload)
//	4 4 CRC-32C of the payload
//	8 N payload:
//	    1  version (1)
//	    8  time, Unix nanoseconds
//	    1+ node (str8, 1..64)
//	    8  sequence (>= 1)
//	    1  level (int8: slog's -4 debug, 0 info, 4 warn, 8 error)
//	    1+ component (str8, 0..64)
//	    2+ message (str16, 0..4096)
//	    1  field count (0..32), each: key (str8, 1..64), value (str16, 0..1024)
//
// A record whose length or checksum does not hold is never parsed: at the
// end of a file it is a torn write and is cut.

const (
	recHeader  = 8
	recVersion = 1
	maxPayload = 1 + 8 + 1 + MaxName + 8 + 1 + 1 + MaxName + 2 + MaxMessage + 1 + MaxFields*(1+MaxName+2+MaxValue)
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Decode errors.
var (
	ErrCorrupt = errors.New("mlog: corrupt record")
	ErrTorn    = errors.New("mlog: torn record")
)

func (e Entry) validate() error {
	switch {
	case len(e.Node) == 0 || len(e.Node) > MaxName:
		return fmt.Errorf("%w: node name length %d", ErrCorrupt, len(e.Node))
	case e.Seq == 0:
		return fmt.Errorf("%w: sequence 0", ErrCorrupt)
	case e.Level < -128 || e.Level > 127:
		return fmt.Errorf("%w: level %d", ErrCorrupt, e.Level)
	case len(e.Component) > MaxName:
		return fmt.Errorf("%w: component length %d", ErrCorrupt, len(e.Component))
	case len(e.Message) > MaxMessage:
		return fmt.Errorf("%w: message length %d", ErrCorrupt, len(e.Message))
	case len(e.Fields) > MaxFields:
		return fmt.Errorf("%w: %d fields", ErrCorrupt, len(e.Fields))
	}
	for _, f := range e.Fields {
		if len(f.Key) == 0 || len(f.Key) > MaxName || len(f.Value) > MaxValue {
			return fmt.Errorf("%w: field %q", ErrCorrupt, f.Key)
		}
	}
	return nil
}

// marshalPayload encodes e (which must validate).
func (e Entry) marshalPayload() []byte {
	b := make([]byte, 0, 64+len(e.Message))
	b = append(b, recVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time.UnixNano()))
	b = append(append(b, byte(len(e.Node))), e.Node...)
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	b = append(b, byte(int8(e.Level)))
	b = append(append(b, byte(len(e.Component))), e.Component...)
	b = append(binary.BigEndian.AppendUint16(b, uint16(len(e.Message))), e.Message...)
	b = append(b, byte(len(e.Fields)))
	for _, f := range e.Fields {
		b = append(append(b, byte(len(f.Key))), f.Key...)
		b = append(binary.BigEndian.AppendUint16(b, uint16(len(f.Value))), f.Value...)
	}
	return b
}

// AppendRecord appends e's record (header and payload) to b.
func AppendRecord(b []byte, e Entry) ([]byte, error) {
	if err := e.validate(); err != nil {
		return b, err
	}
	p := e.marshalPayload()
	b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(p, castagnoli))
	return append(b, p...), nil
}

type rd struct {
	p   []byte
	err error
}

func (r *rd) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.p) < n {
		r.err = fmt.Errorf("%w: payload truncated", ErrCorrupt)
		return nil
	}
	b := r.p[:n]
	r.p = r.p[n:]
	return b
}

func (r *rd) u8() byte {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *rd) u16() int {
	if b := r.take(2); b != nil {
		return int(binary.BigEndian.Uint16(b))
	}
	return 0
}

func (r *rd) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// DecodePayload decodes one record payload strictly.
func DecodePayload(p []byte) (Entry, error) {
	var e Entry
	r := &rd{p: p}
	if v := r.u8(); r.err == nil && v != recVersion {
		return e, fmt.Errorf("%w: version %d", ErrCorrupt, v)
	}
	e.Time = time.Unix(0, int64(r.u64()))
	e.Node = heartbeat.NodeID(r.take(int(r.u8())))
	e.Seq = r.u64()
	e.Level = slog.Level(int8(r.u8()))
	e.Component = string(r.take(int(r.u8())))
	e.Message = string(r.take(r.u16()))
	n := int(r.u8())
	if n > MaxFields {
		return Entry{}, fmt.Errorf("%w: %d fields", ErrCorrupt, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		var f Field
		f.Key = string(r.take(int(r.u8())))
		f.Value = string(r.take(r.u16()))
		e.Fields = append(e.Fields, f)
	}
	if r.err == nil && len(r.p) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(r.p))
	}
	if r.err != nil {
		return Entry{}, r.err
	}
	if err := e.validate(); err != nil {
		return Entry{}, err
	}
	return e, nil
}

// DecodeRecord decodes the record at the start of b and returns its length.
// ErrTorn: b ends inside the record, or its checksum fails (a torn write
// leaves either); ErrCorrupt: the checksum holds but the payload does not
// decode (a bug or a hostile peer, never a torn write).
func DecodeRecord(b []byte) (Entry, int, error) {
	if len(b) < recHeader {
		return Entry{}, 0, fmt.Errorf("%w: %d bytes left, a header is %d", ErrTorn, len(b), recHeader)
	}
	n := int(binary.BigEndian.Uint32(b))
	if n == 0 || n > maxPayload {
		return Entry{}, 0, fmt.Errorf("%w: record length %d", ErrTorn, n)
	}
	if len(b) < recHeader+n {
		return Entry{}, 0, fmt.Errorf("%w: record of %d bytes, %d left", ErrTorn, n, len(b)-recHeader)
	}
	p := b[recHeader : recHeader+n]
	if crc32.Checksum(p, castagnoli) != binary.BigEndian.Uint32(b[4:]) {
		return Entry{}, 0, fmt.Errorf("%w: checksum mismatch", ErrTorn)
	}
	e, err := DecodePayload(p)
	if err != nil {
		return Entry{}, 0, err
	}
	return e, recHeader + n, nil
}

// DecodeAll decodes consecutive records; it returns the entries before the
// first bad record, the length they span, and the error that stopped it
// (nil when b ends exactly after a record).
func DecodeAll(b []byte) ([]Entry, int, error) {
	var es []Entry
	off := 0
	for off < len(b) {
		e, n, err := DecodeRecord(b[off:])
		if err != nil {
			return es, off, err
		}
		es = append(es, e)
		off += n
	}
	return es, off, nil
}
