package mirror

import (
	"errors"
	"fmt"
	"time"

	"github.com/hamirror/hamirror/iscsi"
)

// The leg lifecycle: every transition of a slot (a leg position, 0 or 1)
// is a method in this file, on the pure machine. The Volume holds the leg
// objects and does the I/O; it asks the machine before it adds, fails or
// copies, and reports back what happened.
//
//	            fail (I/O error, timeout) / failByOperator (parks it)
//	in_sync ─────────────────────────────────────────────► failed ◄──┐
//	   ▲                                                     │       │ abortAdd
//	   │ resyncFinished                              beginAdd│       │ (refused, I/O error)
//	   │                                                     ▼       │
//	rebuilding ◄─ startResync ─ out_of_sync ◄─ attach ─── (adding) ──┘
//	                                          epoch+1
//
// Any state but failed may fail. A fenced volume (RESERVATION CONFLICT)
// takes no transition at all: it stops, with every slot as it was.
//
// What each transition guards against:
//   - beginAdd and attach refuse while a leg call into the slot is still
//     running (inflight, counted by the driver for every call, abandoned
//     ones included): a write that hung on the leg before it failed must
//     never land after the slot was re-added, whatever leg object is used
//     (the same, a new one on the same storage, a replacement).
//   - attach starts a new epoch: a copy, flush or bit clear decided under
//     an older epoch (resync batch, clear candidates) is never recorded.
//   - planAdd decides from the generation histories whether the leg gets a
//     bitmap copy, a full copy, or is refused (newer, diverged, foreign,
//     corrupt): a leg that may hold data the volume lacks is never
//     overwritten unless the operator forces it.
//   - parked (failed by the operator) slots are left alone by AutoReAdd;
//     an automatic re-add that keeps failing backs off (readdDue).

// slot is one leg position and the lifecycle of the leg in it. Guarded by
// the Volume's mutex like the rest of the machine.
type slot struct {
	// state is the leg's state as the superblocks record it. A failed (or
	// missing) slot gets no I/O but its own re-add probe.
	state legState
	// epoch counts the slot's attaches (0 at assembly). Invariant: work
	// decided under one epoch is recorded only while the epoch is unchanged.
	epoch uint64
	// parked: the operator failed the leg. Invariant: parked ⇒ failed.
	// Only an explicit add (AddLeg) brings a parked slot back.
	parked bool
	// adding: one add (AddLeg, AutoReAdd) or the operator's failure record
	// owns the slot between beginAdd/beginRecord and attach/abortAdd.
	// Invariant: adding ⇒ failed; nobody else issues I/O to the slot then.
	adding bool
	// uuid is the UUID of the leg the volume expects in this slot.
	uuid [16]byte
	// err says why the slot failed (status).
	err string
	// failSeq is the metadata write that records the failure on the
	// survivor (rule 3 of machine). Invariant: meaningful while failed.
	failSeq uint64
	// leftGen is the newest generation the leg took part in before it
	// failed (0: unknown, e.g. missing at assembly with no record).
	leftGen uint64
	// lastSB is the superblock content last sent to this leg (volume-wide
	// fields); the operator's failure is recorded on the leg from it.
	lastSB *superblock

	// AutoReAdd backoff (readdDue).
	failedSeen bool
	attempts   int
	lastAdd    time.Time
	notBefore  time.Time
}

// active: the leg receives writes.
func (m *machine) active(i int) bool { return m.slots[i].state != legFailed }

// lastGen is the volume's newest generation.
func (m *machine) lastGen() uint64 { return m.gens[len(m.gens)-1].ID }

// epochs returns both slots' attach epochs (for work recorded later).
func (m *machine) epochs() [2]uint64 { return [2]uint64{m.slots[0].epoch, m.slots[1].epoch} }

// isFencing: the error says this node lost its access to the array (SCSI
// RESERVATION CONFLICT: the peer took over and fenced us), which is never
// a fault of the leg.
func isFencing(err error) bool {
	return errors.Is(err, iscsi.ErrReservationConflict) || errors.Is(err, ErrFenced)
}

// fence stops the volume without touching the slots: no leg is failed and
// no metadata is written (metaWork is false once dead is set).
func (m *machine) fence(cause error) {
	if m.fenced != nil {
		return
	}
	m.fenced = cause
	m.dead = fmt.Errorf("this node was fenced off the arrays (%w): the volume stops serving; another node owns it now (restart mirrord once the cluster agrees): %w", cause, ErrFenced)
}

