package mlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/hamirror/hamirror/heartbeat"
)

// store is the local log: segments DIR/mlog-GGGGGGGGGGGG.log (G: a
// generation number that only grows), the newest being appended. Appends
// are deduplicated by (node, sequence), written in one write and fsynced
// before they count; a segment past maxSize is closed and a new one
// started; only the newest keep segments are kept.
type store struct {
	dir     string
	maxSize int64
	keep    int
	logf    func(string, ...any)

	mu   sync.Mutex
	gens []uint64
	f    *os.File
	size int64
	high map[heartbeat.NodeID]uint64 // per origin, the highest sequence held
	gaps uint64                      // entries accepted past a hole (only after rotation dropped old ones)
	// broken is set when a failed append could not be taken back: the
	// file no longer matches size, and nothing is appended until reopened.
	broken error
}

// Cursor is a position in the local log: a segment and an offset in it.
type Cursor struct {
	Gen uint64 `json:"gen"`
	Off int64  `json:"off"`
}

const segPrefix, segSuffix = "mlog-", ".log"

func segName(g uint64) string { return fmt.Sprintf("%s%012d%s", segPrefix, g, segSuffix) }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// readRecords reads every record of path. A bad tail is cut when cut is
// set (the file is truncated and synced) and reported through logf.
func readRecords(path string, cut bool, logf func(string, ...any)) ([]Entry, int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	es, good, derr := DecodeAll(b)
	if derr == nil {
		return es, int64(good), nil
	}
	logf("mlog: %s: %d bytes after offset %d are not a whole record (%v): cut, not parsed", path, len(b)-good, good, derr)
	if cut {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return nil, 0, err
		}
		defer f.Close()
		if err := f.Truncate(int64(good)); err != nil {
			return nil, 0, fmt.Errorf("mlog: cutting %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			return nil, 0, err
		}
	}
	return es, int64(good), nil
}

func openStore(dir string, maxSize int64, keep int, logf func(string, ...any)) (*store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("mlog: %w", err)
	}
	s := &store{dir: dir, maxSize: maxSize, keep: keep, logf: logf, high: map[heartbeat.NodeID]uint64{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("mlog: %w", err)
	}
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, segPrefix) || !strings.HasSuffix(n, segSuffix) {
			continue
		}
		g, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(n, segPrefix), segSuffix), 10, 64)
		if err != nil {
			continue
		}
		s.gens = append(s.gens, g)
	}
	slices.Sort(s.gens)
	if len(s.gens) == 0 {
		s.gens = []uint64{1}
	}
	if err := s.loadHigh(); err != nil {
		return nil, err
	}
	for i, g := range s.gens {
		last := i == len(s.gens)-1
		path := filepath.Join(dir, segName(g))
		es, size, err := readRecords(path, last, logf)
		if err != nil && !(last && errors.Is(err, os.ErrNotExist)) {
			return nil, fmt.Errorf("mlog: %w", err)
		}
		for _, e := range es {
			s.high[e.Node] = max(s.high[e.Node], e.Seq)
		}
		if last {
			s.size = size
		}
	}
	if err := s.openCurrent(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *store) openCurrent() error {
	path := filepath.Join(s.dir, segName(s.gens[len(s.gens)-1]))
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("mlog: %w", err)
	}
	if statErr != nil {
		if err := syncDir(s.dir); err != nil {
			f.Close()
			return fmt.Errorf("mlog: %w", err)
		}
	}
	s.f = f
	return nil
}

func (s *store) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

// vector returns a copy of the per-origin high sequences.
func (s *store) vector() map[heartbeat.NodeID]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := make(map[heartbeat.NodeID]uint64, len(s.high))
	for k, x := range s.high {
		v[k] = x
	}
	return v
}

// highName holds the per-origin highest sequences as of the last segment
// removal (JSON), written before any segment is removed.
const highName = "high.json"

func (s *store) loadHigh() error {
	b, err := os.ReadFile(filepath.Join(s.dir, highName))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mlog: %w", err)
	}
	var h map[heartbeat.NodeID]uint64
	if err := json.Unmarshal(b, &h); err != nil {
		return fmt.Errorf("mlog: %s is damaged (%v): restore it, or move it away only if no node's entries were ever rotated out of this log", filepath.Join(s.dir, highName), err)
	}
	for n, x := range h {
		s.high[n] = max(s.high[n], x)
	}
	return nil
}

// saveHigh writes the high vector atomically (temp file, fsync, rename,
// fsync of the folder).
func (s *store) saveHigh() error {
	b, err := json.Marshal(s.high)
	if err != nil {
		return err
	}
	path := filepath.Join(s.dir, highName)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("mlog: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		return fmt.Errorf("mlog: saving %s: %w", path, err)
	}
	return nil
}

// appendOwn gives e the sequence after the highest this log holds of
// e.Node (whatever way it arrived: written here, or relayed back by a
// peer that holds more of this node's entries than its own files) and
// appends it.
func (s *store) appendOwn(e Entry) (Entry, error) {
	s.mu.Lock()
	e.Seq = s.high[e.Node] + 1
	s.mu.Unlock()
	added, err := s.append([]Entry{e}, appendStrict)
	if err == nil && len(added) != 1 {
		err = fmt.Errorf("mlog: entry %s/%d was not appended", e.Node, e.Seq)
	}
	return e, err
}

