package mirror

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Multi-mount protection (MMP), in the spirit of ext4's MMP and ZFS's
// multihost: a volume is written by one mirrord at a time, even when two
// nodes (or an operator) start it without coordination.
//
// The owner rewrites an MMP block (mmpblock.go; the last heartbeat slot of
// each leg, which the disk heartbeat never uses) every Interval, with its
// own ticker and one FUA write of 4 KiB per leg: never on the I/O path.
// Before it writes, it reads the block back; if it is not what it wrote
// last, another writer took the volume, and the volume stops at once.
//
// Assemble reads the blocks before it writes anything. A blank block or
// one "released" (written at a clean Close) lets it start at once. An
// "active" block (or one it cannot decode) means a mirrord may still run:
// it waits two of the owner's intervals or the owner's grace, whichever is
// longer, plus Margin, reads again, and refuses with an *MMPError naming
// the owner (node, pid, last update) if the block changed. When the caller
// has fenced every other writer (MMPOptions.Fenced: the failover node after
// SCSI-3 PREEMPT), nobody else can write, so it does not wait.
//
// A failed MMP write is not a leg failure by itself: it is retried at the
// next tick. But an owner whose block stops advancing can be taken over
// after a starter's wait, so it must stop writing the leg before then:
// when no MMP write to a working leg has succeeded for failWindow
// (max(2 x Interval, IOTimeout)), the leg is failed like a leg that missed
// a write (the volume continues on the other; the last working leg stops
// the volume). The owner records in every block its grace, failWindow +
// Interval + 2 x IOTimeout: no write of it lands on the leg later than
// that after the last update it made visible (an MMP write counts as
// succeeded when its answer comes, up to an I/O timeout after it landed;
// the leg is failed within failWindow plus one tick of that; calls
// already running end within the I/O timeout), and a starter waits at
// least that long.

// MMPOptions configure multi-mount protection. The zero value turns it off.
type MMPOptions struct {
	// Interval between rewrites of the MMP block; 0 turns MMP off (the
	// library default, so tests and tools that assemble a volume do not
	// pay for it; mirrord uses 1s).
	Interval time.Duration
	// Margin is added to a starter's wait. Default 1s (as ext4 MMP).
	Margin time.Duration
	// Fenced: the caller fenced every other writer (SCSI-3 reservations),
	// so an active block proves nothing about who can write: Assemble
	// does not wait for it. The failover node sets it after its PREEMPT.
	Fenced bool
	// TakenIsFence: the caller's cluster fences with reservations, so a
	// block overwritten by another owner while this one runs means that
	// owner declared this node dead (it went silent: SIGSTOP, a VM pause),
	// fenced it and took the volume over. The volume is then fenced
	// (ErrFenced, Options.OnFenced), not failed: the node must stop
	// everything at once. The MMP tick reads the block before it writes,
	// so it finds the new owner's block before its write would get
	// RESERVATION CONFLICT. The failover node sets it.
	TakenIsFence bool
	// PID recorded in the block; default os.Getpid().
	PID int
}

// ErrInUse: another mirrord owns the volume (its MMP block advances).
var ErrInUse = errors.New("volume is in use by another mirrord")

// MMPError says who owns a volume Assemble refused to start.
type MMPError struct {
	Leg     string        // the leg whose MMP block advanced
	Node    string        // the owner's node ID ("" when the block holds no MMP data)
	PID     int           // the owner's process ID
	Updated time.Time     // the owner's last update, by its clock
	Waited  time.Duration // how long Assemble watched the block
}

func (e *MMPError) Error() string {
	who := "something that is not a hamirror MMP block (is a disk heartbeat configured on the last slot?)"
	if e.Node != "" || e.PID != 0 {
		who = fmt.Sprintf("mirrord pid %d on node %q (last update %s)", e.PID, e.Node, e.Updated.UTC().Format(time.RFC3339Nano))
	}
	return fmt.Sprintf("%v: the multi-mount protection block on %s changed while this node watched it for %v: it is written by %s; stop that mirrord first (if its node is dead, fence it, as a takeover does, or wait until the block stops changing)",
		ErrInUse, e.Leg, e.Waited.Round(time.Millisecond), who)
}

func (e *MMPError) Unwrap() error { return ErrInUse }