// fail marks leg i failed because of cause: a new generation starts and
// the superblock must be rewritten on the survivor. It returns the
// metadata seq to wait for before acknowledging I/O that missed the leg.
// The last leg is never failed (there is nowhere to record it): that
// returns an error instead. A fencing error fences the volume instead.
func (m *machine) fail(i int, cause error) (uint64, error) {
	if isFencing(cause) {
		m.fence(cause)
		return 0, m.dead
	}
	if m.fenced != nil {
		return 0, m.dead
	}
	s := &m.slots[i]
	if s.state == legFailed {
		return s.failSeq, m.dead
	}
	o := 1 - i
	if !m.active(o) {
		return 0, fmt.Errorf("leg %d is the last working leg: %v: %w", i, cause, ErrNoLeg)
	}
	wasSource := m.source() == i
	s.state = legFailed
	s.err = cause.Error()
	s.leftGen = m.lastGen()
	m.startGeneration()
	s.failSeq = m.nextSeq
	if wasSource {
		m.dead = fmt.Errorf("leg %d failed (%v) while leg %d was still out of sync: no up-to-date leg left: %w", i, cause, o, ErrNoLeg)
		return 0, m.dead
	}
	return s.failSeq, nil
}

// failByOperator fails leg i on the operator's command and parks it. rec
// is what to write on the failed leg itself, best effort, once the
// failure is durable on the survivor (nil: nothing known to write): the
// leg's own last superblock, now recording itself failed, so that this leg
// alone is never taken for the newest copy. Its history is left as it
// was: a leg's history lists only generations it took part in.
func (m *machine) failByOperator(i int, now time.Time) (seq uint64, rec *superblock, err error) {
	if !m.active(i) {
		return 0, nil, fmt.Errorf("leg %d is not active", i)
	}
	if m.source() == i {
		return 0, nil, fmt.Errorf("leg %d is the only up-to-date leg (leg %d is being rebuilt from it): failing it would stop the volume; wait for the resync (mirrorctl resync --wait)", i, 1-i)
	}
	seq, err = m.fail(i, errors.New("failed by operator"))
	if err != nil {
		return 0, nil, err
	}
	s := &m.slots[i]
	s.parked = true
	if s.lastSB != nil {
		r := *s.lastSB
		r.Events++
		r.Updated = now.UnixNano()
		r.LegStates[i] = legFailed
		r.Clean = false
		rec = &r
	}
	return seq, rec, nil
}

// beginRecord reserves failed slot i for writing the operator's failure
// record on it; endRecord releases it.
func (m *machine) beginRecord(i int) bool {
	s := &m.slots[i]
	if s.state != legFailed || s.adding {
		return false
	}
	s.adding = true
	return true
}

func (m *machine) endRecord(i int) { m.slots[i].adding = false }

// beginAdd reserves slot i for one add. inflight is the number of leg
// calls into the slot still running (abandoned ones included); explicit
// is an operator's add (it unparks the slot).
func (m *machine) beginAdd(i int, inflight int64, explicit bool) error {
	s := &m.slots[i]
	switch {
	case m.dead != nil:
		return m.dead
	case m.active(i):
		return fmt.Errorf("slot %d already holds a working leg; fail it first", i)
	case s.adding:
		return fmt.Errorf("slot %d: a leg is being added (or its failure recorded) already; try again in a moment", i)
	case inflight > 0:
		return fmt.Errorf("slot %d: %d I/O call(s) to its leg from before it failed have not returned yet (a hung leg); the slot can be re-added once they return (retry later, or check the array): %w", i, inflight, ErrInFlight)
	case !m.active(1-i) || m.slots[1-i].state != legInSync:
		return fmt.Errorf("slot %d: the other leg is not in sync, there is no source to rebuild from: %w", i, ErrNoLeg)
	case !explicit && s.parked:
		return fmt.Errorf("slot %d was failed by the operator: only `mirrorctl leg add %d` brings it back", i, i)
	}
	s.adding = true
	if explicit {
		s.parked = false
	}
	return nil
}

// abortAdd releases a slot whose add did not attach.
func (m *machine) abortAdd(i int) { m.slots[i].adding = false }

