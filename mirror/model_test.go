package mirror

// A model-based campaign in the spirit of pebble's metamorphic tests: each
// seed runs a random sequence of application I/O (writes, FUA writes,
// zeroes, flushes, reads), leg faults (the operator's fail, write errors,
// hangs that land late), re-adds (the same object, reopened by name, a
// blank replacement), power cuts, and restarts with one leg missing or
// unreadable, against a model of what every block may hold. The only
// outcomes allowed: the volume serves the newest acknowledged data (or
// data of a write still in flight or failed after it), or it refuses to
// start and says why. Never older data, never two legs reported in sync
// that differ.
//
// Some steps run several operations at once (writes and reads of disjoint
// blocks beside the operator's fail, a re-add, a verify, a flush), so the
// leg lifecycle races with I/O; a verify of two legs in sync must find no
// difference. Goroutines interleave as the scheduler lets them, so a seed
// with concurrent steps may not replay exactly.
//
// CI runs a fixed set of seeds; HAMIRROR_MODEL_SEEDS=N runs N seeds
// (HAMIRROR_MODEL_FIRST=K starts at seed K), -v prints each seed's story.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hamirror/hamirror/mirror/legtest"
)

const (
	modelBlk      = 4096
	modelLegSize  = 2 << 20
	modelChunk    = 64 << 10
	modelHotBytes = 8 * modelChunk // writes land here, so they overlap and share chunks
	modelOps      = 160
)

func TestModelCampaign(t *testing.T) {
	n, first := 30, 1
	if s := os.Getenv("HAMIRROR_MODEL_SEEDS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			t.Fatalf("HAMIRROR_MODEL_SEEDS=%q: %v", s, err)
		}
	}
	if s := os.Getenv("HAMIRROR_MODEL_FIRST"); s != "" {
		first, _ = strconv.Atoi(s)
	}
	if testing.Short() {
		n = min(n, 10)
	}
	var stats modelStats
	for seed := first; seed < first+n; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newModelRun(t, uint64(seed))
				defer r.fail()
				r.run()
				stats.add(r.stats)
			})
		})
	}
	t.Logf("%d seeds: %s", n, &stats)
}

type modelStats struct {
	ops, reads, acked, failedIO, refused, restarts int
	cuts, readds, lone, splits                     int
	concurrent, verifies                           int
}

func (s *modelStats) add(o modelStats) {
	s.ops += o.ops
	s.reads += o.reads
	s.acked += o.acked
	s.failedIO += o.failedIO
	s.refused += o.refused
	s.restarts += o.restarts
	s.cuts += o.cuts
	s.readds += o.readds
	s.lone += o.lone
	s.splits += o.splits
	s.concurrent += o.concurrent
	s.verifies += o.verifies
}

func (s *modelStats) String() string {
	return fmt.Sprintf("%d ops (%d concurrent steps), %d block reads checked, %d writes acknowledged, %d I/Os failed, %d restarts (%d after a power cut, %d on a lone leg), %d refused to start (%d split brains after a late metadata write), %d re-adds, %d verifies",
		s.ops, s.concurrent, s.reads, s.acked, s.failedIO, s.restarts, s.cuts, s.lone, s.refused+s.splits, s.splits, s.readds, s.verifies)
}

// version is one write's content of one block: id 0 is zeros (the initial
// content and every zero).
type version struct {
	id      uint64
	acked   bool
	durable bool
}

// modelBlock is what one block may hold: versions in the order the writes
// started (the campaign issues one operation at a time). allowed is from
// floor on, and never before the last acknowledged version.
type modelBlock struct {
	vers  []*version
	floor int // after a power cut: the last durable version
}

func (b *modelBlock) from() int {
	k := b.floor
	for i := len(b.vers) - 1; i > k; i-- {
		if b.vers[i].acked {
			return i
		}
	}
	return k
}

