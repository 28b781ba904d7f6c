package mirror

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// machine is the volume's leg and chunk state machine. It is pure: no I/O,
// no goroutines, no clock, no locking. The Volume (the driver) holds its
// mutex, feeds it events (a write begins or ends, a metadata write
// completes, a leg fails, a chunk was copied, time passed) and carries out
// the effects it returns (metadata to write, which legs to write, which
// sequence number to wait for, which chunks to flush and clear). The leg
// lifecycle (fail, add, attach epochs, resync start and end) is in
// legs.go; chunk locks, copies and lazy clearing in chunks.go.
//
// Ordering rules the machine enforces (DESIGN.md "Data on each leg"):
//
//  1. Bit before data. A write to a chunk whose bit is not durably set
//     first sets the bit in memory and gets the sequence number of the next
//     metadata write; the driver issues no data I/O until durableSeq
//     reaches that number. Every metadata write snapshots the whole set of
//     changed bitmap blocks, so many writers share one write (group commit)
//     and metadata writes are strictly serialised (one in flight).
//  2. A bit being cleared is never trusted: clearing only changes memory,
//     so a writer arriving after a clear sets the bit again and waits for a
//     later metadata write than the one carrying the clear.
//  3. Ack after both legs, or after a recorded failure. When a leg fails,
//     it is marked failed, a new data generation starts and the superblock
//     is dirtied; failSeq is the metadata write that records this on the
//     survivor. A write that could not reach a leg is acknowledged only
//     when durableSeq >= failSeq. A metadata write that failed on some leg
//     never advances durableSeq: the next one (carrying the failure) does.
//  4. Clear lazily and only what is on stable media on both legs: a bit is
//     cleared only when both legs are in sync, the chunk has no write in
//     flight, needs no resync, and the driver flushed both legs after the
//     chunk's last write (stamps detect writes that slipped in between,
//     epochs a leg re-added in between). While degraded no bit is ever
//     cleared, so every chunk written while degraded stays marked.
//  5. Copy under a chunk lock. Resync, verify and read repair lock a chunk:
//     new writes to it wait, and the copy starts only when the writes in
//     flight have drained, so a racing write can never leave the legs
//     different. A copied chunk leaves the resync set only after both legs
//     were flushed, no write touched it since the copy, and neither slot
//     was re-attached since (epoch).
//  6. The source never fails silently: if the only up-to-date leg fails
//     while the other is still out of sync, the volume stops (dead) rather
//     than serve stale data.
//  7. Overlapping writes are issued one after the other (a write waits
//     while an overlapping one is in flight), so both legs apply them in
//     the same order and never end up holding different data.
//  8. A range stays held until every leg call into it has returned, or the
//     leg gets no further I/O. When the last leg did not answer a write in
//     time, the write ends (it failed) but its range stays held (holdWrite)
//     until the abandoned call returns (releaseHeld): a later write there
//     waits, boundedly, so an old write can never land over a newer one.
//     A failed leg gets no I/O until it is re-added, and it cannot be
//     re-added while a call into it is out (legs.go).
//  9. Fencing is not a failure: a RESERVATION CONFLICT stops the volume
//     with no leg failed and no metadata written.
type machine struct {
	chunk    int64
	nchunks  int64
	dataSize int64
	volUUID  [16]byte
	delay    time.Duration // idle time before a bit is cleared
	newGen   func() uint64 // randomness is an input

	slots [2]slot // the leg lifecycle (legs.go)

	bits      *bitset            // write-intent / out-of-sync bits as they must be on disk
	dirtyBlk  map[int64]struct{} // bitmap blocks changed since the last snapshot
	fullMeta  [2]bool            // leg needs its whole bitmap written (just added)
	need      *bitset            // chunks the out-of-sync leg must still receive; need ⊆ bits
	needCount int64
	pending   map[int64]uint64 // chunk -> metadata seq that makes its set bit durable
	inflight  map[int64]int    // chunk -> writes in flight (held ones included)
	writing   []span           // byte ranges of the writes in flight or held
	lastWrite map[int64]time.Time
	stamp     map[int64]uint64 // chunk -> stamp of its last write or copy
	stampCtr  uint64
	locked    map[int64]bool // chunks held by a copier

	nextSeq    uint64 // seq the next metadata write will carry
	durableSeq uint64 // every metadata write <= durableSeq is on stable media
	metaBusy   bool
	sbDirty    bool

	// Volume-wide superblock fields.
	events     uint64
	gens       []generation // never empty
	bitmapGen  uint64
	checkpoint int64
	clean      bool
	lastWriter string
	updated    int64 // Updated of the last superblock written (unix ns)

	// known is the state of the last durable superblock write; published
	// the states and generation last handed to Options.Publish.
	known     KnownState
	published struct {
		ok     bool
		gen    uint64
		states [2]legState
	}

	dead    error // no leg can hold the metadata, the only source failed, or fenced
	fenced  error // the fencing error, when fenced (dead is set too)
	rr      int
	lastEnd [2]int64
}

