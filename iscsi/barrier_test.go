package iscsi

import (
	"strings"
	"testing"
)

// The task attribute is the low three bits of the SCSI Command PDU's
// second byte (RFC 7143 11.3.1): SIMPLE 1 unless Ordered asks for 2.
func TestSCSICommandTaskAttribute(t *testing.T) {
	for _, c := range []struct {
		ordered bool
		want    byte
	}{{false, 1}, {true, 2}} {
		p, err := (&scsiCommand{Final: true, Ordered: c.ordered, CDB: cdbTestUnitReady()}).encode()
		if err != nil {
			t.Fatal(err)
		}
		if got := p.BHS[1] & 7; got != c.want {
			t.Errorf("Ordered %v: task attribute %d, want %d", c.ordered, got, c.want)
		}
		if p.BHS[1]&0x80 == 0 {
			t.Errorf("Ordered %v: the F bit is lost", c.ordered)
		}
	}
}

// controlPage is a MODE SENSE(6) answer holding the Control mode page
// with byte 2 b2, after bd bytes of block descriptors.
func controlPage(b2 byte, bd int) []byte {
	page := []byte{pageControl, 10, b2, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	b := append([]byte{0, 0, 0, byte(bd)}, make([]byte, bd)...)
	b = append(b, page...)
	b[0] = byte(len(b) - 1)
	return b
}

func TestDecodeControlTST(t *testing.T) {
	short := controlPage(0, 0)
	short[0] = 4 // the mode data length cuts the page off
	for _, c := range []struct {
		name string
		in   []byte
		want byte
		err  string
	}{
		{"tgtd: one task set, GLTSD", controlPage(0x02, 0), 0, ""},
		{"per-nexus task sets", controlPage(0x20, 0), 1, ""},
		{"after a block descriptor", controlPage(0x00, 8), 0, ""},
		{"empty", nil, 0, "4-byte header"},
		{"header only", []byte{3, 0, 0, 0}, 0, "holds no mode page"},
		{"cut by its length", short, 0, "holds no mode page"},
		{"block descriptors past the end", controlPage(0, 0)[:4:4], 0, "holds no mode page"},
		{"another page", append([]byte{7, 0, 0, 0}, 0x08, 2, 0, 0), 0, "want the Control page"},
		{"subpage format", append([]byte{7, 0, 0, 0}, 0x4a, 2, 0, 0), 0, "subpage format true"},
		{"zero length page", append([]byte{6, 0, 0, 0}, 0x0a, 0, 0), 0, "of length 0"},
	} {
		got, err := decodeControlTST(c.in)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.err)
		case c.err == "" && got != c.want:
			t.Errorf("%s: TST %d, want %d", c.name, got, c.want)
		}
	}
}
