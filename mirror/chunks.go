package mirror

import "time"

// Chunk locks, copies and lazy bit clearing (rules 4 and 5 of machine).

// clearCand is a chunk whose bit may be cleared after a flush of both legs.
type clearCand struct {
	chunk int64
	stamp uint64
}

// clearCandidates lists chunks idle for the clear delay (rule 4). The
// driver flushes both legs and then calls clearBits with them and the
// epochs returned here.
func (m *machine) clearCandidates(now time.Time, all bool) ([]clearCand, [2]uint64) {
	if !m.bothInSync() || m.dead != nil {
		return nil, m.epochs()
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
	return out, m.epochs()
}

// clearBits clears the candidates still untouched since they were chosen,
// unless a leg was re-attached since (the flush went to the old one).
func (m *machine) clearBits(cands []clearCand, ep [2]uint64) int {
	if !m.bothInSync() || m.dead != nil || m.epochs() != ep {
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
	if n > 0 && m.bitmapGen != m.lastGen() {
		m.bitmapGen = m.lastGen()
		m.sbDirty = true
	}
	return n
}

// lockChunk takes chunk c for a copier; ready reports whether the writes
// in flight have drained (if not, wait for a change and call chunkIdle).
func (m *machine) lockChunk(c int64) (ready bool) {
	m.locked[c] = true
	return m.inflight[c] == 0
}

func (m *machine) chunkIdle(c int64) bool { return m.inflight[c] == 0 }

// unlockChunk releases chunk c and returns its stamp for copied.
func (m *machine) unlockChunk(c int64) uint64 {
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

// nextNeed is the next chunk to copy at or after from, wrapping once.
func (m *machine) nextNeed(from int64) int64 {
	if c := m.need.next(from); c >= 0 {
		return c
	}
	return m.need.next(0)
}

// copied records chunks copied source→target, after both legs were
// flushed; stamps are what unlockChunk returned, ep the epochs the copies
// were made under. The checkpoint is where the next pass resumes. It
// reports false, recording nothing, when the copies no longer count: a
// leg failed meanwhile (rule 4: keep every bit) or was re-attached (the
// copies went to the leg object of an earlier attach).
func (m *machine) copied(chunks []int64, stamps []uint64, checkpoint int64, ep [2]uint64) bool {
	if m.source() < 0 || m.dead != nil || m.epochs() != ep {
		return false
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
	if cleared > 0 && m.bitmapGen != m.lastGen() {
		m.bitmapGen = m.lastGen()
	}
	m.checkpoint = checkpoint
	m.sbDirty = true
	return true
}