type modelRun struct {
	t     *testing.T
	r     *rand.Rand
	seed  uint64
	log   []string
	stats modelStats

	power   *legtest.Power
	storage [2]*legtest.CrashLeg // the bytes of each slot's leg
	fault   [2]*legtest.FaultLeg // the array in front of them (faults follow the storage)
	obj     [2]Leg               // the leg object the volume was last given for the slot (mu)
	async   bool
	opts    Options
	v       *Volume

	mu    sync.Mutex
	known *KnownState // the newest Publish: the peer's knowledge
	logMu sync.Mutex  // log (concurrent steps)
	ackMu sync.Mutex  // versions' acked and durable (concurrent steps)

	blocks []modelBlock
	nextID uint64
	size   int64
	unread int // the slot made unreadable for a start-up (-1: none)
}

func newModelRun(t *testing.T, seed uint64) *modelRun {
	r := &modelRun{t: t, seed: seed, r: rand.New(rand.NewPCG(seed, 0x10DE1)), unread: -1}
	r.power = &legtest.Power{}
	for i := range 2 {
		r.storage[i] = legtest.NewCrashLeg(fmt.Sprintf("leg%d", i), modelLegSize, r.power)
		r.fault[i] = legtest.NewFaultLeg(r.storage[i])
	}
	if _, err := Create([2]Leg{r.fault[0], r.fault[1]}, CreateOptions{ChunkSize: modelChunk, NodeID: "model"}); err != nil {
		t.Fatal(err)
	}
	r.async = r.r.IntN(3) == 0
	o := DefaultOptions()
	o.NodeID = "model"
	o.Logger = testLog(t)
	o.IOTimeout = 2 * time.Second
	o.BitClearDelay = time.Duration(50+r.r.IntN(500)) * time.Millisecond
	o.ResyncMinRate = 0
	o.AutoReAdd = r.r.IntN(2) == 0
	o.ReAddInterval = time.Second
	o.Publish = func(k KnownState) {
		r.mu.Lock()
		r.known = &k
		r.mu.Unlock()
	}
	o.OpenLeg = func(spec string) (Leg, error) {
		for i := range 2 {
			if spec == r.storage[i].Name() {
				return r.open(i), nil
			}
		}
		return nil, fmt.Errorf("no leg %q", spec)
	}
	r.opts = o
	r.logf("seed %d: async %v, auto re-add %v, bit clear delay %v", seed, r.async, o.AutoReAdd, o.BitClearDelay)
	r.start([2]bool{true, true}, -1, false)
	r.size = r.v.Size()
	r.blocks = make([]modelBlock, r.size/modelBlk)
	for i := range r.blocks {
		r.blocks[i].vers = []*version{{id: 0, acked: true, durable: true}}
	}
	return r
}

func (r *modelRun) logf(format string, args ...any) {
	r.logMu.Lock()
	r.log = append(r.log, fmt.Sprintf(format, args...))
	r.logMu.Unlock()
}

// fail prints the story of a failed seed.
func (r *modelRun) fail() {
	if r.t.Failed() || testing.Verbose() {
		from := max(0, len(r.log)-200)
		r.t.Logf("seed %d, last %d of %d steps:\n  %s", r.seed, len(r.log)-from, len(r.log), strings.Join(r.log[from:], "\n  "))
	}
}

// open is a new leg object on slot i's storage (a second open of the same
// device): closing it leaves the storage and its faults alone.
func (r *modelRun) open(i int) Leg {
	h := Leg(legtest.NewHandle(r.fault[i]))
	if r.async {
		h = &legtest.Async{Leg: h}
	}
	r.setObj(i, h)
	return h
}

func (r *modelRun) setObj(i int, l Leg) {
	r.mu.Lock()
	r.obj[i] = l
	r.mu.Unlock()
}

func (r *modelRun) getObj(i int) Leg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.obj[i]
}

