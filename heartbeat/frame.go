package heartbeat

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Wire format of one heartbeat frame, version 3 (all integers
// big-endian). The same frame travels as a UDP datagram, inside a serial
// envelope (serial.go) and in a disk slot (disk.go).
//
//	0   4  magic "HMHB"
//	4   1  version (3)
//	5   1  type (MsgHeartbeat, MsgTable)
//	6   2  payload length P
//	8   8  boot ID of the sender (start time in ns; later boots are larger)
//	16  8  sequence number (per sender boot, per medium, strictly increasing)
//	24  8  run nonce of the sender (random, non-zero, new at every start)
//	32  1+ cluster name (length byte + bytes, 1..64)
//	..  1+ sender node ID (1..64)
//	..  1+ medium name (1..32): the medium the sender sent it on
//	..  1  echo count E (0..MaxEcho)
//	..  8E echoes: the run nonce of every peer the sender has heard in that
//	       peer's current run (non-zero, no duplicates)
//	..  P  payload: a Heartbeat (message.go: round, term, role, flags, ping
//	       score, table version, app state) or a Table
//	..  32 HMAC-SHA256 over everything before it, under the cluster key
//
// The medium name is authenticated so that a frame captured on one medium
// cannot make another medium look alive. The echoes are the freshness
// proof (see Machine.Receive): a frame counts as a beat for node X only
// if it echoes X's current run nonce, which no frame captured before X
// started can contain.
//
// Versions 1 (no run nonce, no echoes) and 2 (a heartbeat payload without
// round, eligibility and app state) are refused as malformed: both nodes
// of a cluster must run the same frame version.
//
// Size: a heartbeat frame of the largest cluster (64 nodes, 63 echoes,
// names at their limits) with the largest app state is 1273 bytes, well
// under MaxFrame; a two-node cluster's is at most 777 (see MinSlotSize).

const (
	frameMagic   = "HMHB"
	frameVersion = 3
	macLen       = sha256.Size
	headerLen    = 32
	// MaxFrame bounds one frame; a larger one is refused.
	MaxFrame = 8192
	// MaxEcho bounds the echoes of one frame: one per peer of the largest
	// cluster (64 nodes).
	MaxEcho = 63
	echoLen = 8
)

// MsgType is the kind of frame.
type MsgType uint8

const (
	MsgHeartbeat MsgType = 1 // liveness, role, eligibility, table version, app state
	MsgTable     MsgType = 2 // the index table, from the coordinator
)

// Frame is one decoded, authenticated message.
type Frame struct {
	Type    MsgType
	Boot    uint64
	Seq     uint64
	Nonce   uint64 // the sender's run nonce
	Cluster string
	From    NodeID
	Medium  string
	Echo    []uint64 // run nonces of the peers the sender has heard
	Payload []byte
}

// Decode errors, by class; the runner counts them.
var (
	ErrMalformed = errors.New("malformed heartbeat frame")
	ErrAuth      = errors.New("heartbeat frame fails authentication (wrong cluster key or forged)")
	ErrCluster   = errors.New("heartbeat frame from another cluster")
)

// Codec signs and verifies frames with one cluster key.
type Codec struct {
	key     []byte
	cluster string
}

// NewCodec returns a codec for cluster with key.
func NewCodec(cluster string, key []byte) *Codec {
	return &Codec{key: append([]byte(nil), key...), cluster: cluster}
}

// Encode returns the signed wire form of f (f.Cluster is set by the codec).
func (c *Codec) Encode(f Frame) ([]byte, error) {
	if len(f.From) == 0 || len(f.From) > 64 || len(f.Medium) == 0 || len(f.Medium) > 32 ||
		len(c.cluster) == 0 || len(c.cluster) > 64 {
		return nil, fmt.Errorf("%w: name length out of range", ErrMalformed)
	}
	if err := checkNonces(f.Nonce, f.Echo); err != nil {
		return nil, err
	}
	n := headerLen + 4 + len(c.cluster) + len(f.From) + len(f.Medium) + echoLen*len(f.Echo) + len(f.Payload) + macLen
	if n > MaxFrame || len(f.Payload) > 0xffff {
		return nil, fmt.Errorf("%w: %d bytes exceed the %d byte limit", ErrMalformed, n, MaxFrame)
	}
	b := make([]byte, 0, n)
	b = append(b, frameMagic...)
	b = append(b, frameVersion, byte(f.Type))
	b = binary.BigEndian.AppendUint16(b, uint16(len(f.Payload)))
	b = binary.BigEndian.AppendUint64(b, f.Boot)
	b = binary.BigEndian.AppendUint64(b, f.Seq)
	b = binary.BigEndian.AppendUint64(b, f.Nonce)
	for _, s := range []string{c.cluster, string(f.From), f.Medium} {
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	b = append(b, byte(len(f.Echo)))
	for _, e := range f.Echo {
		b = binary.BigEndian.AppendUint64(b, e)
	}
	b = append(b, f.Payload...)
	m := hmac.New(sha256.New, c.key)
	m.Write(b)
	return m.Sum(b), nil
}

// Decode parses and authenticates one frame. It checks every length and
// never panics on hostile input; p may be followed by padding (disk slots)
// only if the frame's own lengths say where it ends.
func (c *Codec) Decode(p []byte) (Frame, int, error) {
	var f Frame
	if len(p) < headerLen+4+macLen {
		return f, 0, fmt.Errorf("%w: %d bytes is shorter than a header", ErrMalformed, len(p))
	}
	if string(p[:4]) != frameMagic {
		return f, 0, fmt.Errorf("%w: bad magic", ErrMalformed)
	}
	if p[4] != frameVersion {
		return f, 0, fmt.Errorf("%w: version %d, this node speaks %d (do both nodes run the same hamirror release?)", ErrMalformed, p[4], frameVersion)
	}
	f.Type = MsgType(p[5])
	if f.Type != MsgHeartbeat && f.Type != MsgTable {
		return f, 0, fmt.Errorf("%w: type %d", ErrMalformed, p[5])
	}
	plen := int(binary.BigEndian.Uint16(p[6:]))
	f.Boot = binary.BigEndian.Uint64(p[8:])
	f.Seq = binary.BigEndian.Uint64(p[16:])
	f.Nonce = binary.BigEndian.Uint64(p[24:])
	off := headerLen
	var names [3]string
	limits := [3]int{64, 64, 32}
	for i := range names {
		if off >= len(p) {
			return f, 0, fmt.Errorf("%w: truncated names", ErrMalformed)
		}
		l := int(p[off])
		off++
		if l == 0 || l > limits[i] || off+l > len(p) {
			return f, 0, fmt.Errorf("%w: name length %d", ErrMalformed, l)
		}
		names[i] = string(p[off : off+l])
		off += l
	}
	if off >= len(p) {
		return f, 0, fmt.Errorf("%w: truncated before the echo count", ErrMalformed)
	}
	ne := int(p[off])
	off++
	if ne > MaxEcho || off+ne*echoLen > len(p) {
		return f, 0, fmt.Errorf("%w: %d echoes", ErrMalformed, ne)
	}
	if ne > 0 {
		f.Echo = make([]uint64, ne)
		for i := range f.Echo {
			f.Echo[i] = binary.BigEndian.Uint64(p[off:])
			off += echoLen
		}
	}
	if err := checkNonces(f.Nonce, f.Echo); err != nil {
		return Frame{}, 0, err
	}
	end := off + plen + macLen
	if end > len(p) || end > MaxFrame {
		return f, 0, fmt.Errorf("%w: payload length %d overruns the frame", ErrMalformed, plen)
	}
	m := hmac.New(sha256.New, c.key)
	m.Write(p[:off+plen])
	if !hmac.Equal(m.Sum(nil), p[off+plen:end]) {
		return f, 0, ErrAuth
	}
	// The MAC covers the cluster name, so a mismatch here means another
	// cluster sharing our key: refuse it all the same.
	if names[0] != c.cluster {
		return f, 0, fmt.Errorf("%w %q", ErrCluster, names[0])
	}
	f.Cluster, f.From, f.Medium = names[0], NodeID(names[1]), names[2]
	f.Payload = append([]byte(nil), p[off:off+plen]...)
	return f, end, nil
}

// checkNonces enforces what every frame's nonces must satisfy: a non-zero
// run nonce, at most MaxEcho echoes, none zero, none twice.
func checkNonces(nonce uint64, echo []uint64) error {
	if nonce == 0 {
		return fmt.Errorf("%w: zero run nonce", ErrMalformed)
	}
	if len(echo) > MaxEcho {
		return fmt.Errorf("%w: %d echoes exceed %d", ErrMalformed, len(echo), MaxEcho)
	}
	for i, e := range echo {
		if e == 0 || slices.Contains(echo[:i], e) {
			return fmt.Errorf("%w: echo %d is zero or repeated", ErrMalformed, i)
		}
	}
	return nil
}