// addPlan is how a leg joins: which chunks it must receive.
type addPlan struct {
	full bool     // every chunk (blank, foreign, forced, or history unknown)
	uuid [16]byte // the leg's UUID (kept for a returning member; zero: the driver makes a new one)
	own  bool     // merge the leg's own bitmap (a returning member's marks)
	why  string
}

// planAdd decides how the leg read for slot i joins, from its superblock
// (nil with readErr when it could not be decoded). Rules (FORMAT.md
// "Adding a leg"):
//   - no metadata (blank): full copy, unless a file system or partition
//     table was found (sig), which needs force;
//   - another volume's leg: refused (wipe its metadata to reuse it);
//   - corrupt metadata, another geometry: refused unless force (then a
//     full copy);
//   - its newest generation is the volume's newest, or newer, or the
//     histories diverged: refused (a *SplitBrainError for a divergence),
//     unless force: the leg may hold data the volume lacks;
//   - a member that left in an older generation: the chunks marked since
//     (the volume's bits and its own), or every chunk when bits were
//     cleared after it left or the volume expects another leg in the slot.
func (m *machine) planAdd(i int, name string, sb *superblock, readErr error, sig string, force bool) (addPlan, error) {
	blank := addPlan{full: true, why: "blank leg: full copy"} // the driver gives it a new UUID
	forced := func(why string) (addPlan, error) {
		p := blank
		p.why = why + "; forced: full copy"
		return p, nil
	}
	refuse := func(err error) (addPlan, error) {
		if force {
			return forced(err.Error())
		}
		return addPlan{}, err
	}
	const how = "to overwrite it with a full copy of this volume, add it with --force (`mirrorctl leg add %d --force`)"
	switch {
	case errors.Is(readErr, ErrNoMetadata):
		if sig != "" {
			return refuse(fmt.Errorf("add leg %s: it holds no hamirror metadata but %s; "+how+": %w", name, sig, i, ErrExists))
		}
		return blank, nil
	case errors.Is(readErr, ErrCorrupt):
		return refuse(fmt.Errorf("add leg %s: %w; "+how, name, readErr, i))
	case readErr != nil:
		return addPlan{}, fmt.Errorf("add leg %s: reading its metadata: %w", name, readErr)
	case sb.VolumeUUID != m.volUUID:
		// Even forced: another volume's leg is never taken by mistake.
		return addPlan{}, fmt.Errorf("add leg %s: it holds hamirror volume %s, not this volume %s (to reuse it, check it is not in use, then wipe its hamirror metadata: its last 8 KiB): %w",
			name, uuidString(sb.VolumeUUID), uuidString(m.volUUID), ErrExists)
	case sb.ChunkSize != m.chunk || sb.DataSize != m.dataSize:
		return refuse(fmt.Errorf("add leg %s: its metadata records data size %d and chunk %d, this volume %d and %d; "+how+": %w",
			name, sb.DataSize, sb.ChunkSize, m.dataSize, m.chunk, i, ErrCorrupt))
	}
	switch relate(sb.Gens, m.gens) {
	case histSame:
		return refuse(fmt.Errorf("add leg %s: it holds this volume's newest generation %s (a copy of the running leg?); refusing to overwrite it; "+how,
			name, genString(m.lastGen()), i))
	case histNewer:
		return refuse(fmt.Errorf("add leg %s: it holds a newer generation (%s) than the running volume (%s) and may hold newer data; refusing to overwrite it. To keep the leg's data stop mirrord and start it from that leg (--keep-leg %d); "+how,
			name, genString(sb.lastGen()), genString(m.lastGen()), sb.Slot, i))
	case histDiverged:
		if force {
			return forced("split brain")
		}
		return addPlan{}, m.splitBrainWith(i, name, sb)
	}
	// A member that left in an older generation.
	p := addPlan{uuid: sb.LegUUID, own: true, why: "returning member: the chunks marked since it left"}
	switch {
	case indexOfGen(m.gens, sb.lastGen()) < indexOfGen(m.gens, m.bitmapGen):
		p = addPlan{full: true, uuid: sb.LegUUID, why: "bits were cleared after it left: full copy"}
	case m.slots[i].uuid != sb.LegUUID || sb.Slot != i:
		p = addPlan{full: true, uuid: sb.LegUUID, why: "the volume expects another leg in this slot: full copy"}
	}
	return p, nil
}