// start assembles the volume from the slots in present (the others are
// not given), with the operator's keep choice and, with useKnown, the
// peer's knowledge. A refusal is allowed only when a leg is missing or
// unreadable; the campaign then brings both legs back.
func (r *modelRun) start(present [2]bool, keep int, useKnown bool) {
	r.stats.restarts++
	var legs [2]Leg
	for i := range 2 {
		if present[i] {
			legs[i] = r.open(i)
		} else {
			r.setObj(i, nil)
		}
	}
	opts := r.opts
	opts.KeepLeg = keep
	opts.Specs = [2]string{r.storage[0].Name(), r.storage[1].Name()}
	if useKnown {
		r.mu.Lock()
		opts.Known = r.known
		r.mu.Unlock()
	}
	for i := range 2 {
		if info, err := Examine(r.fault[i]); err == nil {
			r.logf("  leg %d: events %d states %v gens %v", i, info.Events, info.LegStates, info.Generations)
		}
	}
	if opts.Known != nil {
		r.logf("  known: %v", opts.Known)
	}
	v, err := Assemble(legs, opts)
	if err == nil {
		r.v = v
		r.logf("assembled %v (known %v): %s", present, useKnown, v.Status().State)
		if !present[0] || !present[1] {
			r.stats.lone++
		}
		return
	}
	var lone *LoneLegError
	var unread *UnreadableLegError
	var split *SplitBrainError
	switch {
	case errors.As(err, &split) && present[0] && present[1] && keep < 0:
		// Allowed when a metadata write that was abandoned (the volume
		// stopped: nothing after it was acknowledged) landed late on one
		// leg and the other was then started alone with the peer's
		// knowledge: both legs carry a generation the other lacks. The
		// operator keeps a leg; the model knows which one holds every
		// acknowledged write, and at least one must.
		r.stats.splits++
		r.logf("split brain: %v", err)
		for k := range 2 {
			if r.legHoldsModel(k) {
				r.logf("the operator keeps leg %d", k)
				r.start(present, k, false)
				return
			}
		}
		r.fatalf("split brain and neither leg holds every acknowledged write")
	case (errors.As(err, &lone) || errors.As(err, &unread)) && (!present[0] || !present[1] || r.unread >= 0):
		r.stats.refused++
		r.logf("refused %v: %v", present, err)
		r.fault[0].Heal()
		r.fault[1].Heal()
		r.start([2]bool{true, true}, -1, false)
	default:
		r.fatalf("assemble %v: %v", present, err)
	}
}

// fatalf fails the seed and ends the calling goroutine (the test's, or a
// step's: see run).
func (r *modelRun) fatalf(format string, args ...any) {
	r.t.Helper()
	r.t.Errorf(format, args...)
	runtime.Goexit()
}

func (r *modelRun) run() {
	for op := 0; op < modelOps && !r.t.Failed(); op++ {
		r.stats.ops++
		// Every operation returns within bounded (virtual) time: a leg
		// call that hangs costs an I/O timeout, never the volume.
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.step()
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Minute):
			r.t.Errorf("operation %d did not return within 10 minutes: the volume hangs", op)
			r.fail()
			panic("the volume hangs (goroutines of this seed stay blocked)")
		}
		if r.t.Failed() {
			break
		}
		synctest.Wait()
		r.checkInSyncLegsEqual()
	}
	r.finish()
}

