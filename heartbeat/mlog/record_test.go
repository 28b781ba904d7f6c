package mlog

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"
	"time"
)

func sampleEntry() Entry {
	return Entry{Time: time.Unix(1700000000, 123456789), Node: "n1", Seq: 7, Level: slog.LevelWarn,
		Component: "mirror", Message: "leg 1 failed", Fields: []Field{{"leg", "1"}, {"error", "i/o timeout"}}}
}

func TestRecordRoundTrip(t *testing.T) {
	e := sampleEntry()
	b, err := AppendRecord(nil, e)
	if err != nil {
		t.Fatal(err)
	}
	got, n, err := DecodeRecord(b)
	if err != nil || n != len(b) {
		t.Fatalf("decode: %v (n=%d of %d)", err, n, len(b))
	}
	if !got.Time.Equal(e.Time) || got.Node != e.Node || got.Seq != e.Seq || got.Level != e.Level ||
		got.Component != e.Component || got.Message != e.Message || len(got.Fields) != 2 || got.Fields[1] != e.Fields[1] {
		t.Fatalf("round trip: %+v != %+v", got, e)
	}
}

func TestTornAndCorruptRecordsAreNeverParsed(t *testing.T) {
	b, _ := AppendRecord(nil, sampleEntry())
	for cut := 0; cut < len(b); cut++ {
		if _, _, err := DecodeRecord(b[:cut]); !errors.Is(err, ErrTorn) {
			t.Fatalf("record cut at %d: %v", cut, err)
		}
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x40
		if e, _, err := DecodeRecord(c); err == nil {
			t.Fatalf("flipped byte %d decoded as %+v", i, e)
		}
	}
	if _, err := AppendRecord(nil, Entry{Node: "n1"}); err == nil {
		t.Error("sequence 0 encoded")
	}
}
