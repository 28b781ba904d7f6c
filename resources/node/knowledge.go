package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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

// A peer's knowledge is also superseded once this node ran the volume
// itself: the moment this node's engine publishes knowledge of its own, it
// has written volume state the peer's knowledge does not hold, and the
// peer (now stopped) keeps advertising what it published when it last ran
// the volume. Used again, that knowledge would prove a lone leg newest that
// missed this node's writes. So the highest sequence of the peer's
// knowledge seen until then is persisted as a floor (state_dir/
// peer-volume-floor) before the engine counts its write durable, and only
// knowledge published above it (the peer ran the volume again) is trusted.

// knowledgeFloorFile holds the floor in state_dir.
const knowledgeFloorFile = "peer-volume-floor"

// knowledgeStore keeps the newest knowledge received and whether it was
// confirmed in this run. The loop receives and reads it; the engine's
// Publish (through the witness) raises the floor: mu guards both.
type knowledgeStore struct {
	mu        sync.Mutex
	path      string
	rec       []byte // the encoded knowledge as received (resources.VolumeKnowledge), nil: none
	confirmed bool   // rec came from the peer during this run
	seen      uint64 // the highest sequence of the peer's knowledge received in this run
	floor     uint64 // knowledge at or below it is superseded by this node's own run
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// openKnowledge loads what an earlier run persisted (unconfirmed). It
// always returns a store; an error says what was ignored.
func openKnowledge(dir string) (*knowledgeStore, error) {
	s := &knowledgeStore{path: filepath.Join(dir, knowledgeFile)}
	floor, ferr := readFloor(filepath.Join(dir, knowledgeFloorFile))
	if ferr != nil {
		// Unknown floor: no knowledge of the peer is trusted in this run
		// (a lone-leg takeover refuses and says how to force).
		floor = math.MaxUint64
	}
	s.floor = floor
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return s, ferr
	case err != nil:
		// No knowledge, not no store: the node runs and takes the peer's
		// knowledge as it comes.
		return s, errors.Join(ferr, fmt.Errorf("peer volume knowledge (ignored): %w", err))
	}
	rec, err := decodeKnowledgeFile(b)
	if err != nil {
		// A torn or damaged file is no knowledge: the lone-leg rule then
		// refuses rather than trusting it.
		return s, errors.Join(ferr, fmt.Errorf("peer volume knowledge %s is damaged (ignored): %w", s.path, err))
	}
	s.rec = rec
	return s, ferr
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

// readFloor reads the persisted floor (absent: 0).
func readFloor(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("peer volume knowledge floor: %w", err)
	}
	f, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("peer volume knowledge floor %s is damaged (%v): no knowledge of the peer is trusted until it is removed; remove it once the peer has run the volume again", path, err)
	}
	return f, nil
}

// supersede records that this node runs the volume and has published
// knowledge of its own (the witness calls it before each publication):
// every peer knowledge seen until now is superseded, durably. On a
// failure the floor still holds in this run.
func (s *knowledgeStore) supersede() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.seen
	if s.rec != nil {
		if _, k, err := decodeKnowledge(s.rec); err == nil {
			f = max(f, k.Seq)
		}
	}
	if f <= s.floor {
		return nil
	}
	s.floor = f
	path := filepath.Join(filepath.Dir(s.path), knowledgeFloorFile)
	if err := writeFileDurably(path, []byte(strconv.FormatUint(f, 10)+"\n")); err != nil {
		return fmt.Errorf("persisting that the peer's volume knowledge %d is superseded: %w (after a restart it could prove a stale lone leg newest: check state_dir)", f, err)
	}
	return nil
}

// superseded: knowledge with sequence seq is at or below the floor.
func (s *knowledgeStore) superseded(seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return seq <= s.floor
}

// save persists rec durably (temporary file, fsync, rename, fsync of the
// directory).
func (s *knowledgeStore) save(rec []byte) error {
	b := make([]byte, 0, len(knowledgeMagic)+8+len(rec))
	b = append(b, knowledgeMagic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(rec)))
	b = append(b, rec...)
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	if err := writeFileDurably(s.path, b); err != nil {
		return fmt.Errorf("persisting the peer's volume knowledge: %w", err)
	}
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