// step runs one random operation.
func (r *modelRun) step() {
	switch p := r.r.IntN(108); {
	case p >= 103:
		r.concurrent()
	case p >= 100:
		r.stats.verifies++
		rep, err := r.v.Verify(context.Background(), r.r.IntN(2) == 0)
		r.logf("verify: %+v: %v", rep, err)
		r.checkVerify(rep, err)
	case p < 30:
		r.write(r.r.IntN(5) == 0, false)
	case p < 35:
		r.write(false, true)
	case p < 42:
		r.flush()
	case p < 60:
		r.read()
	case p < 64:
		slot := r.r.IntN(2)
		err := r.v.FailLeg(slot)
		r.logf("leg fail %d: %v", slot, err)
	case p < 68:
		slot := r.r.IntN(2)
		r.fault[slot].FailNth([]legtest.Op{legtest.OpWrite, legtest.OpFlush, legtest.OpRead}[r.r.IntN(3)], 1+r.r.IntN(3), errMedium)
		r.logf("leg %d: an I/O error soon", slot)
	case p < 71:
		slot := r.r.IntN(2)
		r.fault[slot].HangNth(legtest.OpWrite, 1+r.r.IntN(3))
		r.logf("leg %d: a write hangs soon", slot)
	case p < 76:
		r.fault[0].Heal()
		r.fault[1].Heal()
		r.logf("heal: hung calls return")
	case p < 84:
		r.readd()
	case p < 88:
		d := time.Duration(r.r.IntN(3000)) * time.Millisecond
		time.Sleep(d)
		r.logf("%v pass", d)
	case p < 92:
		r.powerCut()
	default:
		r.restart()
	}
}

// content fills p with write id's bytes for its blocks starting at blk.
func modelContent(p []byte, id uint64, blk int64) {
	for k := 0; k*modelBlk < len(p); k++ {
		b := p[k*modelBlk : (k+1)*modelBlk]
		binary.LittleEndian.PutUint64(b, id)
		binary.LittleEndian.PutUint64(b[8:], uint64(blk)+uint64(k))
		for i := 16; i < modelBlk; i++ {
			b[i] = byte(id) ^ byte(i)
		}
	}
}

func (r *modelRun) write(fua, zero bool) {
	n := int64(1 + r.r.IntN(4))
	blk := r.r.Int64N(modelHotBytes/modelBlk - n + 1)
	if r.r.IntN(8) == 0 {
		blk = r.r.Int64N(int64(len(r.blocks)) - n + 1)
	}
	r.planWrite(blk, n, fua, zero)()
}

// planWrite enters a write of n blocks at blk in the model (its random
// choices made now) and returns the I/O, which marks it acknowledged.
func (r *modelRun) planWrite(blk, n int64, fua, zero bool) func() {
	fua = fua && !zero // Zero has no FUA: durable after the next flush
	r.nextID++
	id := r.nextID
	if zero {
		id = 0
	}
	vers := make([]*version, n)
	for k := range vers {
		vers[k] = &version{id: id}
		b := &r.blocks[blk+int64(k)]
		b.vers = append(b.vers, vers[k])
	}
	how, unmap := 0, r.r.IntN(2) == 0
	if !zero {
		how = 1 + r.r.IntN(2)
	}
	return func() {
		p := make([]byte, n*modelBlk)
		var err error
		what := "write"
		switch how {
		case 0:
			what = "zero"
			err = r.v.Zero(blk*modelBlk, n*modelBlk, unmap)
		case 1:
			modelContent(p, id, blk)
			err = r.v.WriteAt(p, blk*modelBlk, fua)
		default:
			what = "started write"
			modelContent(p, id, blk)
			ch := make(chan error, 1)
			go r.v.StartWriteAt(p, blk*modelBlk, fua, func(err error, _, _ bool) { ch <- err })
			err = <-ch
		}
		if fua {
			what += " FUA"
		}
		r.logf("%s %d at block %d+%d: %v", what, id, blk, n, err)
		r.ackMu.Lock()
		defer r.ackMu.Unlock()
		if err != nil {
			r.stats.failedIO++
			return
		}
		r.stats.acked++
		for _, v := range vers {
			v.acked, v.durable = true, fua
		}
	}
}

func (r *modelRun) flush() { r.planFlush()() }

