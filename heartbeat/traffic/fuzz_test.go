package traffic

import (
	"reflect"
	"testing"
	"time"
)

// FuzzDecodeRecord: hostile bytes give an error or a sample that survives
// a round trip unchanged; never a panic.
func FuzzDecodeRecord(f *testing.F) {
	b, _ := AppendRecord(nil, Sample{Node: "n1", Seq: 1, Time: time.Unix(5, 0), Ifaces: []Counters{{Name: "eth1", RxBytes: 1 << 40, TxDropped: 3}}})
	f.Add(b)
	f.Add(b[:len(b)-2])
	f.Add(make([]byte, 12))
	f.Fuzz(func(t *testing.T, p []byte) {
		s, _, err := DecodeRecord(p)
		if err != nil {
			return
		}
		again, err := AppendRecord(nil, s)
		if err != nil {
			t.Fatalf("decoded sample does not encode: %v", err)
		}
		s2, n, err := DecodeRecord(again)
		if err != nil || n != len(again) || !s2.Time.Equal(s.Time) {
			t.Fatalf("re-encoded sample does not decode: %v", err)
		}
		s2.Time = s.Time
		if !reflect.DeepEqual(s, s2) {
			t.Fatalf("round trip changed the sample: %+v != %+v", s, s2)
		}
	})
}