// mmpOwner is this volume's side of MMP: the ticker that keeps its blocks
// advancing. A nil *mmpOwner (MMP off) does nothing.
type mmpOwner struct {
	v        *Volume
	log      *slog.Logger
	clock    Clock
	base     mmpBlock // State, Volume, Nonce, Interval, Grace, PID, Node
	interval time.Duration
	fail     time.Duration // failWindow
	timeout  time.Duration // the I/O timeout

	mu      sync.Mutex
	seq     uint64
	legs    [2]mmpLeg
	stopped bool // conflict or release: write nothing more
	stop    chan struct{}
	done    chan struct{}
	calls   sync.WaitGroup // beats and the engine calls they start
}

// mmpLeg is one slot's MMP writes.
type mmpLeg struct {
	leg    Leg   // the leg object being written
	off    int64 // its MMP block
	last   []byte
	lastOK time.Time // when a write of ours last completed (or the leg joined)
	busy   bool      // a read-back and write runs
	failed bool      // the last write failed (logged once)
}

// mmpOffset is the MMP block of a leg with superblock sb: its last
// heartbeat slot (-1: the leg has no heartbeat slots).
func mmpOffset(sb *superblock) int64 {
	if sb == nil || sb.HBCount < 1 {
		return -1
	}
	return sb.HBOff + int64(sb.HBCount-1)*sb.HBSlotSize
}