// planFlush returns a flush, which makes durable the writes acknowledged
// when it starts.
func (r *modelRun) planFlush() func() {
	return func() {
		r.ackMu.Lock()
		var acked []*version
		for i := range r.blocks {
			for _, v := range r.blocks[i].vers {
				if v.acked && !v.durable {
					acked = append(acked, v)
				}
			}
		}
		r.ackMu.Unlock()
		err := r.v.Flush()
		r.logf("flush: %v", err)
		r.ackMu.Lock()
		defer r.ackMu.Unlock()
		if err != nil {
			r.stats.failedIO++
			return
		}
		for _, v := range acked {
			v.durable = true
		}
	}
}

func (r *modelRun) read() {
	n := int64(1 + r.r.IntN(8))
	blk := r.r.Int64N(modelHotBytes/modelBlk - n + 1)
	if r.r.IntN(4) == 0 {
		blk = r.r.Int64N(int64(len(r.blocks)) - n + 1)
	}
	r.planRead(blk, n)()
}

// planRead returns a read of n blocks at blk, checked against the model
// (no write to these blocks may run meanwhile).
func (r *modelRun) planRead(blk, n int64) func() {
	return func() {
		p := make([]byte, n*modelBlk)
		err := r.v.ReadAt(p, blk*modelBlk)
		r.logf("read block %d+%d: %v", blk, n, err)
		r.ackMu.Lock()
		defer r.ackMu.Unlock()
		if err != nil {
			r.stats.failedIO++
			return
		}
		for k := int64(0); k < n; k++ {
			r.checkBlock(blk+k, p[k*modelBlk:(k+1)*modelBlk], "read")
		}
	}
}

// concurrent runs two to four operations at once: writes and reads of
// disjoint blocks, the operator's fail, a re-add (same object or by
// name), a verify, a flush.
func (r *modelRun) concurrent() {
	r.stats.concurrent++
	used := make([]bool, len(r.blocks))
	span := func() (int64, int64, bool) {
		n := int64(1 + r.r.IntN(4))
		for range 8 {
			blk := r.r.Int64N(modelHotBytes/modelBlk - n + 1)
			free := true
			for k := blk; k < blk+n; k++ {
				free = free && !used[k]
			}
			if free {
				for k := blk; k < blk+n; k++ {
					used[k] = true
				}
				return blk, n, true
			}
		}
		return 0, 0, false
	}
	var ops []func()
	var names []string
	for range 2 + r.r.IntN(3) {
		switch k := r.r.IntN(8); k {
		case 0, 1, 2:
			if blk, n, ok := span(); ok {
				ops = append(ops, r.planWrite(blk, n, r.r.IntN(3) == 0, r.r.IntN(6) == 0))
				names = append(names, "write")
			}
		case 3:
			if blk, n, ok := span(); ok {
				ops = append(ops, r.planRead(blk, n))
				names = append(names, "read")
			}
		case 4:
			slot := r.r.IntN(2)
			ops = append(ops, func() { r.logf("leg fail %d: %v", slot, r.v.FailLeg(slot)) })
			names = append(names, "leg fail")
		case 5:
			slot, byName := r.r.IntN(2), r.r.IntN(2) == 0
			ops = append(ops, func() {
				var leg Leg
				if !byName {
					leg = r.getObj(slot)
				}
				err := r.v.AddLeg(slot, leg)
				r.logf("leg add %d (by name %v): %v", slot, byName, err)
			})
			names = append(names, "leg add")
		case 6:
			repair := r.r.IntN(2) == 0
			ops = append(ops, func() {
				rep, err := r.v.Verify(context.Background(), repair)
				r.logf("verify: %+v: %v", rep, err)
				r.checkVerify(rep, err)
			})
			names = append(names, "verify")
		default:
			ops = append(ops, r.planFlush())
			names = append(names, "flush")
		}
	}
	r.logf("at once: %v", names)
	var wg sync.WaitGroup
	for _, op := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op()
		}()
	}
	wg.Wait()
}

// checkVerify: a verify that ran to its end (both legs in sync
// throughout) found the legs equal.
func (r *modelRun) checkVerify(rep VerifyReport, err error) {
	if err == nil && rep.Mismatches > 0 {
		r.fatalf("verify of two legs in sync found %d chunks that differ (at %v)", rep.Mismatches, rep.Offsets)
	}
}

