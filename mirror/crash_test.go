package mirror

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hamirror/hamirror/mirror/legtest"
)

var crashSeeds = flag.Int("crashseeds", 50, "seeds for TestCrashConsistency (-short: 10)")

// crashModel records every operation the workload issued, with start and
// end stamps from one counter, so the checker can tell what must have
// survived a power cut.
type crashModel struct {
	mu      sync.Mutex
	stamp   atomic.Int64
	nextID  atomic.Uint64
	writes  []*crashWrite
	byBlock map[int64][]*crashWrite
	flushes []crashFlush
}

type crashWrite struct {
	round      int // power cycle: a flush covers only writes of its own cycle
	id         uint64
	blk, n     int64 // 4 KiB blocks
	zero, fua  bool
	start, end int64 // end 0: never acknowledged
}

type crashFlush struct {
	round      int
	start, end int64
}

const crashBlock = 4096

// fillBlock is the content write id puts in block blk: a header naming
// both, then bytes derived from them (a torn or misplaced block shows).
func fillBlock(p []byte, id uint64, blk int64) {
	binary.LittleEndian.PutUint64(p, id)
	binary.LittleEndian.PutUint64(p[8:], uint64(blk))
	x := id*0x9E3779B97F4A7C15 ^ uint64(blk)
	for i := 16; i < len(p); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(p[i:], x)
	}
}

func (m *crashModel) begin(w *crashWrite) {
	w.start = m.stamp.Add(1)
	m.mu.Lock()
	m.writes = append(m.writes, w)
	for b := w.blk; b < w.blk+w.n; b++ {
		m.byBlock[b] = append(m.byBlock[b], w)
	}
	m.mu.Unlock()
}

// check verifies block b's content after recovery. Rules: the content is
// the initial zeros or some write to b that started; a write acknowledged
// before a completed flush of the same power cycle started, or an
// acknowledged FUA write, is durable; no content may be older than
// (finished before the start of) a durable write to the block.
func (m *crashModel) check(b int64, content []byte) error {
	lastFlush := map[int]int64{}
	for _, f := range m.flushes {
		if f.end != 0 {
			lastFlush[f.round] = max(lastFlush[f.round], f.start)
		}
	}
	durable := func(w *crashWrite) bool { return w.end != 0 && (w.fua || w.end < lastFlush[w.round]) }
	var cands []*crashWrite // writes whose content this could be
	isZero := true
	for _, c := range content {
		if c != 0 {
			isZero = false
			break
		}
	}
	initialOK := true
	for _, w := range m.byBlock[b] {
		if durable(w) {
			initialOK = false
		}
	}
	if isZero {
		if initialOK {
			return nil
		}
		for _, w := range m.byBlock[b] {
			if w.zero {
				cands = append(cands, w)
			}
		}
		if len(cands) == 0 {
			return fmt.Errorf("block %d reads as zeros but holds a durable write (lost acknowledged data)", b)
		}
	} else {
		id := binary.LittleEndian.Uint64(content)
		var exp [crashBlock]byte
		for _, w := range m.byBlock[b] {
			if w.id == id && !w.zero {
				fillBlock(exp[:], id, b)
				if !bytes.Equal(exp[:], content) {
					return fmt.Errorf("block %d holds a torn or misplaced copy of write %d", b, id)
				}
				cands = append(cands, w)
			}
		}
		if len(cands) == 0 {
			return fmt.Errorf("block %d holds data no write put there (header id %d)", b, id)
		}
	}
	for _, c := range cands {
		superseded := false
		for _, w := range m.byBlock[b] {
			if w != c && durable(w) && c.end != 0 && c.end < w.start {
				superseded = true
			}
		}
		if !superseded {
			return nil
		}
	}
	return fmt.Errorf("block %d holds write %d, older than a durable write (lost acknowledged data)", b, cands[0].id)
}

func TestCrashConsistency(t *testing.T) {
	n := *crashSeeds
	if testing.Short() && n > 10 {
		n = 10
	}
	for seed := 1; seed <= n; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { crashRun(t, uint64(seed)) })
	}
}

