package heartbeat

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

func TestSerialResyncsOnGarbage(t *testing.T) {
	c := NewCodec("pair", simKey)
	var frames [][]byte
	for i := range 4 {
		f := sampleFrame()
		f.Seq = uint64(i + 1)
		b, _ := c.Encode(f)
		frames = append(frames, b)
	}
	var stream bytes.Buffer
	stream.WriteString("line noise \x7e\x7e\xa5\xff\xff") // a false sync with an impossible length
	stream.Write(EncodeSerial(frames[0]))
	bad := EncodeSerial(frames[1])
	bad[10] ^= 0x20 // corrupted in flight: the CRC catches it
	stream.Write(bad)
	stream.Write(EncodeSerial(frames[2])[:7]) // a frame cut short by a reset...
	stream.Write(EncodeSerial(frames[3]))     // ...then a good one
	r := NewSerialReader(iotest.OneByteReader(&stream))
	var got [][]byte
	for {
		f, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, f)
	}
	if len(got) != 2 || !bytes.Equal(got[0], frames[0]) || !bytes.Equal(got[1], frames[3]) {
		t.Fatalf("got %d frames, want frames 0 and 3", len(got))
	}
	if r.Garbage() == 0 {
		t.Error("garbage was not counted")
	}
}

func TestSerialLinkOverPipe(t *testing.T) {
	a, b := pipePair()
	la, lb := NewSerialLink(a), NewSerialLink(b)
	defer la.Close()
	defer lb.Close()
	go la.Send([]byte("hello frame"))
	got, err := lb.Receive()
	if err != nil || string(got) != "hello frame" {
		t.Fatalf("%q %v", got, err)
	}
	lb.Close()
	if _, err := lb.Receive(); err != ErrClosed {
		t.Errorf("after close: %v", err)
	}
}

type pipeEnd struct {
	io.Reader
	io.WriteCloser
	closeR func() error
}

func (p pipeEnd) Close() error { p.WriteCloser.Close(); return p.closeR() }

func pipePair() (io.ReadWriteCloser, io.ReadWriteCloser) {
	r1, w1 := io.Pipe()
	r2, w2 := io.Pipe()
	return pipeEnd{r1, w2, r1.Close}, pipeEnd{r2, w1, r2.Close}
}

func FuzzSerialReader(f *testing.F) {
	b, _ := NewCodec("pair", simKey).Encode(sampleFrame())
	f.Add(append([]byte("xx"), EncodeSerial(b)...))
	f.Fuzz(func(t *testing.T, p []byte) {
		r := NewSerialReader(bytes.NewReader(p))
		for range len(p) + 1 {
			fr, err := r.Next()
			if err != nil {
				return
			}
			if len(fr) == 0 || len(fr) > MaxFrame {
				t.Fatalf("frame of %d bytes", len(fr))
			}
		}
		t.Fatal("reader did not reach the end of its input")
	})
}
