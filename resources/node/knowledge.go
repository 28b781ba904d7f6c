package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
)

// The peer's volume knowledge, persisted on this node.
//
// The active node publishes its volume state (newest generation, both
// legs' states) in its app state and, when that state changes, waits for
// this node to persist it before the engine acknowledges writes that
// missed a leg. So a takeover with one array unreachable can tell whether
// the lone leg is current. The file survives restarts, but what was
// loaded from it is not trusted until the peer's current run confirmed
// it: while this node was down the peer was free to change the volume
// without waiting for it (this node was dead to it).

// knowledgeFile is the file name in state_dir.
const knowledgeFile = "peer-volume"

// knowledgeMagic starts the file; the layout is magic, length, record,
// CRC32C of everything before it.
const knowledgeMagic = "HAMKNOW1"

// knowledgeStore keeps the newest knowledge received and whether it was
// confirmed in this run.
type knowledgeStore struct {
	path      string
	rec       []byte // the encoded knowledge as received (resources.VolumeKnowledge), nil: none
	confirmed bool   // rec came from the peer during this run
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// openKnowledge loads what an earlier run persisted (unconfirmed).
func openKnowledge(dir string) (*knowledgeStore, error) {
	s := &knowledgeStore{path: filepath.Join(dir, knowledgeFile)}
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("peer volume knowledge: %w", err)
	}
	rec, err := decodeKnowledgeFile(b)
	if err != nil {
		// A torn or damaged file is no knowledge: the lone-leg rule then
		// refuses rather than trusting it.
		return s, fmt.Errorf("peer volume knowledge %s is damaged (ignored): %w", s.path, err)
	}
	s.rec = rec
	return s, nil
}

func decodeKnowledgeFile(b []byte) ([]byte, error) {
	if len(b) < len(knowledgeMagic)+4+4 || string(b[:len(knowledgeMagic)]) != knowledgeMagic {
		return nil, errors.New("bad magic or short file")
	}
	n := int(binary.BigEndian.Uint32(b[len(knowledgeMagic):]))
	body := len(knowledgeMagic) + 4
	if n > 4096 || len(b) != body+n+4 {
		return nil, fmt.Errorf("length %d does not match the file size %d", n, len(b))
	}
	if crc32.Checksum(b[:body+n], castagnoli) != binary.BigEndian.Uint32(b[body+n:]) {
		return nil, errors.New("checksum mismatch")
	}
	return b[body : body+n], nil
}

// save persists rec durably (temporary file, fsync, rename, fsync of the
// directory) and marks it confirmed.
func (s *knowledgeStore) save(rec []byte) error {
	b := make([]byte, 0, len(knowledgeMagic)+8+len(rec))
	b = append(b, knowledgeMagic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(rec)))
	b = append(b, rec...)
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	if err := writeFileDurably(s.path, b); err != nil {
		return fmt.Errorf("persisting the peer's volume knowledge: %w", err)
	}
	s.rec = append(s.rec[:0], rec...)
	s.confirmed = true
	return nil
}

// writeFileDurably replaces path with b so that a crash leaves either the
// old or the new content.
func writeFileDurably(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