// machineConfig is the state a machine starts from (after Assemble).
type machineConfig struct {
	chunk, dataSize int64
	volUUID         [16]byte
	delay           time.Duration
	newGen          func() uint64
	legs            [2]legState
	legUUIDs        [2][16]byte
	leftGen         [2]uint64 // for failed slots: the generation they left in (0: unknown)
	bits            *bitset   // dirty chunks found on disk (nil: none)
	events          uint64
	gens            []generation
	bitmapGen       uint64
	checkpoint      int64
	lastWriter      string
}

func newMachine(c machineConfig) *machine {
	n := ceilDiv(c.dataSize, c.chunk)
	m := &machine{
		chunk: c.chunk, nchunks: n, dataSize: c.dataSize, volUUID: c.volUUID, delay: c.delay, newGen: c.newGen,
		bits: newBitset(n), dirtyBlk: map[int64]struct{}{}, need: newBitset(n),
		pending: map[int64]uint64{}, inflight: map[int64]int{}, lastWrite: map[int64]time.Time{},
		stamp: map[int64]uint64{}, locked: map[int64]bool{},
		nextSeq: 1, events: c.events, gens: slices.Clone(c.gens), bitmapGen: c.bitmapGen,
		checkpoint: c.checkpoint, lastWriter: c.lastWriter, lastEnd: [2]int64{-1, -1},
	}
	if len(m.gens) == 0 {
		m.gens = []generation{{ID: c.newGen(), Events: c.events}}
	}
	for i := range 2 {
		m.slots[i] = slot{state: c.legs[i], uuid: c.legUUIDs[i], leftGen: c.leftGen[i]}
	}
	if c.bits != nil {
		m.bits.or(c.bits)
		m.need.or(c.bits)
		m.needCount = m.need.count()
	}
	// The first metadata write stores the merged bitmap on both legs (and
	// replaces any block that failed its checks).
	for b := int64(0); b < m.bits.blocks(); b++ {
		m.dirtyBlk[b] = struct{}{}
	}
	if m.needCount > 0 && m.target() < 0 {
		// Dirty chunks after a crash with both legs in sync: resync them
		// from slot 0 (either direction is correct: each block then holds
		// its old or its new content on both legs).
		if m.active(0) && m.active(1) {
			m.slots[1].state = legOutOfSync
		} else {
			// Degraded: the bits just stay set for the absent leg.
			m.need = newBitset(n)
			m.needCount = 0
		}
	}
	m.sbDirty = true
	return m
}

func (m *machine) markBlock(c int64) { m.dirtyBlk[c/chunksPerBlock] = struct{}{} }

func (m *machine) setBit(c int64) (seq uint64) {
	if !m.bits.get(c) {
		m.bits.set(c)
		m.markBlock(c)
		m.pending[c] = m.nextSeq
		return m.nextSeq
	}
	return m.pending[c] // 0 when already durable
}

// writeTicket is what beginWrite hands the driver.
type writeTicket struct {
	seq  uint64  // wait for durableSeq >= seq before any data I/O
	legs [2]bool // legs to write
	err  error
}

