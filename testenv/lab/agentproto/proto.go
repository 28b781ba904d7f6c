package agentproto

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Frame types.
const (
	TypePing   byte = 'P' // host → agent: are you there? payload: Ping
	TypePong   byte = 'p' // agent → host: yes. payload: Ping echoed
	TypeExec   byte = 'X' // host → agent: run a command. payload: Exec
	TypeResult byte = 'R' // agent → host: the command finished. payload: Result
	TypePut    byte = 'W' // host → agent: write a file. payload: Put
	TypeSerial byte = 'S' // reserved for Serial messages framed on their own
)

// MaxPayload bounds one frame's payload; longer frames are refused.
const MaxPayload = 16 << 20

// HeaderSize is the size of a frame header: magic (2), type (1), length (4).
const HeaderSize = 7

var magic = [2]byte{'H', 'L'}

// ErrBadMagic means the stream is not (or no longer) aligned on a frame.
var ErrBadMagic = errors.New("agentproto: bad frame magic (stream out of sync)")

// Ping checks that the agent is alive; Nonce is echoed back in the Pong.
type Ping struct {
	Nonce uint64 `json:"nonce"`
}

// Exec asks the agent to run Argv and report its exit code and output.
type Exec struct {
	ID        uint64   `json:"id"`
	Argv      []string `json:"argv"`
	Stdin     []byte   `json:"stdin,omitempty"`
	TimeoutMS int64    `json:"timeout_ms,omitempty"` // 0: the agent's default (10 minutes)
}

// Result is the outcome of one Exec or Put.
type Result struct {
	ID     uint64 `json:"id"`
	Exit   int    `json:"exit"` // -1 when the command could not start or was killed
	Stdout []byte `json:"stdout,omitempty"`
	Stderr []byte `json:"stderr,omitempty"`
	Error  string `json:"error,omitempty"` // why the command could not run or was killed
}

// Put asks the agent to write Data to Path with Mode (creating parent folders).
type Put struct {
	ID   uint64 `json:"id"`
	Path string `json:"path"`
	Mode uint32 `json:"mode"`
	Data []byte `json:"data"`
}

// Serial is one test message over a UART: a sequence number, a body and
// the CRC-32 (IEEE) of the body.
type Serial struct {
	Seq  uint64 `json:"seq"`
	Body []byte `json:"body"`
	CRC  uint32 `json:"crc"`
}

// AppendFrame appends one frame holding payload to dst.
func AppendFrame(dst []byte, typ byte, payload []byte) ([]byte, error) {
	if len(payload) > MaxPayload {
		return dst, fmt.Errorf("agentproto: payload of %d bytes exceeds the %d byte limit", len(payload), MaxPayload)
	}
	dst = append(dst, magic[0], magic[1], typ)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	return append(dst, payload...), nil
}

// Encode marshals v as JSON and frames it.
func Encode(typ byte, v any) ([]byte, error) {
	p, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("agentproto: encoding %c frame: %w", typ, err)
	}
	return AppendFrame(nil, typ, p)
}

// ParseHeader checks a frame header and returns its type and payload length.
func ParseHeader(h []byte) (typ byte, n int, err error) {
	if len(h) < HeaderSize {
		return 0, 0, fmt.Errorf("agentproto: short header (%d of %d bytes)", len(h), HeaderSize)
	}
	if h[0] != magic[0] || h[1] != magic[1] {
		return 0, 0, ErrBadMagic
	}
	l := binary.BigEndian.Uint32(h[3:7])
	if l > MaxPayload {
		return 0, 0, fmt.Errorf("agentproto: frame announces %d bytes, limit is %d", l, MaxPayload)
	}
	return h[2], int(l), nil
}

// ReadFrame reads one frame from r. A stream that ends cleanly between
// frames returns io.EOF; one that ends inside a frame, io.ErrUnexpectedEOF.
func ReadFrame(r io.Reader) (typ byte, payload []byte, err error) {
	var h [HeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	typ, n, err := ParseHeader(h[:])
	if err != nil {
		return 0, nil, err
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, fmt.Errorf("agentproto: reading %d byte payload: %w", n, err)
	}
	return typ, payload, nil
}

// Decode unmarshals a payload strictly into v: unknown fields and trailing
// data are errors.
func Decode(payload []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("agentproto: decoding payload: %w", err)
	}
	if dec.More() {
		return errors.New("agentproto: trailing data after payload")
	}
	return nil
}

// Writer writes frames to an underlying stream.
type Writer struct{ w io.Writer }

// NewWriter returns a Writer on w. It does not buffer; each Write is one
// write call of a whole frame.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write encodes v and writes it as one frame of type typ.
func (w *Writer) Write(typ byte, v any) error {
	b, err := Encode(typ, v)
	if err != nil {
		return err
	}
	_, err = w.w.Write(b)
	return err
}