// errGap refuses an entry that would leave a hole in its node's sequence.
var errGap = errors.New("mlog: entry past a hole in its node's sequence")

// appendMode says what append does with an entry that does not follow
// the highest held of its node exactly.
type appendMode int

const (
	// appendStrict refuses it with errGap (live writes).
	appendStrict appendMode = iota
	// appendPrefix skips it: only what follows on without a hole is taken.
	// For spools, which can skip an entry that is in the sender's log (a
	// crash between the log and the spool): taking what comes after the
	// hole would make the skipped entry count as held, for good. The
	// sender's log brings the rest, in order.
	appendPrefix
	// appendGaps takes it and counts the hole: entries from another node's log,
	// whose oldest were rotated away there.
	appendGaps
)

// append writes the entries this log does not hold yet, in order, and
// makes them durable; mode says what to do with one past a hole.
func (s *store) append(es []Entry, mode appendMode) ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil, errors.New("mlog: log closed")
	}
	var b []byte
	var added []Entry
	high := map[heartbeat.NodeID]uint64{}
	get := func(n heartbeat.NodeID) uint64 {
		if h, ok := high[n]; ok {
			return h
		}
		return s.high[n]
	}
	holes := uint64(0)
	for _, e := range es {
		h := get(e.Node)
		if e.Seq <= h {
			continue // held already: (node, seq) never twice
		}
		if e.Seq != h+1 {
			switch mode {
			case appendStrict:
				return nil, fmt.Errorf("%w: %s's entry %d, this log holds up to %d", errGap, e.Node, e.Seq, h)
			case appendPrefix:
				continue
			}
			holes++
		}
		var err error
		if b, err = AppendRecord(b, e); err != nil {
			return nil, err
		}
		high[e.Node] = e.Seq
		added = append(added, e)
	}
	if len(added) == 0 {
		return nil, nil
	}
	if s.broken != nil {
		return nil, s.broken
	}
	_, err := s.f.Write(b)
	if err == nil {
		err = s.f.Sync()
	}
	if err != nil {
		// Take the records back: a write or fsync that failed (a full
		// disk or thin pool) may have left them in the page cache, and a
		// later append would put the same (node, sequence) after them.
		if terr := s.f.Truncate(s.size); terr != nil {
			s.broken = fmt.Errorf("mlog: the log file may hold records that are not durable (%v, then %v): restart mirrord once the disk is fixed", err, terr)
		}
		return nil, fmt.Errorf("mlog: writing the log: %w", err)
	}
	s.size += int64(len(b))
	for n, h := range high {
		s.high[n] = h
	}
	s.gaps += holes
	if s.size >= s.maxSize {
		if err := s.rotate(); err != nil {
			s.logf("mlog: rotating: %v", err)
		}
	}
	return added, nil
}

func (s *store) rotate() error {
	next := s.gens[len(s.gens)-1] + 1
	old := s.f
	s.gens = append(s.gens, next)
	if err := s.openCurrent(); err != nil {
		s.gens = s.gens[:len(s.gens)-1]
		return err
	}
	old.Close()
	s.size = 0
	if len(s.gens) > s.keep {
		// The segments about to go may hold the only record of a node's
		// highest sequence: keep it, or that node reuses numbers after
		// a restart and its peers skip the new entries as held.
		if err := s.saveHigh(); err != nil {
			return err
		}
	}
	for len(s.gens) > s.keep {
		if err := os.Remove(filepath.Join(s.dir, segName(s.gens[0]))); err != nil && !os.IsNotExist(err) {
			return err
		}
		s.gens = s.gens[1:]
	}
	return syncDir(s.dir)
}

// scan reads the log from cursor c (zero: from the oldest segment kept)
// and returns the entries in append order and the cursor after them.
func (s *store) scan(c Cursor) ([]Entry, Cursor, error) {
	s.mu.Lock()
	gens := slices.Clone(s.gens)
	s.mu.Unlock()
	var out []Entry
	end := c
	for _, g := range gens {
		if g < c.Gen {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, segName(g)))
		if errors.Is(err, os.ErrNotExist) {
			continue // rotated away meanwhile
		}
		if err != nil {
			return nil, c, fmt.Errorf("mlog: %w", err)
		}
		off := 0
		if g == c.Gen {
			off = int(min(c.Off, int64(len(b))))
		}
		// Only whole records: a record being written now is read next time.
		es, n, _ := DecodeAll(b[off:])
		out = append(out, es...)
		end = Cursor{Gen: g, Off: int64(off + n)}
	}
	return out, end, nil
}

// missing returns the entries this log holds that a log with vector have
// lacks, in append order.
func (s *store) missing(have map[heartbeat.NodeID]uint64) ([]Entry, error) {
	v := s.vector()
	lacks := false
	for n, h := range v {
		if h > have[n] {
			lacks = true
		}
	}
	if !lacks {
		return nil, nil
	}
	all, _, err := s.scan(Cursor{})
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, e := range all {
		if e.Seq > have[e.Node] {
			out = append(out, e)
		}
	}
	return out, nil
}