// span is a byte range [off, end) of a write in flight; held: the write
// ended but a leg call into it was abandoned and has not returned (rule 8).
type span struct {
	off, end int64
	held     bool
}

// admission says why beginWrite did not admit a write.
type admission uint8

const (
	admitted    admission = iota // the ticket is valid (or carries an error)
	waitTurn                     // an overlapping write or a copy runs: wait for a change
	waitHeldOff                  // an abandoned write's call still runs in the range (rule 8)
)

// beginWrite registers a write of n bytes at off. Unless it returns
// admitted, a chunk is locked by a copier or an overlapping write is in
// flight or held: the driver waits for a change and retries. Overlapping
// writes are thus issued one after the other, so both legs apply them in
// the same order (issued in parallel, two legs could finish them in
// different orders and keep different data in a chunk whose bit is later
// cleared).
func (m *machine) beginWrite(off, n int64, now time.Time) (t writeTicket, a admission) {
	if m.dead != nil {
		return writeTicket{err: m.dead}, admitted
	}
	c0, c1 := off/m.chunk, (off+n-1)/m.chunk
	for _, w := range m.writing {
		if w.off < off+n && off < w.end {
			if w.held {
				return t, waitHeldOff
			}
			return t, waitTurn
		}
	}
	for c := c0; c <= c1; c++ {
		if m.locked[c] {
			if m.heldIn(c) {
				// The copier waits for an abandoned write in the chunk:
				// so does this write, boundedly (rule 8).
				return t, waitHeldOff
			}
			return t, waitTurn
		}
	}
	t.legs = [2]bool{m.active(0), m.active(1)}
	if !t.legs[0] && !t.legs[1] {
		return writeTicket{err: ErrNoLeg}, admitted
	}
	m.writing = append(m.writing, span{off: off, end: off + n})
	for c := c0; c <= c1; c++ {
		m.inflight[c]++
		m.stampCtr++
		m.stamp[c] = m.stampCtr
		m.lastWrite[c] = now
		t.seq = max(t.seq, m.setBit(c))
	}
	if m.clean {
		m.clean = false
		m.sbDirty = true
	}
	return t, admitted
}

// endWrite: the write of n bytes at off finished (on every leg, or failed
// with every leg call returned or its leg failed).
func (m *machine) endWrite(off, n int64, now time.Time) {
	m.dropSpan(off, n, false)
	c0, c1 := off/m.chunk, (off+n-1)/m.chunk
	for c := c0; c <= c1; c++ {
		if m.inflight[c]--; m.inflight[c] <= 0 {
			delete(m.inflight, c)
		}
		m.lastWrite[c] = now
	}
}

// holdWrite: the write of n bytes at off failed, but a call into it on a
// leg that still receives I/O has not returned: its range stays held
// (writes wait, chunks stay in flight) until releaseHeld (rule 8).
func (m *machine) holdWrite(off, n int64) {
	for i, w := range m.writing {
		if w.off == off && w.end == off+n && !w.held {
			m.writing[i].held = true
			return
		}
	}
}

// holdCopy: a copier's write of n bytes at off did not return and its
// leg still gets I/O (the last working leg): the range is held like a
// failed write's until releaseHeld (rule 8).
func (m *machine) holdCopy(off, n int64) {
	m.writing = append(m.writing, span{off: off, end: off + n, held: true})
	for c := off / m.chunk; c <= (off+n-1)/m.chunk; c++ {
		m.inflight[c]++
	}
}

// releaseHeld: the abandoned call into a held write returned.
func (m *machine) releaseHeld(off, n int64, now time.Time) {
	if m.dropSpan(off, n, true) {
		c0, c1 := off/m.chunk, (off+n-1)/m.chunk
		for c := c0; c <= c1; c++ {
			if m.inflight[c]--; m.inflight[c] <= 0 {
				delete(m.inflight, c)
			}
			m.lastWrite[c] = now
		}
	}
}

