package traffic

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// Counters are one interface's counters at one moment (the kernel's
// rtnl_link_stats64, read through netlink).
type Counters struct {
	Name      string `json:"name"`
	RxBytes   uint64 `json:"rx_bytes"`
	TxBytes   uint64 `json:"tx_bytes"`
	RxPackets uint64 `json:"rx_packets"`
	TxPackets uint64 `json:"tx_packets"`
	RxErrors  uint64 `json:"rx_errors"`
	TxErrors  uint64 `json:"tx_errors"`
	RxDropped uint64 `json:"rx_dropped"`
	TxDropped uint64 `json:"tx_dropped"`
}

func (c *Counters) fields() [8]*uint64 {
	return [8]*uint64{&c.RxBytes, &c.TxBytes, &c.RxPackets, &c.TxPackets, &c.RxErrors, &c.TxErrors, &c.RxDropped, &c.TxDropped}
}

// Sample is one reading of every sampled NIC of Node. Seq counts a node's
// samples from 1; (Node, Seq) is kept at most once in a data file.
type Sample struct {
	Node   heartbeat.NodeID `json:"node"`
	Seq    uint64           `json:"seq"`
	Time   time.Time        `json:"time"`
	Ifaces []Counters       `json:"ifaces"`
}

// Record format of the data files (big-endian):
//
//	0 4 payload length N (1..maxPayload)
//	4 4 CRC-32C of the payload
//	8 N payload: version (1) | seq u64 | time (Unix ns) i64 | node (str8,
//	    1..64) | count (0..64) | per NIC: name (str8, 1..64) and the eight
//	    counters as uvarints (rx/tx bytes, packets, errors, dropped)
//
// Counters as uvarints keep a sample of two NICs near 60 bytes. A record
// whose length or checksum fails is a torn write: cut, never parsed.

const (
	recHeader  = 8
	recVersion = 1
	maxIfaces  = 64
	maxName    = 64
	maxPayload = 1 + 8 + 8 + 1 + maxName + 1 + maxIfaces*(1+maxName+8*binary.MaxVarintLen64)
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Decode errors.
var (
	ErrTorn    = errors.New("traffic: torn record")
	ErrCorrupt = errors.New("traffic: corrupt record")
)

func (s Sample) validate() error {
	if len(s.Node) == 0 || len(s.Node) > maxName || s.Seq == 0 || len(s.Ifaces) > maxIfaces {
		return fmt.Errorf("%w: node %q seq %d, %d interfaces", ErrCorrupt, s.Node, s.Seq, len(s.Ifaces))
	}
	for _, c := range s.Ifaces {
		if len(c.Name) == 0 || len(c.Name) > maxName {
			return fmt.Errorf("%w: interface name %q", ErrCorrupt, c.Name)
		}
	}
	return nil
}

// AppendRecord appends s's record to b.
func AppendRecord(b []byte, s Sample) ([]byte, error) {
	if err := s.validate(); err != nil {
		return b, err
	}
	p := []byte{recVersion}
	p = binary.BigEndian.AppendUint64(p, s.Seq)
	p = binary.BigEndian.AppendUint64(p, uint64(s.Time.UnixNano()))
	p = append(append(p, byte(len(s.Node))), s.Node...)
	p = append(p, byte(len(s.Ifaces)))
	for _, c := range s.Ifaces {
		p = append(append(p, byte(len(c.Name))), c.Name...)
		for _, f := range c.fields() {
			p = binary.AppendUvarint(p, *f)
		}
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(p, castagnoli))
	return append(b, p...), nil
}

// DecodeRecord decodes the record at the start of b and its length.
func DecodeRecord(b []byte) (Sample, int, error) {
	if len(b) < recHeader {
		return Sample{}, 0, fmt.Errorf("%w: %d bytes left", ErrTorn, len(b))
	}
	n := int(binary.BigEndian.Uint32(b))
	if n == 0 || n > maxPayload || len(b) < recHeader+n {
		return Sample{}, 0, fmt.Errorf("%w: record length %d, %d bytes left", ErrTorn, n, len(b)-recHeader)
	}
	p := b[recHeader : recHeader+n]
	if crc32.Checksum(p, castagnoli) != binary.BigEndian.Uint32(b[4:]) {
		return Sample{}, 0, fmt.Errorf("%w: checksum mismatch", ErrTorn)
	}
	s, err := decodePayload(p)
	return s, recHeader + n, err
}

func decodePayload(p []byte) (Sample, error) {
	bad := func(what string) (Sample, error) { return Sample{}, fmt.Errorf("%w: %s", ErrCorrupt, what) }
	if len(p) < 1+8+8+1 || p[0] != recVersion {
		return bad("header")
	}
	var s Sample
	s.Seq = binary.BigEndian.Uint64(p[1:])
	s.Time = time.Unix(0, int64(binary.BigEndian.Uint64(p[9:])))
	p = p[17:]
	str := func() (string, bool) {
		if len(p) < 1 || int(p[0]) > len(p)-1 {
			return "", false
		}
		v := string(p[1 : 1+p[0]])
		p = p[1+p[0]:]
		return v, true
	}
	node, ok := str()
	if !ok || len(p) < 1 {
		return bad("node")
	}
	s.Node = heartbeat.NodeID(node)
	count := int(p[0])
	p = p[1:]
	if count > maxIfaces {
		return bad("interface count")
	}
	for range count {
		var c Counters
		if c.Name, ok = str(); !ok {
			return bad("interface name")
		}
		for _, f := range c.fields() {
			v, n := binary.Uvarint(p)
			if n <= 0 {
				return bad("counter")
			}
			*f, p = v, p[n:]
		}
		s.Ifaces = append(s.Ifaces, c)
	}
	if len(p) != 0 {
		return bad("trailing bytes")
	}
	if err := s.validate(); err != nil {
		return Sample{}, err
	}
	return s, nil
}

// DecodeAll decodes consecutive records up to the first bad one.
func DecodeAll(b []byte) ([]Sample, int, error) {
	var out []Sample
	off := 0
	for off < len(b) {
		s, n, err := DecodeRecord(b[off:])
		if err != nil {
			return out, off, err
		}
		out = append(out, s)
		off += n
	}
	return out, off, nil
}
