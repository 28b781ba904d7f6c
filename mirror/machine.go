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
// sequence number to wait for, which chunks to flush and clear).
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
//     is dirtied; failSeq[leg] is the metadata write that records this on
//     the survivor. A write that could not reach a leg is acknowledged only
//     when durableSeq >= failSeq[leg]. A metadata write that failed on some
//     leg never advances durableSeq: the next one (carrying the failure) does.
//  4. Clear lazily and only what is on stable media on both legs: a bit is
//     cleared only when both legs are in sync, the chunk has no write in
//     flight, needs no resync, and the driver flushed both legs after the
//     chunk's last write (stamps detect writes that slipped in between).
//     While degraded no bit is ever cleared, so every chunk written while
//     degraded stays marked.
//  5. Copy under a chunk lock. Resync, verify and read repair lock a chunk:
//     new writes to it wait, and the copy starts only when the writes in
//     flight have drained, so a racing write can never leave the legs
//     different. A copied chunk leaves the resync set only after both legs
//     were flushed and no write touched it since the copy.
//  6. The source never fails silently: if the only up-to-date leg fails
//     while the other is still out of sync, the volume stops (dead) rather
//     than serve stale data.
//  7. Overlapping writes are issued one after the other (a write waits
//     while an overlapping one is in flight), so both legs apply them in
//     the same order and never end up holding different data.
type machine struct {
	chunk   int64
	nchunks int64
	delay   time.Duration // idle time before a bit is cleared
	newGen  func() uint64 // randomness is an input

	legs     [2]legState
	attached [2]bool // a Leg object sits in the slot
	legErr   [2]string
	legUUIDs [2][16]byte

	bits      *bitset            // write-intent / out-of-sync bits as they must be on disk
	dirtyBlk  map[int64]struct{} // bitmap blocks changed since the last snapshot
	fullMeta  [2]bool            // leg needs its whole bitmap written (just added)
	need      *bitset            // chunks the out-of-sync leg must still receive
	needCount int64
	pending   map[int64]uint64 // chunk -> metadata seq that makes its set bit durable
	inflight  map[int64]int    // chunk -> writes in flight
	writing   []span           // byte ranges of the writes in flight
	lastWrite map[int64]time.Time
	stamp     map[int64]uint64 // chunk -> stamp of its last write or copy
	stampCtr  uint64
	locked    map[int64]bool // chunks held by a copier

	nextSeq    uint64 // seq the next metadata write will carry
	durableSeq uint64 // every metadata write <= durableSeq is on stable media
	metaBusy   bool
	sbDirty    bool
	failSeq    [2]uint64

	// Volume-wide superblock fields.
	events     uint64
	gens       []generation
	bitmapGen  uint64
	checkpoint int64
	clean      bool
	lastWriter string

	dead    error // no leg can hold the metadata, or the only source failed
	rr      int
	lastEnd [2]int64
}

// machineConfig is the state a machine starts from (after Assemble).
type machineConfig struct {
	chunk, dataSize int64
	delay           time.Duration
	newGen          func() uint64
	legs            [2]legState
	attached        [2]bool
	legUUIDs        [2][16]byte
	bits            *bitset // dirty chunks found on disk (nil: none)
	need            bool    // bits are also chunks the out-of-sync leg needs
	events          uint64
	gens            []generation
	bitmapGen       uint64
	checkpoint      int64
	lastWriter      string
}