// heldIn: a held write (rule 8) lies in chunk c.
func (m *machine) heldIn(c int64) bool {
	for _, w := range m.writing {
		if w.held && w.off < (c+1)*m.chunk && c*m.chunk < w.end {
			return true
		}
	}
	return false
}

func (m *machine) dropSpan(off, n int64, held bool) bool {
	for i, w := range m.writing {
		if w.off == off && w.end == off+n && w.held == held {
			m.writing[i] = m.writing[len(m.writing)-1]
			m.writing = m.writing[:len(m.writing)-1]
			return true
		}
	}
	return false
}

func (m *machine) startGeneration() {
	m.gens = append(m.gens, generation{ID: m.newGen(), Events: m.events + 1})
	if len(m.gens) > maxGenerations {
		m.gens = m.gens[len(m.gens)-maxGenerations:]
	}
	m.sbDirty = true
}

// commitSeq is the metadata write that will carry every change made so
// far: the next one when changes wait, else the one in flight, else the
// last durable one.
func (m *machine) commitSeq() uint64 {
	switch {
	case m.sbDirty || len(m.dirtyBlk) > 0 || m.fullMeta[0] || m.fullMeta[1]:
		return m.nextSeq
	case m.metaBusy:
		return m.nextSeq - 1
	}
	return m.durableSeq
}

// metaSnap is one metadata write: bitmap blocks and maybe a superblock.
type metaSnap struct {
	seq     uint64
	targets [2]bool
	blocks  []encodedBlock // changed blocks, for every target
	full    [2]bool        // target gets every block instead
	all     []encodedBlock // every block (only when some full is set)
	sb      *superblock    // volume-wide fields; nil: no superblock write
	// publish: the superblock changes a leg state or starts a generation;
	// it counts durable only once Options.Publish returned with known.
	publish bool
	known   KnownState
}

// metaWork: a metadata write should start now.
func (m *machine) metaWork() bool {
	if m.metaBusy || m.dead != nil || (!m.active(0) && !m.active(1)) {
		return false
	}
	return m.sbDirty || len(m.dirtyBlk) > 0 || m.fullMeta[0] || m.fullMeta[1]
}

// snapshot starts a metadata write (the driver performs it, then calls
// metaDone). Only one is in flight at a time.
func (m *machine) snapshot(now time.Time) metaSnap {
	m.metaBusy = true
	s := metaSnap{seq: m.nextSeq}
	m.nextSeq++
	for i := range 2 {
		s.targets[i] = m.active(i)
		s.full[i] = s.targets[i] && m.fullMeta[i]
		m.fullMeta[i] = false
	}
	blks := make([]int64, 0, len(m.dirtyBlk))
	for b := range m.dirtyBlk {
		blks = append(blks, b)
	}
	slices.Sort(blks)
	clear(m.dirtyBlk)
	s.blocks = m.encode(blks)
	if s.full[0] || s.full[1] {
		all := make([]int64, m.bits.blocks())
		for b := range all {
			all[b] = int64(b)
		}
		s.all = m.encode(all)
	}
	if m.sbDirty || s.full[0] || s.full[1] {
		m.sbDirty = false
		m.events++
		m.updated = now.UnixNano()
		states := [2]legState{m.slots[0].state, m.slots[1].state}
		uuids := [2][16]byte{m.slots[0].uuid, m.slots[1].uuid}
		s.sb = &superblock{
			Events: m.events, Updated: m.updated, LegStates: states, LegUUIDs: uuids,
			Clean: m.clean, LastWriter: m.lastWriter, Checkpoint: m.checkpoint,
			BitmapGen: m.bitmapGen, Gens: slices.Clone(m.gens),
		}
		s.known = KnownState{VolumeUUID: m.volUUID, Generation: m.lastGen(), Events: m.events, LegUUIDs: uuids}
		for i := range 2 {
			s.known.LegStates[i] = states[i].String()
			if s.targets[i] {
				m.slots[i].lastSB = s.sb
			}
		}
		p := m.published
		s.publish = !p.ok || p.gen != m.lastGen() || p.states != states
	}
	return s
}

