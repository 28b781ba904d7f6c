package channel

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// Handshake wire format (all integers big-endian). Every handshake message
// is sent as a 2-byte length followed by the message:
//
//	client hello:  "HMCH" 1 1 | cluster (str8) | from (str8) | to (str8) | nonceC [32]
//	server hello:  "HMCH" 1 2 | from (str8) | nonceS [32] | HMAC(K, "server" | client hello | server hello before the MAC)
//	client finish: "HMCH" 1 3 | HMAC(K, "client" | client hello | server hello)
//
// str8 is a length byte (1..64) and the bytes. K is the channel key
// (ChannelKey). Each side proves it holds K over the other side's fresh
// nonce, so a recorded handshake cannot be replayed. The session keys are
// HMAC(HMAC(K, "session" | nonceC | nonceS), "c2s" or "s2c").

const (
	hsMagic    = "HMCH"
	hsVersion  = 1
	hsHello    = 1
	hsReply    = 2
	hsFinish   = 3
	nonceLen   = 32
	macLen     = sha256.Size
	maxName    = 64
	maxHSBytes = 512
)

// Errors by class; Counters counts them.
var (
	ErrMalformed = errors.New("channel: malformed message")
	ErrAuth      = errors.New("channel: authentication failed (wrong cluster key, or forged)")
	ErrReplay    = errors.New("channel: replayed or reordered message")
	ErrPeer      = errors.New("channel: unexpected peer")
)

// ChannelKey derives the channel's key from the cluster key, so that the
// channel and the heartbeat never share a key.
func ChannelKey(clusterKey []byte, cluster string) []byte {
	m := hmac.New(sha256.New, clusterKey)
	m.Write([]byte("hamirror/channel/v1\x00"))
	m.Write([]byte(cluster))
	return m.Sum(nil)
}

type clientHello struct {
	Cluster  string
	From, To heartbeat.NodeID
	Nonce    [nonceLen]byte
}

type serverHello struct {
	From  heartbeat.NodeID
	Nonce [nonceLen]byte
	MAC   [macLen]byte
}

func appendStr(b []byte, s string) []byte { return append(append(b, byte(len(s))), s...) }

func (h clientHello) marshal() []byte {
	b := append([]byte(hsMagic), hsVersion, hsHello)
	b = appendStr(b, h.Cluster)
	b = appendStr(b, string(h.From))
	b = appendStr(b, string(h.To))
	return append(b, h.Nonce[:]...)
}

// reader is a strict byte reader with a sticky error.
type reader struct {
	p   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.p) < n {
		r.err = fmt.Errorf("%w: truncated", ErrMalformed)
		return nil
	}
	b := r.p[:n]
	r.p = r.p[n:]
	return b
}

func (r *reader) str() string {
	l := r.take(1)
	if l == nil {
		return ""
	}
	if l[0] == 0 || l[0] > maxName {
		r.err = fmt.Errorf("%w: name length %d", ErrMalformed, l[0])
		return ""
	}
	return string(r.take(int(l[0])))
}

func (r *reader) header(typ byte) {
	h := r.take(6)
	if r.err == nil && (string(h[:4]) != hsMagic || h[4] != hsVersion || h[5] != typ) {
		r.err = fmt.Errorf("%w: handshake header %x (want type %d version %d)", ErrMalformed, h, typ, hsVersion)
	}
}

func (r *reader) end() error {
	if r.err == nil && len(r.p) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(r.p))
	}
	return r.err
}

func parseClientHello(p []byte) (clientHello, error) {
	var h clientHello
	r := &reader{p: p}
	r.header(hsHello)
	h.Cluster = r.str()
	h.From = heartbeat.NodeID(r.str())
	h.To = heartbeat.NodeID(r.str())
	copy(h.Nonce[:], r.take(nonceLen))
	if err := r.end(); err != nil {
		return clientHello{}, err
	}
	return h, nil
}

func (h serverHello) body() []byte {
	b := append([]byte(hsMagic), hsVersion, hsReply)
	b = appendStr(b, string(h.From))
	return append(b, h.Nonce[:]...)
}

func parseServerHello(p []byte) (serverHello, error) {
	var h serverHello
	r := &reader{p: p}
	r.header(hsReply)
	h.From = heartbeat.NodeID(r.str())
	copy(h.Nonce[:], r.take(nonceLen))
	copy(h.MAC[:], r.take(macLen))
	if err := r.end(); err != nil {
		return serverHello{}, err
	}
	return h, nil
}