func newMachine(c machineConfig) *machine {
	n := ceilDiv(c.dataSize, c.chunk)
	m := &machine{
		chunk: c.chunk, nchunks: n, delay: c.delay, newGen: c.newGen,
		legs: c.legs, attached: c.attached, legUUIDs: c.legUUIDs,
		bits: newBitset(n), dirtyBlk: map[int64]struct{}{}, need: newBitset(n),
		pending: map[int64]uint64{}, inflight: map[int64]int{}, lastWrite: map[int64]time.Time{},
		stamp: map[int64]uint64{}, locked: map[int64]bool{},
		nextSeq: 1, events: c.events, gens: slices.Clone(c.gens), bitmapGen: c.bitmapGen,
		checkpoint: c.checkpoint, lastWriter: c.lastWriter, lastEnd: [2]int64{-1, -1},
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
	for i := range 2 {
		if !m.attached[i] {
			m.legs[i] = legFailed
		}
	}
	if m.needCount > 0 && m.target() < 0 {
		// Dirty chunks after a crash with both legs in sync: resync them
		// from slot 0 (either direction is correct: each block then holds
		// its old or its new content on both legs).
		if m.active(0) && m.active(1) {
			m.legs[1] = legOutOfSync
		} else {
			// Degraded: the bits just stay set for the absent leg.
			m.need = newBitset(n)
			m.needCount = 0
		}
	}
	m.sbDirty = true
	return m
}

// active: the leg receives writes (attached and not failed).
func (m *machine) active(i int) bool { return m.attached[i] && m.legs[i] != legFailed }

// target is the leg a resync copies to (-1 none).
func (m *machine) target() int {
	for i := range 2 {
		if m.active(i) && (m.legs[i] == legOutOfSync || m.legs[i] == legRebuilding) {
			return i
		}
	}
	return -1
}

// source is the up-to-date leg for a resync (-1 none).
func (m *machine) source() int {
	t := m.target()
	if t < 0 || !m.active(1-t) || m.legs[1-t] != legInSync {
		return -1
	}
	return 1 - t
}

func (m *machine) bothInSync() bool {
	return m.active(0) && m.active(1) && m.legs[0] == legInSync && m.legs[1] == legInSync
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

// span is a byte range [off, end) of a write in flight.
type span struct{ off, end int64 }

// beginWrite registers a write of n bytes at off. ok is false when a chunk
// is locked by a copier or an overlapping write is in flight: the driver
// waits for a change and retries. Overlapping writes are thus issued one
// after the other, so both legs apply them in the same order (issued in
// parallel, two legs could finish them in different orders and keep
// different data in a chunk whose bit is later cleared).
func (m *machine) beginWrite(off, n int64, now time.Time) (t writeTicket, ok bool) {
	if m.dead != nil {
		return writeTicket{err: m.dead}, true
	}
	c0, c1 := off/m.chunk, (off+n-1)/m.chunk
	for c := c0; c <= c1; c++ {
		if m.locked[c] {
			return t, false
		}
	}
	for _, w := range m.writing {
		if w.off < off+n && off < w.end {
			return t, false
		}
	}
	for i := range 2 {
		t.legs[i] = m.active(i)
	}
	if !t.legs[0] && !t.legs[1] {
		return writeTicket{err: ErrNoLeg}, true
	}
	m.writing = append(m.writing, span{off, off + n})
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
	return t, true
}

// endWrite: the write of n bytes at off finished (on every leg, or failed).
func (m *machine) endWrite(off, n int64, now time.Time) {
	for i, w := range m.writing {
		if w.off == off && w.end == off+n {
			m.writing[i] = m.writing[len(m.writing)-1]
			m.writing = m.writing[:len(m.writing)-1]
			break
		}
	}
	c0, c1 := off/m.chunk, (off+n-1)/m.chunk
	for c := c0; c <= c1; c++ {
		if m.inflight[c]--; m.inflight[c] <= 0 {
			delete(m.inflight, c)
		}
		m.lastWrite[c] = now
	}
}

// failLeg marks leg i failed: a new generation starts and the superblock
// must be rewritten on the survivor. It returns the metadata seq to wait
// for before acknowledging I/O that missed the leg. The last leg is never
// failed (there is nowhere to record it): that returns an error instead.
func (m *machine) failLeg(i int, reason string) (uint64, error) {
	if m.legs[i] == legFailed {
		return m.failSeq[i], m.dead
	}
	o := 1 - i
	if !m.active(o) {
		return 0, fmt.Errorf("leg %d is the last working leg: %s: %w", i, reason, ErrNoLeg)
	}
	wasSource := m.source() == i
	m.legs[i] = legFailed
	m.legErr[i] = reason
	m.startGeneration()
	m.failSeq[i] = m.nextSeq
	if wasSource {
		m.dead = fmt.Errorf("leg %d failed (%s) while leg %d was still out of sync: no up-to-date leg left: %w", i, reason, o, ErrNoLeg)
		return 0, m.dead
	}
	return m.failSeq[i], nil
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
		s.sb = &superblock{
			Events: m.events, Updated: now.UnixNano(), LegStates: m.legs, LegUUIDs: m.legUUIDs,
			Clean: m.clean, LastWriter: m.lastWriter, Checkpoint: m.checkpoint,
			BitmapGen: m.bitmapGen, Gens: slices.Clone(m.gens),
		}
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
		if _, err := m.failLeg(i, "metadata write: "+errs[i].Error()); err != nil && m.dead == nil {
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
	for c, seq := range m.pending {
		if seq <= s.seq {
			delete(m.pending, c)
		}
	}
}

// clearCand is a chunk whose bit may be cleared after a flush of both legs.
type clearCand struct {
	chunk int64
	stamp uint64
}

// clearCandidates lists chunks idle for the clear delay (rule 4). The
// driver flushes both legs and then calls clearBits with them.
func (m *machine) clearCandidates(now time.Time, all bool) []clearCand {
	if !m.bothInSync() || m.dead != nil {
		return nil
	}
	var out []clearCand
	for c, t := range m.lastWrite {
		if m.inflight[c] > 0 || m.locked[c] || m.need.get(c) || (!all && now.Sub(t) < m.delay) {
			continue
		}
		if _, p := m.pending[c]; p {
			continue
		}
		out = append(out, clearCand{c, m.stamp[c]})
	}
	if all {
		// On close every set bit of an idle, in-sync volume can go.
		for c := m.bits.next(0); c >= 0; c = m.bits.next(c + 1) {
			if _, seen := m.lastWrite[c]; !seen && m.inflight[c] == 0 && !m.locked[c] && !m.need.get(c) {
				out = append(out, clearCand{c, m.stamp[c]})
			}
		}
	}
	return out
}

// clearBits clears the candidates still untouched since they were chosen.
func (m *machine) clearBits(cands []clearCand) int {
	if !m.bothInSync() || m.dead != nil {
		return 0
	}
	n := 0
	for _, cd := range cands {
		c := cd.chunk
		if m.stamp[c] != cd.stamp || m.inflight[c] > 0 || m.locked[c] || m.need.get(c) {
			continue
		}
		delete(m.lastWrite, c)
		delete(m.stamp, c)
		if m.bits.get(c) {
			m.bits.clr(c)
			m.markBlock(c)
			n++
		}
	}
	if n > 0 && m.bitmapGen != m.gens[len(m.gens)-1].ID {
		m.bitmapGen = m.gens[len(m.gens)-1].ID
		m.sbDirty = true
	}
	return n
}

// readable: leg i holds current data for every chunk in [c0, c1].
func (m *machine) readable(i int, c0, c1 int64) bool {
	if !m.active(i) {
		return false
	}
	if m.legs[i] == legInSync {
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

// lockChunk takes chunk c for a copier; ready reports whether the writes
// in flight have drained (if not, wait for a change and call chunkIdle).
func (m *machine) lockChunk(c int64) (ready bool) {
	m.locked[c] = true
	return m.inflight[c] == 0
}

func (m *machine) chunkIdle(c int64) bool { return m.inflight[c] == 0 }

// unlockChunk releases chunk c and returns its stamp for copyDone.
func (m *machine) unlockChunk(c int64, now time.Time) uint64 {
	delete(m.locked, c)
	m.stampCtr++
	m.stamp[c] = m.stampCtr
	return m.stampCtr
}

// markRepair sets chunk c's bit before a repair write (verify, read
// error); returns the seq to wait for. The chunk must be locked.
func (m *machine) markRepair(c int64, now time.Time) uint64 {
	m.lastWrite[c] = now
	return m.setBit(c)
}

// startResync moves the target to rebuilding (-1 when nothing to do).
func (m *machine) startResync() (src, dst int) {
	dst, src = m.target(), m.source()
	if dst < 0 || src < 0 {
		return -1, -1
	}
	if m.legs[dst] != legRebuilding {
		m.legs[dst] = legRebuilding
		m.sbDirty = true
	}
	return src, dst
}

// nextNeed is the next chunk to copy at or after from, wrapping once.
func (m *machine) nextNeed(from int64) int64 {
	if c := m.need.next(from); c >= 0 {
		return c
	}
	return m.need.next(0)
}

// copied records chunks copied source→target, after both legs were
// flushed; stamps are what unlockChunk returned. The checkpoint is where
// the next pass resumes.
func (m *machine) copied(chunks []int64, stamps []uint64, checkpoint int64) {
	if m.source() < 0 || m.dead != nil {
		return // a leg failed meanwhile: keep every bit (rule 4)
	}
	cleared := 0
	for k, c := range chunks {
		if m.need.get(c) {
			m.need.clr(c)
			m.needCount--
		}
		if m.stamp[c] == stamps[k] && m.inflight[c] == 0 && !m.locked[c] && m.bits.get(c) {
			m.bits.clr(c)
			m.markBlock(c)
			delete(m.lastWrite, c)
			delete(m.stamp, c)
			cleared++
		}
	}
	if cleared > 0 && m.bitmapGen != m.gens[len(m.gens)-1].ID {
		m.bitmapGen = m.gens[len(m.gens)-1].ID
	}
	m.checkpoint = checkpoint
	m.sbDirty = true
}

// resyncFinished: nothing left to copy; the target becomes in sync.
// Returns the seq to wait for (0 when the resync is not complete).
func (m *machine) resyncFinished() uint64 {
	t := m.target()
	if t < 0 || m.needCount > 0 || m.source() < 0 {
		return 0
	}
	m.legs[t] = legInSync
	m.legErr[t] = ""
	m.checkpoint = 0
	m.sbDirty = true
	return m.nextSeq
}

// addLeg (re)attaches leg slot as out of sync. full: every chunk must be
// copied (blank or unknown leg); otherwise the chunks marked in bits (plus
// extra, the leg's own marks) are copied.
func (m *machine) addLeg(slot int, uuid [16]byte, full bool, extra *bitset) error {
	if m.active(slot) {
		return fmt.Errorf("slot %d already holds a working leg; fail it first", slot)
	}
	if !m.active(1-slot) || m.legs[1-slot] != legInSync {
		return fmt.Errorf("slot %d: the other leg is not in sync, there is no source to rebuild from: %w", slot, ErrNoLeg)
	}
	m.attached[slot] = true
	m.legs[slot] = legOutOfSync
	m.legErr[slot] = ""
	m.legUUIDs[slot] = uuid
	if full {
		m.bits.setAll()
	} else if extra != nil {
		m.bits.or(extra)
	}
	m.need = newBitset(m.nchunks)
	m.need.or(m.bits)
	m.needCount = m.need.count()
	m.checkpoint = 0
	for b := int64(0); b < m.bits.blocks(); b++ {
		m.dirtyBlk[b] = struct{}{}
	}
	m.fullMeta[slot] = true
	m.sbDirty = true
	return nil
}

// needBytes is how many data bytes the chunks still to copy hold (the last
// chunk may be short).
func (m *machine) needBytes(size int64) int64 {
	b := m.needCount * m.chunk
	if last := m.nchunks - 1; m.needCount > 0 && m.need.get(last) {
		b -= m.nchunks*m.chunk - size
	}
	return b
}

// markClean records a clean shutdown (after the driver flushed and cleared).
func (m *machine) markClean() {
	m.clean = m.bothInSync() && m.needCount == 0
	m.sbDirty = true
}