func (m *machine) encode(blks []int64) []encodedBlock {
	out := make([]encodedBlock, len(blks))
	buf := alignedBuf(len(blks) * blockBytes)
	for i, b := range blks {
		out[i] = encodedBlock{idx: b, data: buf[i*blockBytes : (i+1)*blockBytes]}
		m.bits.encodeBlock(b, out[i].data)
	}
	return out
}

// metaDone: the metadata write s finished; errs[i] is leg i's result.
func (m *machine) metaDone(s metaSnap, errs [2]error) {
	m.metaBusy = false
	for i := range 2 {
		if s.targets[i] && errs[i] != nil && isFencing(errs[i]) {
			m.fence(errs[i])
			return
		}
	}
	failed, ok := 0, 0
	for i := range 2 {
		if !s.targets[i] {
			continue
		}
		if errs[i] == nil {
			ok++
			continue
		}
		failed++
		if s.full[i] {
			m.fullMeta[i] = true
		}
		if _, err := m.fail(i, fmt.Errorf("metadata write: %w", errs[i])); err != nil && m.dead == nil {
			m.dead = fmt.Errorf("metadata write failed on the last leg: %w", errors.Join(err, errs[i]))
		}
	}
	if failed > 0 && ok == 0 && m.dead == nil {
		m.dead = fmt.Errorf("metadata write failed on every leg: %w", errors.Join(errs[0], errs[1]))
	}
	if failed > 0 {
		// Blocks of this snapshot are on the survivor; the failure itself
		// must be recorded by the next write before anyone proceeds.
		return
	}
	m.durableSeq = s.seq
	if s.sb != nil {
		m.known = s.known
		if s.publish {
			m.published.ok, m.published.gen = true, s.known.Generation
			m.published.states = s.sb.LegStates
		}
	}
	for c, seq := range m.pending {
		if seq <= s.seq {
			delete(m.pending, c)
		}
	}
}

// readable: leg i holds current data for every chunk in [c0, c1].
func (m *machine) readable(i int, c0, c1 int64) bool {
	switch m.slots[i].state {
	case legFailed:
		return false
	case legInSync:
		return true
	}
	for c := c0; c <= c1; c++ {
		if m.need.get(c) {
			return false
		}
	}
	return true
}

// pickRead chooses the leg for a read of n bytes at off (chunks [c0, c1]):
// the only leg holding the data; else the leg whose last read ended at off
// (keep sequential streams on one leg); else the leg with less I/O
// outstanding, alternating on ties.
func (m *machine) pickRead(c0, c1, off, n int64, outstanding [2]int64) (int, error) {
	if m.dead != nil {
		return -1, m.dead
	}
	r := [2]bool{m.readable(0, c0, c1), m.readable(1, c0, c1)}
	var slot int
	switch {
	case r[0] && !r[1]:
		slot = 0
	case r[1] && !r[0]:
		slot = 1
	case !r[0] && !r[1]:
		return -1, ErrNoLeg
	case m.lastEnd[0] == off:
		slot = 0
	case m.lastEnd[1] == off:
		slot = 1
	case outstanding[0] < outstanding[1]:
		slot = 0
	case outstanding[1] < outstanding[0]:
		slot = 1
	default:
		m.rr ^= 1
		slot = m.rr
	}
	m.lastEnd[slot] = off + n
	return slot, nil
}

// bytesOf is how many data bytes the count chunks marked in bs hold (the
// last chunk may be short).
func (m *machine) bytesOf(bs *bitset, count, size int64) int64 {
	b := count * m.chunk
	if last := m.nchunks - 1; count > 0 && bs.get(last) {
		b -= m.nchunks*m.chunk - size
	}
	return b
}

// needBytes is how many data bytes the chunks still to copy hold.
func (m *machine) needBytes(size int64) int64 { return m.bytesOf(m.need, m.needCount, size) }

// markClean records a clean shutdown (after the driver flushed and cleared).
func (m *machine) markClean() {
	m.clean = m.bothInSync() && m.needCount == 0
	m.sbDirty = true
}
