package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// seqStore hands out the sequence numbers of this node's published volume
// knowledge. They grow across restarts (the last one is persisted before
// it is used): a peer's acknowledgement of an earlier run's number must
// never pass for one of this run's.
type seqStore struct {
	mu   sync.Mutex
	path string
	last uint64
}

const seqFile = "volume-seq"

func openSeq(dir string) (*seqStore, error) {
	s := &seqStore{path: filepath.Join(dir, seqFile)}
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("volume knowledge sequence: %w", err)
	}
	if s.last, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil {
		return nil, fmt.Errorf("volume knowledge sequence %s is damaged (%v): remove it only while the peer's mirrord is stopped", s.path, err)
	}
	return s, nil
}

// next persists and returns the next sequence number.
func (s *seqStore) next() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.last + 1
	if err := writeFileDurably(s.path, []byte(strconv.FormatUint(n, 10)+"\n")); err != nil {
		return 0, fmt.Errorf("persisting the volume knowledge sequence: %w", err)
	}
	s.last = n
	return n, nil
}