// acquireMMP runs the starter's check on the legs (by slot, with their
// superblocks) and writes this volume's first active blocks. It returns
// nil when MMP is off.
func acquireMMP(legs [2]Leg, sbs [2]*superblock, opts Options, volume [16]byte) (*mmpOwner, error) {
	mo := opts.MMP
	if mo.Interval <= 0 {
		return nil, nil
	}
	if mo.Margin == 0 {
		mo.Margin = time.Second
	}
	if mo.PID == 0 {
		mo.PID = os.Getpid()
	}
	o := &mmpOwner{log: opts.Logger, clock: opts.Clock, interval: mo.Interval,
		fail: max(2*mo.Interval, opts.IOTimeout), timeout: opts.IOTimeout, stop: make(chan struct{}), done: make(chan struct{})}
	o.base = mmpBlock{State: mmpActive, Volume: volume, Nonce: newGenID(), Interval: mo.Interval,
		Grace: o.fail + mo.Interval + 2*opts.IOTimeout, PID: mo.PID, Node: opts.NodeID}
	var seen [2][]byte
	var wait time.Duration
	var last *mmpBlock
	for i := range 2 {
		off := mmpOffset(sbs[i])
		if legs[i] == nil || off < 0 {
			continue
		}
		o.legs[i].leg, o.legs[i].off = legs[i], off
		buf := alignedBuf(blockBytes) // an abandoned read may still fill it: used only on success
		if err := timed(o.clock, opts.IOTimeout, func() error { return legs[i].ReadAt(buf, off) }); err != nil {
			return nil, fmt.Errorf("reading the multi-mount protection block of %s: %w", legs[i].Name(), err)
		}
		seen[i] = buf
		m, err := decodeMMP(buf)
		switch {
		case errors.Is(err, errMMPBlank):
		case err == nil && m.State == mmpReleased:
			opts.Logger.Info("multi-mount protection: released by its last owner", "leg", legs[i].Name(), "node", m.Node, "pid", m.PID)
		case err == nil:
			wait = max(wait, 2*m.Interval, m.Grace)
			last = &m
		default:
			opts.Logger.Warn("multi-mount protection block holds something else; watching it", "leg", legs[i].Name(), "err", err)
			wait = max(wait, 2*mo.Interval, o.base.Grace)
		}
	}
	if wait > 0 {
		wait += mo.Margin
		switch {
		case mo.Fenced:
			opts.Logger.Info("multi-mount protection: every other writer is fenced; not waiting")
		default:
			owner := "an unknown writer"
			if last != nil {
				owner = last.owner()
			}
			opts.Logger.Warn("multi-mount protection: the volume was not released by its last owner; watching whether it still runs", "owner", owner, "wait", wait)
			if err := o.watch(legs, seen, wait); err != nil {
				return nil, err
			}
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.clock.Now()
	for i := range 2 {
		l := &o.legs[i]
		if l.leg == nil {
			continue
		}
		b := o.blockLocked(now)
		leg := l.leg
		if err := timed(o.clock, opts.IOTimeout, func() error { return leg.WriteAt(b, l.off, true) }); err != nil {
			if errors.Is(err, ErrTimeout) {
				// Still running, it may land at any time: a start on a
				// leg that hangs is refused.
				return nil, fmt.Errorf("writing the multi-mount protection block of %s: %w", leg.Name(), err)
			}
			opts.Logger.Warn("multi-mount protection: first write failed; retrying every interval", "leg", l.leg.Name(), "err", err)
			l.failed = true
		} else {
			l.last = b
		}
		l.lastOK = now
	}
	return o, nil
}

// watch waits d and refuses when a leg's block changed meanwhile.
func (o *mmpOwner) watch(legs [2]Leg, seen [2][]byte, d time.Duration) error {
	sleep(o.clock, d, nil)
	for i := range 2 {
		if seen[i] == nil {
			continue
		}
		buf := alignedBuf(blockBytes)
		if err := timed(o.clock, o.timeout, func() error { return legs[i].ReadAt(buf, o.legs[i].off) }); err != nil {
			return fmt.Errorf("reading the multi-mount protection block of %s again: %w", legs[i].Name(), err)
		}
		if bytes.Equal(buf, seen[i]) {
			continue
		}
		m, err := decodeMMP(buf)
		if err == nil && m.State == mmpReleased {
			o.log.Info("multi-mount protection: its owner released the volume meanwhile", "leg", legs[i].Name(), "node", m.Node, "pid", m.PID)
			continue
		}
		e := &MMPError{Leg: legs[i].Name(), Waited: d}
		if err == nil {
			e.Node, e.PID, e.Updated = m.Node, m.PID, time.Unix(0, m.Updated)
		}
		return e
	}
	return nil
}

// blockLocked encodes the next active block (o.mu held).
func (o *mmpOwner) blockLocked(now time.Time) []byte {
	o.seq++
	m := o.base
	m.Seq, m.Updated = o.seq, now.UnixNano()
	b := alignedBuf(blockBytes)
	m.encode(b)
	return b
}

// start begins the ticker once the volume runs.
func (o *mmpOwner) start(v *Volume) {
	if o == nil {
		return
	}
	o.v = v
	go o.run()
}

func (o *mmpOwner) run() {
	defer close(o.done)
	for sleep(o.clock, o.interval, o.stop) {
		o.tick()
	}
}

// tick starts this interval's write on every working leg and fails a leg
// whose MMP writes have not succeeded for failWindow.
func (o *mmpOwner) tick() {
	targets := o.v.mmpTargets()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stopped {
		return
	}
	now := o.clock.Now()
	for i := range 2 {
		l, t := &o.legs[i], targets[i]
		if t.leg == nil {
			l.leg = nil
			continue
		}
		if l.leg != t.leg || l.off != t.off {
			// Joined (added, re-added) since the last tick: its block is
			// not known to be ours yet.
			*l = mmpLeg{leg: t.leg, off: t.off, lastOK: now}
		}
		if now.Sub(l.lastOK) > o.fail {
			err := fmt.Errorf("multi-mount protection: no write of its MMP block succeeded for %v, so another node could take the leg over", now.Sub(l.lastOK).Round(time.Millisecond))
			l.leg = nil
			o.calls.Add(1)
			go func() { defer o.calls.Done(); o.v.mmpLost(i, t.leg, err) }()
			continue
		}
		if l.busy {
			continue
		}
		l.busy = true
		o.calls.Add(1)
		go o.beat(i, l.leg, l.off, l.last, o.blockLocked(now))
	}
}

// beat reads leg's block back (when the last write is known) and writes
// the next one, under the I/O timeout.
func (o *mmpOwner) beat(slot int, leg Leg, off int64, expect, block []byte) {
	defer o.calls.Done()
	var other []byte
	err := o.v.legIO(slot, leg, "multi-mount protection", func(l Leg) error {
		if expect != nil {
			buf := alignedBuf(blockBytes)
			if err := l.ReadAt(buf, off); err != nil {
				return err
			}
			if !bytes.Equal(buf, expect) {
				other = buf
				return nil
			}
		}
		return l.WriteAt(block, off, true)
	})
	o.mu.Lock()
	defer o.mu.Unlock()
	l := &o.legs[slot]
	mine := l.leg == leg && l.off == off
	if mine {
		l.busy = false
	}
	switch {
	case o.stopped:
	case err == nil && other != nil:
		o.stopped = true
		who := "something that is not an MMP block"
		if m, derr := decodeMMP(other); derr == nil {
			who = m.owner()
		}
		o.calls.Add(1)
		go o.v.mmpConflict(&o.calls, fmt.Errorf("multi-mount protection: another writer took the volume: the MMP block on %s was overwritten by %s; this mirrord stops writing (two writers corrupt the volume): %w", leg.Name(), who, ErrInUse))
	case err != nil && isFencing(err):
		// Another node fenced this one off the array (machine rule 9):
		// stop at once, failing no leg.
		o.stopped = true
		o.calls.Add(1)
		go o.v.mmpFenced(&o.calls, err)
	case !mine:
	case err != nil:
		l.last = nil // unknown now: do not compare next time
		if !l.failed {
			o.log.Warn("multi-mount protection: writing the MMP block failed; retrying every interval", "slot", slot, "err", err)
			l.failed = true
		}
	default:
		l.last, l.lastOK = block, o.clock.Now()
		if l.failed {
			o.log.Info("multi-mount protection: MMP block written again", "slot", slot)
			l.failed = false
		}
	}
}

// release stops the ticker (and waits for its calls, each bounded by the
// I/O timeout) and, when the volume closed cleanly, marks every leg's
// block released so the next start need not wait. A leg with a call still
// running (a hung one may land later) keeps its active block.
func (o *mmpOwner) release(clean bool) {
	if o == nil {
		return
	}
	close(o.stop)
	if o.v != nil {
		<-o.done
	}
	o.calls.Wait() // each ends within the I/O timeout
	o.mu.Lock()
	if o.stopped {
		o.mu.Unlock()
		return
	}
	o.stopped = true
	legs, seq := o.legs, o.seq
	o.mu.Unlock()
	if !clean {
		return
	}
	for i, l := range legs {
		if l.leg == nil || l.busy || o.v == nil || o.v.outstanding[i].Load() > 0 {
			continue
		}
		m := o.base
		m.State, m.Seq, m.Updated = mmpReleased, seq+1, o.clock.Now().UnixNano()
		b := alignedBuf(blockBytes)
		m.encode(b)
		if err := o.v.legIO(i, l.leg, "multi-mount protection", func(lg Leg) error { return lg.WriteAt(b, l.off, true) }); err != nil {
			o.log.Warn("multi-mount protection: could not mark the volume released; the next start waits", "slot", i, "err", err)
		}
	}
}

// mmpTarget is a working leg and its MMP block.
type mmpTarget struct {
	leg Leg
	off int64
}

// mmpTargets are the working legs (engine hook: reads the machine's leg
// states and the slots' superblock templates).
func (v *Volume) mmpTargets() (t [2]mmpTarget) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for i := range 2 {
		if v.m.active(i) && v.legs[i] != nil {
			if off := mmpOffset(v.tmpl[i]); off >= 0 {
				t[i] = mmpTarget{leg: v.legs[i], off: off}
			}
		}
	}
	return t
}

// mmpLost fails leg slot (still leg) after its MMP writes failed for the
// fail window; the last working leg stops the volume (engine hook).
func (v *Volume) mmpLost(slot int, leg Leg, reason error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.legs[slot] != leg || !v.m.active(slot) {
		return
	}
	if _, err := v.m.fail(slot, reason); err != nil {
		if v.m.dead == nil {
			v.m.dead = fmt.Errorf("the last working leg %d lost its multi-mount protection, so the volume stops serving (check the array, then restart mirrord): %w", slot, reason)
		}
		v.log.Error("volume stopped", "err", v.m.dead)
	} else {
		v.log.Warn("leg failed; volume continues degraded", "slot", slot, "err", reason)
	}
	v.notify()
}

// mmpFenced fences the volume: an MMP write met a reservation conflict
// (engine hook; machine rule 9).
func (v *Volume) mmpFenced(wg *sync.WaitGroup, err error) {
	defer wg.Done()
	v.mu.Lock()
	defer v.mu.Unlock()
	v.m.fence(err)
	v.notify()
}

// mmpConflict stops the volume: another writer owns it (engine hook);
// with MMPOptions.TakenIsFence, that writer fenced this node.
func (v *Volume) mmpConflict(wg *sync.WaitGroup, err error) {
	defer wg.Done()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.opts.MMP.TakenIsFence {
		v.m.fence(err)
		v.notify()
		return
	}
	if v.m.dead == nil {
		v.m.dead = err
	}
	v.log.Error("volume stopped", "err", err)
	v.notify()
}
