package mlog

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/hamirror/hamirror/testenv/thindisk"
)

// bigFields make an entry of ~37 KiB: its record spans new blocks of the
// disk, which a full thin pool cannot take.
func bigFields() []Field {
	var fs []Field
	for i := range MaxFields {
		fs = append(fs, Field{Key: fmt.Sprintf("k%02d", i), Value: strings.Repeat("v", MaxValue)})
	}
	return fs
}

// TestFsyncFailureTakesTheRecordBack: on a thin disk whose pool is full
// the write of an entry succeeds but its fsync fails. Write must report
// the error, and the record must not stay in the file: once the pool has
// space again, the next entry (which takes the same sequence number) must
// be the only one with that number, in this log and its peer's.
func TestFsyncFailureTakesTheRecordBack(t *testing.T) {
	d := thindisk.New(t)
	c := newCluster(t, 2)
	c.stop["n1"]()
	c.dirs["n1"] = d.Dir
	c.start("n1")
	c.write("n1", "before")
	d.Fill(t)
	if _, err := c.logs["n1"].Write(context.Background(), slog.LevelInfo, "test", "not durable", bigFields()...); err == nil {
		t.Fatal("Write returned no error although the log's fsync failed")
	}
	d.Free(t)
	e := c.write("n1", "after")
	if e.Seq != 2 {
		t.Errorf("the entry after the failed one has sequence %d, want 2", e.Seq)
	}
	for _, id := range c.ids {
		if got := c.logOf(id); strings.Join(got, " ") != "n1/1:before n1/2:after" {
			t.Errorf("%s's log: %v", id, got)
		}
	}
	c.stop["n1"]() // and as read back from the disk
	c.start("n1")
	if got := c.logOf("n1"); strings.Join(got, " ") != "n1/1:before n1/2:after" {
		t.Errorf("n1's log after a restart: %v", got)
	}
}