// splitBrainWith describes the running volume against a diverged leg.
func (m *machine) splitBrainWith(i int, name string, sb *superblock) *SplitBrainError {
	run := &superblock{Slot: 1 - i, Events: m.events, LastWriter: m.lastWriter, Gens: m.gens, Updated: m.updated}
	var sbs [2]*superblock
	var names [2]string
	sbs[i], sbs[1-i] = sb, run
	names[i], names[1-i] = name, "running volume"
	e := splitBrain(sbs, names)
	e.Adding, e.AddSlot = true, i
	return e
}

// attach puts the planned leg in slot i (reserved by beginAdd) as out of
// sync, in a new epoch; extra is the leg's own bitmap (plan.own).
func (m *machine) attach(i int, p addPlan, extra *bitset, inflight int64, now time.Time) error {
	s := &m.slots[i]
	switch {
	case !s.adding:
		return fmt.Errorf("slot %d: not reserved for an add", i)
	case m.dead != nil:
		return m.dead
	case inflight > 0:
		return fmt.Errorf("slot %d: %d I/O call(s) into it are still running: %w", i, inflight, ErrInFlight)
	case !m.active(1-i) || m.slots[1-i].state != legInSync:
		return fmt.Errorf("slot %d: the other leg is not in sync, there is no source to rebuild from: %w", i, ErrNoLeg)
	}
	s.adding, s.parked, s.failedSeen = false, false, false
	s.epoch++
	s.state = legOutOfSync
	s.err = ""
	s.uuid = p.uuid
	s.lastAdd = now
	if p.full {
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
	m.fullMeta[i] = true
	m.sbDirty = true
	return nil
}

// readdDue: AutoReAdd should try slot i now. A slot that failed again
// within a minute of being re-added waits 2, 4, ... 64 intervals, so a leg
// with a persistent write error does not churn through resyncs.
func (m *machine) readdDue(i int, now time.Time, interval time.Duration) bool {
	s := &m.slots[i]
	if s.state != legFailed || s.parked || s.adding || m.dead != nil {
		s.failedSeen = false
		return false
	}
	if !s.failedSeen {
		s.failedSeen = true
		if !s.lastAdd.IsZero() && now.Sub(s.lastAdd) < time.Minute {
			s.attempts = min(s.attempts+1, 6)
		} else {
			s.attempts = 0
		}
		s.notBefore = now.Add(interval*time.Duration(1<<s.attempts) - interval)
	}
	return !now.Before(s.notBefore)
}

// target is the leg a resync copies to (-1 none).
func (m *machine) target() int {
	for i := range 2 {
		if st := m.slots[i].state; st == legOutOfSync || st == legRebuilding {
			return i
		}
	}
	return -1
}

// source is the up-to-date leg for a resync (-1 none).
func (m *machine) source() int {
	t := m.target()
	if t < 0 || m.slots[1-t].state != legInSync {
		return -1
	}
	return 1 - t
}

func (m *machine) bothInSync() bool {
	return m.slots[0].state == legInSync && m.slots[1].state == legInSync
}

// startResync moves the target to rebuilding (-1 when nothing to do).
func (m *machine) startResync() (src, dst int) {
	dst, src = m.target(), m.source()
	if dst < 0 || src < 0 {
		return -1, -1
	}
	if m.slots[dst].state != legRebuilding {
		m.slots[dst].state = legRebuilding
		m.sbDirty = true
	}
	return src, dst
}

// resyncFinished: nothing left to copy; the target becomes in sync.
// Returns the seq to wait for (0 when the resync is not complete).
func (m *machine) resyncFinished() uint64 {
	t := m.target()
	if t < 0 || m.needCount > 0 || m.source() < 0 {
		return 0
	}
	m.slots[t].state = legInSync
	m.slots[t].err = ""
	m.checkpoint = 0
	m.sbDirty = true
	return m.nextSeq
}

// outOfSyncBytes is what slot i lacks: the chunks a resync still copies
// to it, or, while it is failed, what a re-add would copy (the chunks
// marked since it left, or everything when a full copy would be needed).
func (m *machine) outOfSyncBytes(i int, size int64) int64 {
	s := m.slots[i]
	switch {
	case m.target() == i:
		return m.needBytes(size)
	case s.state != legFailed:
		return 0
	case s.uuid == [16]byte{} || (s.leftGen != 0 && indexOfGen(m.gens, s.leftGen) < indexOfGen(m.gens, m.bitmapGen)):
		return size
	}
	return m.bytesOf(m.bits, m.bits.count(), size)
}
