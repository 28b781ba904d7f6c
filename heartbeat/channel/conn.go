package channel

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// Message wire format after the handshake, each way:
//
//	0  4  length L of the sealed message (16..MaxMessage+16)
//	4  8  sequence number: 1 for the first message of the direction, then +1
//	12 L  AES-256-GCM seal of the message; nonce = 4 zero bytes | sequence,
//	      additional data = the 12 header bytes
//
// The keys are new for every connection (handshake.go), so a message can
// only ever be valid at one place in one direction of one connection.

// MaxMessage bounds one message's plaintext.
const MaxMessage = 4 << 20

const frameHeader = 12

// Conn is an authenticated message stream to one peer. Send and Recv may
// be used by one goroutine each at the same time.
type Conn struct {
	raw  net.Conn
	peer heartbeat.NodeID

	smu     sync.Mutex
	seal    cipher.AEAD
	sendSeq uint64

	open    cipher.AEAD
	recvSeq uint64
	onBad   func(error) // counts refused messages
}

func gcm(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func newConn(raw net.Conn, peer heartbeat.NodeID, sendKey, recvKey []byte) (*Conn, error) {
	s, err := gcm(sendKey)
	if err != nil {
		return nil, err
	}
	r, err := gcm(recvKey)
	if err != nil {
		return nil, err
	}
	return &Conn{raw: raw, peer: peer, seal: s, open: r, onBad: func(error) {}}, nil
}

// Peer is the authenticated node at the other end.
func (c *Conn) Peer() heartbeat.NodeID { return c.peer }

// Close closes the underlying stream.
func (c *Conn) Close() error { return c.raw.Close() }

// SetDeadline bounds the next reads and writes (see net.Conn).
func (c *Conn) SetDeadline(t time.Time) error { return c.raw.SetDeadline(t) }

func nonceFor(seq uint64) []byte {
	n := make([]byte, 12)
	binary.BigEndian.PutUint64(n[4:], seq)
	return n
}

// Send sends one message.
func (c *Conn) Send(msg []byte) error {
	if len(msg) > MaxMessage {
		return fmt.Errorf("channel: message of %d bytes exceeds %d", len(msg), MaxMessage)
	}
	c.smu.Lock()
	defer c.smu.Unlock()
	c.sendSeq++
	b := make([]byte, frameHeader, frameHeader+len(msg)+c.seal.Overhead())
	binary.BigEndian.PutUint32(b, uint32(len(msg)+c.seal.Overhead()))
	binary.BigEndian.PutUint64(b[4:], c.sendSeq)
	b = c.seal.Seal(b, nonceFor(c.sendSeq), msg, b[:frameHeader])
	_, err := c.raw.Write(b)
	return err
}

// Recv returns the next message. A message that fails authentication or
// is out of sequence is refused with ErrAuth or ErrReplay, counted, and
// the connection is closed: its integrity is gone.
func (c *Conn) Recv() ([]byte, error) {
	var h [frameHeader]byte
	if _, err := io.ReadFull(c.raw, h[:]); err != nil {
		return nil, err
	}
	n, seq, err := parseFrameHeader(h[:], c.open.Overhead())
	if err != nil {
		return nil, c.refuse(err)
	}
	sealed := make([]byte, n)
	if _, err := io.ReadFull(c.raw, sealed); err != nil {
		return nil, err
	}
	msg, err := c.openFrame(h[:], seq, sealed)
	if err != nil {
		return nil, c.refuse(err)
	}
	return msg, nil
}

func (c *Conn) refuse(err error) error {
	c.onBad(err)
	c.raw.Close()
	return err
}

func parseFrameHeader(h []byte, overhead int) (n int, seq uint64, err error) {
	if len(h) < frameHeader {
		return 0, 0, fmt.Errorf("%w: %d byte frame header", ErrMalformed, len(h))
	}
	n = int(binary.BigEndian.Uint32(h))
	if n < overhead || n > MaxMessage+overhead {
		return 0, 0, fmt.Errorf("%w: sealed length %d", ErrMalformed, n)
	}
	return n, binary.BigEndian.Uint64(h[4:]), nil
}

// openFrame checks the sequence and opens a sealed message. An authentic
// message at the wrong place is a replay (or reorder); one that does not
// open at all is forged.
func (c *Conn) openFrame(h []byte, seq uint64, sealed []byte) ([]byte, error) {
	msg, err := c.open.Open(nil, nonceFor(seq), sealed, h[:frameHeader])
	if err != nil {
		return nil, fmt.Errorf("%w: message %d from %s", ErrAuth, seq, c.peer)
	}
	if seq != c.recvSeq+1 {
		return nil, fmt.Errorf("%w: message %d from %s, expected %d", ErrReplay, seq, c.peer, c.recvSeq+1)
	}
	c.recvSeq = seq
	return msg, nil
}