// checkBlock fails the run unless content is one of the versions block b
// may hold.
func (r *modelRun) checkBlock(b int64, content []byte, what string) {
	r.stats.reads++
	mb := &r.blocks[b]
	from := mb.from()
	if r.allowed(b, content) {
		return
	}
	got := binary.LittleEndian.Uint64(content)
	var ids []string
	for i, v := range mb.vers {
		mark := ""
		if i < from {
			mark = "(superseded)"
		}
		ids = append(ids, fmt.Sprintf("%d%s acked=%v durable=%v", v.id, mark, v.acked, v.durable))
	}
	r.fatalf("%s of block %d holds write %d (first bytes %x); the block may hold only versions from #%d of [%s]: older or foreign data served",
		what, b, got, content[:8], from, strings.Join(ids, ", "))
}

// legHoldsModel: slot k's data area holds, in every block, a version the
// block may hold.
func (r *modelRun) legHoldsModel(k int) bool {
	data := r.storage[k].Bytes()
	for b := int64(0); b < r.size/modelBlk; b++ {
		if !r.allowed(b, data[b*modelBlk:(b+1)*modelBlk]) {
			return false
		}
	}
	return true
}

func (r *modelRun) allowed(b int64, content []byte) bool {
	mb := &r.blocks[b]
	want := make([]byte, modelBlk)
	for _, v := range mb.vers[mb.from():] {
		clear(want)
		if v.id != 0 {
			modelContent(want, v.id, b)
		}
		if bytes.Equal(content, want) {
			return true
		}
	}
	return false
}

// checkInSyncLegsEqual: a clean volume's legs hold the same bytes.
func (r *modelRun) checkInSyncLegsEqual() {
	st := r.v.Status()
	if st.State != "clean" {
		return
	}
	a, b := r.storage[0].Bytes()[:r.size], r.storage[1].Bytes()[:r.size]
	if !bytes.Equal(a, b) {
		for blk := int64(0); blk < r.size/modelBlk; blk++ {
			if !bytes.Equal(a[blk*modelBlk:(blk+1)*modelBlk], b[blk*modelBlk:(blk+1)*modelBlk]) {
				r.fatalf("both legs reported in sync but block %d differs (leg 0 write %d, leg 1 write %d)",
					blk, binary.LittleEndian.Uint64(a[blk*modelBlk:]), binary.LittleEndian.Uint64(b[blk*modelBlk:]))
			}
		}
	}
}

func (r *modelRun) readd() {
	st := r.v.Status()
	slot := -1
	for i := range 2 {
		if st.Legs[i].State == "failed" {
			slot = i
		}
	}
	if slot < 0 {
		return
	}
	r.stats.readds++
	var err error
	switch k := r.r.IntN(4); k {
	case 0, 1:
		err = r.v.AddLeg(slot, r.getObj(slot))
		r.logf("leg add %d (the same object): %v", slot, err)
	case 2:
		err = r.v.AddLeg(slot, nil)
		r.logf("leg add %d (reopened by name): %v", slot, err)
	case 3:
		if r.fault[slot].Hung() > 0 || st.Legs[1-slot].State != "in_sync" || st.State == "failed" {
			return // no source to copy from, or its array still holds hung calls
		}
		old := [3]any{r.storage[slot], r.fault[slot], r.getObj(slot)}
		name := r.storage[slot].Name()
		r.storage[slot] = legtest.NewCrashLeg(name, modelLegSize, r.power)
		r.fault[slot] = legtest.NewFaultLeg(r.storage[slot])
		err = r.v.AddLeg(slot, r.open(slot))
		r.logf("leg add %d (a blank replacement): %v", slot, err)
		if err != nil {
			// Not taken (a call into the slot still out): the old disk stays.
			r.storage[slot], r.fault[slot] = old[0].(*legtest.CrashLeg), old[1].(*legtest.FaultLeg)
			obj, _ := old[2].(Leg)
			r.setObj(slot, obj)
		}
	}
}

