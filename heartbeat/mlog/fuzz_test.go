package mlog

import (
	"bytes"
	"testing"

	"github.com/hamirror/hamirror/heartbeat"
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

// FuzzHandlers: hostile peer requests give an error, never a panic, and
// never more than the entries they carry.
func FuzzHandlers(f *testing.F) {
	f.Add([]byte(`{"records":[]}`))
	f.Add([]byte(`{"spool":["AAAAAQ=="],"have":{"n1":3}}`))
	f.Add([]byte(`{"push":null,"have":{}}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		l, err := Open(Options{Dir: t.TempDir(), Self: "n2", Peers: []heartbeat.NodeID{"n1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		l.handleAppend("n1", p)
		l.handleExchange("n1", p)
		l.handleDone("n1", p)
	})
}
