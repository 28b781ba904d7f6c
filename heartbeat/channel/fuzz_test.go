package channel

import (
	"bytes"
	"net"
	"testing"
	"time"
)

func FuzzHandshakeDecoders(f *testing.F) {
	var ch clientHello
	ch.Cluster, ch.From, ch.To = "c1", "n1", "n2"
	f.Add(ch.marshal())
	sh := serverHello{From: "n2"}
	f.Add(append(sh.body(), make([]byte, macLen)...))
	f.Add(append([]byte(hsMagic+"\x01\x03"), make([]byte, macLen)...))
	f.Fuzz(func(t *testing.T, p []byte) {
		if h, err := parseClientHello(p); err == nil {
			if !bytes.Equal(h.marshal(), p) {
				t.Fatalf("client hello does not round-trip")
			}
		}
		if h, err := parseServerHello(p); err == nil {
			if !bytes.Equal(append(h.body(), h.MAC[:]...), p) {
				t.Fatalf("server hello does not round-trip")
			}
		}
		parseFinish(p)
	})
}

func FuzzRequestReply(f *testing.F) {
	r, _ := marshalRequest("log.append", []byte("body"))
	f.Add(r)
	f.Add(marshalResponse([]byte("ok"), nil))
	f.Add([]byte{2, 1, 'x'})
	f.Fuzz(func(t *testing.T, p []byte) {
		if op, body, err := parseRequest(p); err == nil {
			q, err := marshalRequest(op, body)
			if err != nil || !bytes.Equal(q, p) {
				t.Fatalf("request does not round-trip: %v", err)
			}
		}
		parseResponse("n2", "op", p)
	})
}

// FuzzConnRecv feeds arbitrary bytes to an established connection: the
// only acceptable outcomes are an error or, never in practice, a message
// that authenticates.
func FuzzConnRecv(f *testing.F) {
	f.Add([]byte{0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3})
	f.Add(make([]byte, 40))
	f.Fuzz(func(t *testing.T, p []byte) {
		a, b := net.Pipe()
		defer a.Close()
		key := bytes.Repeat([]byte{7}, 32)
		c, err := newConn(b, "n2", key, key)
		if err != nil {
			t.Fatal(err)
		}
		go func() { a.Write(p); a.Close() }()
		b.SetDeadline(time.Now().Add(time.Second))
		for {
			if _, err := c.Recv(); err != nil {
				return
			}
		}
	})
}
