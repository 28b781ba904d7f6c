package mlog

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/hamirror/hamirror/heartbeat"
)

// spool holds this node's entries that one peer has not received:
// DIR/spool-PEER.log, the same records as the log. It exists only while it
// holds something; it is appended and fsynced per entry and removed (or
// rewritten without the delivered entries) once the peer's log holds
// them.
type spool struct {
	path string
	dir  string
	logf func(string, ...any)
	mu   sync.Mutex
}

func newSpool(dir string, peer heartbeat.NodeID, logf func(string, ...any)) *spool {
	return &spool{path: filepath.Join(dir, "spool-"+string(peer)+".log"), dir: dir, logf: logf}
}

func (s *spool) add(e Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := AppendRecord(nil, e)
	if err != nil {
		return err
	}
	_, statErr := os.Stat(s.path)
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("mlog: spool: %w", err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		if fi != nil {
			f.Truncate(fi.Size()) // take back what may not be durable
		}
		return fmt.Errorf("mlog: spool: %w", err)
	}
	if statErr != nil {
		return syncDir(s.dir)
	}
	return nil
}

// entries returns what the spool holds (a torn tail is cut).
func (s *spool) entries() ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	es, _, err := readRecords(s.path, true, s.logf)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return es, err
}

// trim drops the entries up to seq (the peer holds them): the file is
// removed when nothing is left, else rewritten with the rest.
func (s *spool) trim(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	es, _, err := readRecords(s.path, true, s.logf)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var rest []byte
	for _, e := range es {
		if e.Seq > seq {
			if rest, err = AppendRecord(rest, e); err != nil {
				return err
			}
		}
	}
	if len(rest) == 0 {
		if err := os.Remove(s.path); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("mlog: spool: %w", err)
		}
		return syncDir(s.dir)
	}
	if len(es) == 0 || es[0].Seq > seq {
		return nil
	}
	tmp := s.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("mlog: spool: %w", err)
	}
	if _, err := f.Write(rest); err != nil {
		f.Close()
		return fmt.Errorf("mlog: spool: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	f.Close()
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("mlog: spool: %w", err)
	}
	return syncDir(s.dir)
}

func (s *spool) exists() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := os.Stat(s.path)
	return err == nil
}
