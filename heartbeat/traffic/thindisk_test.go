package traffic

import (
	"os"
	"testing"
	"time"

	"github.com/hamirror/hamirror/testenv/thindisk"
)

// TestFsyncFailureTakesTheSamplesBack: on a thin disk whose pool is full,
// appending samples writes them but fails to fsync them. The append must
// fail and take them back, so that sending them again (the sender got an
// error) leaves each sample in the file once.
func TestFsyncFailureTakesTheSamplesBack(t *testing.T) {
	d := thindisk.New(t)
	f, err := openFile(d.Dir, "n1", t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	batch := func(from, to uint64) []Sample {
		var ss []Sample
		for i := from; i <= to; i++ {
			ss = append(ss, Sample{Node: "n1", Seq: i, Time: time.Unix(int64(i), 0), Ifaces: []Counters{{Name: "eth1", RxBytes: i << 40, TxBytes: i << 41}}})
		}
		return ss
	}
	if _, err := f.append(batch(1, 10)); err != nil {
		t.Fatal(err)
	}
	d.Fill(t)
	if _, err := f.append(batch(11, 400)); err == nil {
		t.Fatal("append returned no error although its fsync failed")
	}
	d.Free(t)
	if high, err := f.append(batch(11, 400)); err != nil || high != 400 {
		t.Fatalf("append after the pool has space: high %d, %v", high, err)
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		t.Fatal(err)
	}
	ss, _, err := DecodeAll(b)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range ss {
		if s.Seq != uint64(i+1) {
			t.Fatalf("record %d of the file is sample %d (the file holds %d records for 400 samples)", i, s.Seq, len(ss))
		}
	}
}