func parseFinish(p []byte) ([macLen]byte, error) {
	var mac [macLen]byte
	r := &reader{p: p}
	r.header(hsFinish)
	copy(mac[:], r.take(macLen))
	return mac, r.end()
}

func mac(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

func writeHS(c net.Conn, p []byte) error {
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(p)), uint16(len(p)))
	_, err := c.Write(append(b, p...))
	return err
}

func readHS(c net.Conn) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(l[:]))
	if n > maxHSBytes {
		return nil, fmt.Errorf("%w: handshake message of %d bytes", ErrMalformed, n)
	}
	p := make([]byte, n)
	_, err := io.ReadFull(c, p)
	return p, err
}

// hsConfig is what both ends of a handshake need.
type hsConfig struct {
	cluster string
	self    heartbeat.NodeID
	key     []byte // the channel key
	known   func(heartbeat.NodeID) bool
	timeout time.Duration
}

func sessionKeys(key []byte, nc, ns [nonceLen]byte) (c2s, s2c []byte) {
	master := mac(key, []byte("session"), nc[:], ns[:])
	return mac(master, []byte("c2s")), mac(master, []byte("s2c"))
}

// clientHandshake authenticates raw as the client towards peer to.
func clientHandshake(raw net.Conn, cfg hsConfig, to heartbeat.NodeID) (*Conn, error) {
	raw.SetDeadline(time.Now().Add(cfg.timeout))
	defer raw.SetDeadline(time.Time{})
	ch := clientHello{Cluster: cfg.cluster, From: cfg.self, To: to}
	if _, err := rand.Read(ch.Nonce[:]); err != nil {
		return nil, err
	}
	hello := ch.marshal()
	if err := writeHS(raw, hello); err != nil {
		return nil, fmt.Errorf("channel: handshake with %s: %w", to, err)
	}
	p, err := readHS(raw)
	if err != nil {
		return nil, fmt.Errorf("channel: handshake with %s: %w", to, err)
	}
	sh, err := parseServerHello(p)
	if err != nil {
		return nil, err
	}
	body := sh.body()
	if !hmac.Equal(sh.MAC[:], mac(cfg.key, []byte("server"), hello, body)) {
		return nil, fmt.Errorf("%w: %s's handshake reply", ErrAuth, to)
	}
	if sh.From != to {
		return nil, fmt.Errorf("%w: dialled %s, %s answered", ErrPeer, to, sh.From)
	}
	fin := append([]byte(hsMagic), hsVersion, hsFinish)
	fin = append(fin, mac(cfg.key, []byte("client"), hello, p)...)
	if err := writeHS(raw, fin); err != nil {
		return nil, fmt.Errorf("channel: handshake with %s: %w", to, err)
	}
	c2s, s2c := sessionKeys(cfg.key, ch.Nonce, sh.Nonce)
	return newConn(raw, to, c2s, s2c)
}

// serverHandshake authenticates an accepted raw stream.
func serverHandshake(raw net.Conn, cfg hsConfig) (*Conn, error) {
	raw.SetDeadline(time.Now().Add(cfg.timeout))
	defer raw.SetDeadline(time.Time{})
	hello, err := readHS(raw)
	if err != nil {
		return nil, err
	}
	ch, err := parseClientHello(hello)
	if err != nil {
		return nil, err
	}
	if ch.Cluster != cfg.cluster || ch.To != cfg.self || ch.From == cfg.self || !cfg.known(ch.From) {
		return nil, fmt.Errorf("%w: hello from %q for %q of cluster %q", ErrPeer, ch.From, ch.To, ch.Cluster)
	}
	sh := serverHello{From: cfg.self}
	if _, err := rand.Read(sh.Nonce[:]); err != nil {
		return nil, err
	}
	body := sh.body()
	reply := append(body, mac(cfg.key, []byte("server"), hello, body)...)
	if err := writeHS(raw, reply); err != nil {
		return nil, err
	}
	p, err := readHS(raw)
	if err != nil {
		return nil, err
	}
	got, err := parseFinish(p)
	if err != nil {
		return nil, err
	}
	if !hmac.Equal(got[:], mac(cfg.key, []byte("client"), hello, reply)) {
		return nil, fmt.Errorf("%w: handshake from %s", ErrAuth, ch.From)
	}
	c2s, s2c := sessionKeys(cfg.key, ch.Nonce, sh.Nonce)
	return newConn(raw, ch.From, s2c, c2s)
}
