package traffic

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// file is one node's traffic data file: DIR/NODE.dat, samples in sequence
// order, each appended record fsynced before it counts. This node's own
// file and the files of the nodes it backs up look the same.
type file struct {
	path string
	mu   sync.Mutex
	high uint64 // the highest sequence held
	size int64
	// broken: a failed append could not be taken back; nothing more is
	// appended until the file is opened again.
	broken error
}

func openFile(dir string, node heartbeat.NodeID, logf func(string, ...any)) (*file, error) {
	f := &file{path: filepath.Join(dir, string(node)+".dat")}
	b, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("traffic: %w", err)
	}
	ss, good, derr := DecodeAll(b)
	if derr != nil {
		logf("traffic: %s: %d bytes after offset %d are not a whole record (%v): cut", f.path, len(b)-good, good, derr)
		if err := os.Truncate(f.path, int64(good)); err != nil {
			return nil, fmt.Errorf("traffic: cutting %s: %w", f.path, err)
		}
	}
	for _, s := range ss {
		f.high = max(f.high, s.Seq)
	}
	f.size = int64(good)
	return f, nil
}

// append writes the samples newer than the highest held, in order, and
// returns the highest held afterwards.
func (f *file) append(ss []Sample) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b []byte
	high := f.high
	for _, s := range ss {
		if s.Seq <= high {
			continue
		}
		var err error
		if b, err = AppendRecord(b, s); err != nil {
			return f.high, err
		}
		high = s.Seq
	}
	if len(b) == 0 {
		return f.high, nil
	}
	if f.broken != nil {
		return f.high, f.broken
	}
	_, statErr := os.Stat(f.path)
	fd, err := os.OpenFile(f.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return f.high, fmt.Errorf("traffic: %w", err)
	}
	defer fd.Close()
	_, err = fd.Write(b)
	if err == nil {
		err = fd.Sync()
	}
	if err != nil {
		// A failed write or fsync (a full disk or thin pool) may leave
		// the records in the page cache: take them back, or the sender's
		// retry appends them a second time.
		if terr := fd.Truncate(f.size); terr != nil {
			f.broken = fmt.Errorf("traffic: %s may hold samples that are not durable (%v, then %v): restart mirrord once the disk is fixed", f.path, err, terr)
		}
		return f.high, fmt.Errorf("traffic: writing %s: %w", f.path, err)
	}
	if statErr != nil {
		if d, err := os.Open(filepath.Dir(f.path)); err == nil {
			d.Sync()
			d.Close()
		}
	}
	f.size += int64(len(b))
	f.high = high
	return high, nil
}

func (f *file) highest() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.high
}

// read returns up to limit samples with seq > after and time >= since.
func (f *file) read(after uint64, since time.Time, limit int) ([]Sample, error) {
	f.mu.Lock()
	b, err := os.ReadFile(f.path)
	f.mu.Unlock()
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("traffic: %w", err)
	}
	ss, _, _ := DecodeAll(b)
	var out []Sample
	for _, s := range ss {
		if s.Seq > after && !s.Time.Before(since) {
			out = append(out, s)
			if limit > 0 && len(out) == limit {
				break
			}
		}
	}
	return out, nil
}