// restart stops the volume cleanly and assembles it again, maybe with a
// leg missing or unreadable.
func (r *modelRun) restart() {
	r.heal()
	err := r.v.Close()
	r.logf("close: %v", err)
	r.reassemble()
}

// powerCut cuts the power: every leg keeps what was durable and a seeded
// share of what was not; the volume is assembled again.
func (r *modelRun) powerCut() {
	r.stats.cuts++
	r.power.Cut()
	r.heal()
	_ = r.v.Close()
	r.power = &legtest.Power{}
	for i := range 2 {
		r.storage[i] = r.storage[i].Recover(r.r, r.power)
		r.fault[i] = legtest.NewFaultLeg(r.storage[i])
	}
	for i := range r.blocks {
		b := &r.blocks[i]
		b.floor = 0
		for k, v := range b.vers {
			if v.durable {
				b.floor = k
			}
			// Acknowledged but not flushed: it may be gone, or there.
			v.acked = v.durable
		}
	}
	r.logf("power cut")
	r.reassemble()
}

func (r *modelRun) heal() {
	r.fault[0].Heal()
	r.fault[1].Heal()
	synctest.Wait()
}

func (r *modelRun) reassemble() {
	present := [2]bool{true, true}
	r.unread = -1
	switch k := r.r.IntN(6); k {
	case 0, 1:
		present[r.r.IntN(2)] = false
	case 2:
		r.unread = r.r.IntN(2)
		r.fault[r.unread].FailFrom(legtest.OpRead, 1, errMedium)
		r.logf("leg %d unreadable at start-up", r.unread)
	}
	r.start(present, -1, r.r.IntN(2) == 0)
	r.unread = -1
	r.fault[0].Heal()
	r.fault[1].Heal()
	synctest.Wait()
	// Everything the volume serves right after a start must be allowed.
	p := make([]byte, r.size)
	if err := r.v.ReadAt(p, 0); err != nil {
		r.logf("full read after start: %v", err)
		return
	}
	for b := int64(0); b < r.size/modelBlk; b++ {
		r.checkBlock(b, p[b*modelBlk:(b+1)*modelBlk], "after start-up, read")
	}
}

// finish heals everything, brings both legs back and in sync, and checks
// every block and that the legs are equal.
func (r *modelRun) finish() {
	if r.t.Failed() {
		r.heal()
		r.v.Close()
		return
	}
	r.heal()
	for range 3 {
		st := r.v.Status()
		if st.State == "failed" {
			r.logf("volume failed: %s; restarting", st.Error)
			r.restart()
			continue
		}
		for i := range 2 {
			if st.Legs[i].State == "failed" {
				err := r.v.AddLeg(i, nil)
				r.logf("final leg add %d: %v", i, err)
				var split *SplitBrainError
				if errors.As(err, &split) {
					// The operator keeps the running volume's data (the
					// final read checks it against the model).
					err = r.v.AddLegWith(i, nil, AddOptions{Force: true})
					r.logf("final leg add %d --force: %v", i, err)
				}
			}
		}
		synctest.Wait()
		if r.v.Status().State == "clean" {
			break
		}
		time.Sleep(5 * time.Second)
	}
	if st := r.v.Status(); st.State != "clean" {
		r.fatalf("volume not clean at the end: %+v", st)
	}
	r.checkInSyncLegsEqual()
	p := make([]byte, r.size)
	if err := r.v.ReadAt(p, 0); err != nil {
		r.fatalf("%v", err)
	}
	for b := int64(0); b < r.size/modelBlk; b++ {
		r.checkBlock(b, p[b*modelBlk:(b+1)*modelBlk], "final read")
	}
	if err := r.v.Close(); err != nil {
		r.fatalf("close: %v", err)
	}
}