// crashWorkload runs 4 writers of random writes, zeroes, FUA writes and
// flushes (ops each at most) until done or the power is cut, recording
// everything in the model.
func crashWorkload(v *Volume, power *legtest.Power, model *crashModel, seed uint64, round, ops int) error {
	blocks := v.Size() / crashBlock
	var wg sync.WaitGroup
	var failure atomic.Value
	for w := range 4 {
		wr := rand.New(rand.NewPCG(seed, uint64(w+10*round)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < ops && !power.IsOff(); i++ {
				var err error
				switch p := wr.IntN(100); {
				case p < 8:
					f := crashFlush{round: round, start: model.stamp.Add(1)}
					if err = v.Flush(); err == nil {
						f.end = model.stamp.Add(1)
					}
					model.mu.Lock()
					model.flushes = append(model.flushes, f)
					model.mu.Unlock()
				default:
					cw := &crashWrite{round: round, id: model.nextID.Add(1), n: int64(1 + wr.IntN(4)), zero: p < 13, fua: p >= 85}
					cw.blk = wr.Int64N(blocks - cw.n + 1)
					buf := make([]byte, cw.n*crashBlock)
					if !cw.zero {
						for k := int64(0); k < cw.n; k++ {
							fillBlock(buf[k*crashBlock:(k+1)*crashBlock], cw.id, cw.blk+k)
						}
					}
					model.begin(cw)
					if cw.zero {
						err = v.Zero(cw.blk*crashBlock, cw.n*crashBlock, wr.IntN(2) == 0)
					} else if wr.IntN(2) == 0 {
						err = v.WriteAt(buf, cw.blk*crashBlock, cw.fua)
					} else {
						// The NBD server's way: started, reported to a
						// callback (inline on fast legs, rescued from a hang
						// while the starting goroutine stays stuck).
						ch := make(chan error, 1)
						if wr.IntN(2) == 0 { // as if the legs were slow: both at once, from goroutines
							v.legTime[wr.IntN(2)].Store(int64(time.Millisecond))
						}
						go v.StartWriteAt(buf, cw.blk*crashBlock, cw.fua, func(err error, _, _ bool) { ch <- err })
						err = <-ch
					}
					if err == nil {
						cw.end = model.stamp.Add(1)
					}
				}
				if err != nil && !power.IsOff() {
					failure.Store(fmt.Errorf("I/O failed before the power cut: %w", err))
					return
				}
			}
		}()
	}
	wg.Wait()
	if f := failure.Load(); f != nil {
		return f.(error)
	}
	return nil
}

func crashRun(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0xC0FFEE))
	const legSize = 3 << 20
	const chunk = 64 << 10
	power := &legtest.Power{}
	legs := [2]*legtest.CrashLeg{legtest.NewCrashLeg("crash0", legSize, power), legtest.NewCrashLeg("crash1", legSize, power)}
	if _, err := Create([2]Leg{legs[0], legs[1]}, CreateOptions{ChunkSize: chunk, NodeID: "crash-node"}); err != nil {
		t.Fatal(err)
	}
	opts := testOptions(t)
	opts.NodeID = "crash-node"
	opts.BitClearDelay = time.Duration(r.IntN(4)+1) * time.Millisecond
	// A third of the runs lose a leg mid-way (an error, or a hang caught by
	// the I/O timeout), so the cut hits a degraded volume whose survivor
	// alone holds the recent writes.
	faults := [2]*legtest.FaultLeg{legtest.NewFaultLeg(legs[0]), legtest.NewFaultLeg(legs[1])}
	opts.IOTimeout = time.Second // short for the hang case, long enough for a loaded CI box
	switch victim := r.IntN(2); r.IntN(6) {
	case 0:
		faults[victim].FailFrom(legtest.OpWrite, 1+r.IntN(400), errMedium)
	case 1:
		faults[victim].HangFrom(legtest.OpWrite, 1+r.IntN(400))
	}
	defer faults[0].Heal()
	defer faults[1].Heal()
	vlegs := [2]Leg{faults[0], faults[1]}
	if r.IntN(3) == 0 { // legs with a completion API, like iSCSI LUNs
		vlegs = [2]Leg{&legtest.Async{Leg: faults[0]}, &legtest.Async{Leg: faults[1]}}
	}
	v, err := Assemble(vlegs, opts)
	if err != nil {
		t.Fatal(err)
	}
	model := &crashModel{byBlock: map[int64][]*crashWrite{}}
	power.CutAfter(int64(50 + r.IntN(3000)))
	if err := crashWorkload(v, power, model, seed, 0, 2000); err != nil {
		t.Fatal(err)
	}
	degraded := v.Status().State
	power.Cut()
	faults[0].Heal() // hung calls return (into the dark)
	faults[1].Heal()
	_ = v.Close() // fails: the legs are dark; must not hang

	// Power back: each leg keeps a random share of what it had not flushed.
	// Optionally cut again during the resync, then assemble once more.
	var dirtyAtRecovery [2]*bitset
	for round := 0; ; round++ {
		power = &legtest.Power{}
		legs = [2]*legtest.CrashLeg{legs[0].Recover(r, power), legs[1].Recover(r, power)}
		cutAgain := round == 0 && r.IntN(2) == 0
		if cutAgain {
			power.CutAfter(int64(5 + r.IntN(1500)))
		}
		for i, l := range legs {
			if sb, err := readSuperblock(l); err == nil {
				dirtyAtRecovery[i], _, _ = readBitmap(l, sb)
			}
		}
		t.Logf("round %d: recovered; chunk dirty on leg 0: %v", round, dirtyAtRecovery[0])
		v, err = Assemble([2]Leg{legs[0], legs[1]}, opts)
		if err != nil {
			if cutAgain && power.IsOff() {
				continue // the cut hit the assembly itself
			}
			t.Fatalf("round %d: assemble after power cut: %v", round, err)
		}
		if cutAgain {
			// Writes race the resync until the power fails again.
			if err := crashWorkload(v, power, model, seed, 1, 300); err != nil {
				t.Fatal(err)
			}
			power.Cut()
			_ = v.Close()
			continue
		}
		break
	}
	st := v.Status()
	waitInSync(t, v)
	acked := 0
	for _, w := range model.writes {
		if w.end != 0 {
			acked++
		}
	}
	t.Logf("before the cut: %s; writes %d (acked %d), flushes %d; after recovery: %s, legs %s/%s, %d bytes to resync",
		degraded, len(model.writes), acked, len(model.flushes), st.State, st.Legs[0].State, st.Legs[1].State, st.Resync.TotalBytes)
	blocks := v.Size() / crashBlock
	d0, d1 := legs[0].Bytes()[:v.Size()], legs[1].Bytes()[:v.Size()]
	if !bytes.Equal(d0, d1) {
		for b := int64(0); b < blocks; b++ {
			if !bytes.Equal(d0[b*crashBlock:(b+1)*crashBlock], d1[b*crashBlock:(b+1)*crashBlock]) {
				c := b * crashBlock / chunk
				for _, w := range model.writes {
					if w.blk*crashBlock/chunk <= c && (w.blk+w.n-1)*crashBlock/chunk >= c {
						t.Logf("write %d blk %d+%d zero=%v fua=%v start %d end %d", w.id, w.blk, w.n, w.zero, w.fua, w.start, w.end)
					}
				}
				t.Fatalf("legs differ after resync, first at block %d (chunk %d; dirty at recovery: %v %v)", b, c, dirtyAtRecovery[0].get(c), dirtyAtRecovery[1].get(c))
			}
		}
	}
	got := make([]byte, v.Size())
	if err := v.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	for b := int64(0); b < blocks; b++ {
		if err := model.check(b, got[b*crashBlock:(b+1)*crashBlock]); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
}
