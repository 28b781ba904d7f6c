package mlog

import (
	"bytes"
	"testing"
)

// FuzzDecodeRecord: hostile bytes (a disk, a peer) give an error or an
// entry that re-encodes to the same record; never a panic.
func FuzzDecodeRecord(f *testing.F) {
	b, _ := AppendRecord(nil, sampleEntry())
	f.Add(b)
	f.Add(b[:len(b)-3])
	f.Add(make([]byte, 16))
	f.Fuzz(func(t *testing.T, p []byte) {
		e, n, err := DecodeRecord(p)
		if err != nil {
			return
		}
		again, err := AppendRecord(nil, e)
		if err != nil || !bytes.Equal(again, p[:n]) {
			t.Fatalf("decoded record does not re-encode: %v", err)
		}
	})
}
