package mirror

// Takeover safety (issue 10): each test reproduces one way an earlier
// engine lost acknowledged data or reported two different legs in sync.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/mirror/legtest"
)

// crashPair is a volume's two legs on one power supply (CrashLeg), each
// behind a fault injector.
type crashPair struct {
	power *legtest.Power
	crash [2]*legtest.CrashLeg
	fault [2]*legtest.FaultLeg
}

func newCrashPair(t testing.TB, size, chunk int64) *crashPair {
	t.Helper()
	p := &crashPair{power: &legtest.Power{}}
	for i := range 2 {
		p.crash[i] = legtest.NewCrashLeg([]string{"crash0", "crash1"}[i], size, p.power)
		p.fault[i] = legtest.NewFaultLeg(p.crash[i])
	}
	if _, err := Create(p.legs(), CreateOptions{ChunkSize: chunk, NodeID: "test-node"}); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *crashPair) legs() [2]Leg { return [2]Leg{p.fault[0], p.fault[1]} }

// kill is kill -9 of the daemon: the volume gets no further I/O, what was
// flushed survives (and, for the test's determinism, what was not flushed
// survives too), the legs come back as new objects.
func (p *crashPair) kill(v *Volume) {
	p.power.Cut()
	p.fault[0].Heal()
	p.fault[1].Heal()
	_ = v.Close()
	p.power = &legtest.Power{}
	for i := range 2 {
		p.crash[i] = p.crash[i].Recover(rand.New(rand.NewPCG(1, uint64(i))), p.power)
		p.fault[i] = legtest.NewFaultLeg(p.crash[i])
	}
}

func fill(b byte) []byte { return bytes.Repeat([]byte{b}, 4096) }

func mustWrite(t testing.TB, v *Volume, p []byte, off int64, fua bool) {
	t.Helper()
	if err := v.WriteAt(p, off, fua); err != nil {
		t.Fatalf("write at %d: %v", off, err)
	}
}

func mustRead(t testing.TB, v *Volume, off int64) []byte {
	t.Helper()
	p := make([]byte, 4096)
	if err := v.ReadAt(p, off); err != nil {
		t.Fatalf("read at %d: %v", off, err)
	}
	return p
}

// Finding 1: a lone leg that is not provably the newest is not served.
// Leg 0 leaves (failed by the operator, or by its own write errors), the
// volume writes on leg 1 and is killed; started again with leg 1 missing,
// leg 0 alone must be refused (it would serve the old data). Started with
// leg 1 present but unreadable, the read error is an error, not "missing".
func TestLoneStaleLegIsRefused(t *testing.T) {
	for _, how := range []string{"operator", "write-error", "unreadable-other"} {
		t.Run(how, func(t *testing.T) {
			p := newCrashPair(t, 4<<20, 64<<10)
			v, err := Assemble(p.legs(), testOptions(t))
			if err != nil {
				t.Fatal(err)
			}
			mustWrite(t, v, fill(0x11), 0, false)
			if how == "write-error" {
				p.fault[0].FailFrom(legtest.OpWrite, 1, errMedium)
			} else if err := v.FailLeg(0); err != nil {
				t.Fatal(err)
			}
			mustWrite(t, v, fill(0x22), 0, false)
			if err := v.Flush(); err != nil {
				t.Fatal(err)
			}
			p.kill(v)
			legs := [2]Leg{p.fault[0], nil}
			if how == "unreadable-other" {
				p.fault[1].FailFrom(legtest.OpRead, 1, errMedium)
				legs[1] = p.fault[1]
			}
			v, err = Assemble(legs, testOptions(t))
			if err == nil {
				got := mustRead(t, v, 0)
				v.Close()
				t.Fatalf("assembled leg 0 alone (serving %#x, the acknowledged data is 0x22)", got[0])
			}
			if how == "unreadable-other" {
				if !strings.Contains(err.Error(), "crash1") {
					t.Fatalf("the error does not name the unreadable leg: %v", err)
				}
			} else if !strings.Contains(err.Error(), "--keep-leg 0") {
				t.Fatalf("the refusal does not say how to force: %v", err)
			}
			// With both legs readable the volume serves the newest data.
			p.fault[1].Heal()
			v, err = Assemble(p.legs(), testOptions(t))
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			if got := mustRead(t, v, 0); got[0] != 0x22 {
				t.Fatalf("read %#x, want 0x22", got[0])
			}
		})
	}
}

// staleLeg0 makes leg 0 stale: it left (failed by the operator), leg 1
// took a write of 0x22 over leg 0's 0x11 and flushed; then the daemon was
// killed.
func staleLeg0(t *testing.T) *crashPair {
	p := newCrashPair(t, 4<<20, 64<<10)
	v, err := Assemble(p.legs(), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, v, fill(0x11), 0, false)
	if err := v.FailLeg(0); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, v, fill(0x22), 0, false)
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	p.kill(v)
	return p
}

// Finding 2: a newer leg is never overwritten. Leg 0 is stale; at the
// restart one read of leg 1's superblock fails: it is retried, and the
// volume serves leg 1's data. When leg 1 stays unreadable the operator
// forces leg 0 (--keep-leg 0); leg 1, readable again, holds data leg 0
// never saw: adding it is a split brain, refused, and leg 1 keeps its
// data until the operator forces the add.
func TestAddLegNeverOverwritesANewerLeg(t *testing.T) {
	t.Run("transient-read-error", func(t *testing.T) {
		p := staleLeg0(t)
		p.fault[1].FailNth(legtest.OpRead, 1, errMedium)
		v, err := Assemble(p.legs(), testOptions(t))
		if err != nil {
			t.Fatalf("assemble after one transient read error: %v", err)
		}
		defer v.Close()
		if got := mustRead(t, v, 0); got[0] != 0x22 {
			t.Fatalf("read %#x, want 0x22", got[0])
		}
	})
	t.Run("unreadable-then-forced", func(t *testing.T) {
		p := staleLeg0(t)
		p.fault[1].FailFrom(legtest.OpRead, 1, errMedium) // leg 1 stays unreadable
		var ue *UnreadableLegError
		if _, err := Assemble(p.legs(), testOptions(t)); !errors.As(err, &ue) || !strings.Contains(err.Error(), "--keep-leg 0") {
			t.Fatalf("assemble with leg 1 unreadable: %v, want an *UnreadableLegError naming --keep-leg 0", err)
		}
		opts := testOptions(t)
		opts.KeepLeg = 0
		v, err := Assemble(p.legs(), opts)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		p.fault[1].Heal()
		err = v.AddLeg(1, p.fault[1])
		if err == nil {
			waitInSync(t, v)
			t.Fatalf("leg 1, which holds newer data, was added and overwritten (leg 1 now %#x)", p.crash[1].Bytes()[0])
		}
		var sb *SplitBrainError
		if !errors.As(err, &sb) || !strings.Contains(err.Error(), "leg add 1 --force") {
			t.Fatalf("refusal is not reported as a split brain naming the choices: %v", err)
		}
		if got := p.crash[1].Bytes()[0]; got != 0x22 {
			t.Fatalf("leg 1 holds %#x after the refused add, want its 0x22", got)
		}
		// The operator decides to keep the running volume's data.
		if err := v.AddLegWith(1, p.fault[1], AddOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
		waitInSync(t, v)
		if got := p.crash[1].Bytes()[0]; got != 0x11 {
			t.Fatalf("forced add: leg 1 holds %#x, want the kept 0x11", got)
		}
	})
}

// blockingLeg blocks reads at one offset while armed, announcing each on
// entered. A fake: a real leg cannot be held at one chosen read.
type blockingLeg struct {
	Leg
	off     int64
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (b *blockingLeg) ReadAt(p []byte, off int64) error {
	if off == b.off && b.armed.CompareAndSwap(true, false) {
		b.entered <- struct{}{}
		<-b.release
	}
	return b.Leg.ReadAt(p, off)
}

// Finding 3: a resync batch copied before the target was failed and
// re-added (or replaced by a blank leg) is never recorded: the leg would
// be reported in sync holding old data (or zeros).
func TestResyncBatchFromAnEarlierAttachIsNotRecorded(t *testing.T) {
	for _, how := range []string{"same-leg", "blank-replacement"} {
		t.Run(how, func(t *testing.T) {
			const chunk = 64 << 10
			p := newMemPair(t, 4<<20, chunk)
			src := &blockingLeg{Leg: p.fault[0], off: 3 * chunk, entered: make(chan struct{}), release: make(chan struct{})}
			v, err := Assemble([2]Leg{src, p.fault[1]}, testOptions(t))
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			if err := v.FailLeg(1); err != nil {
				t.Fatal(err)
			}
			for c := int64(0); c < 4; c++ {
				mustWrite(t, v, fill(byte(0x10+c)), c*chunk, false)
			}
			src.armed.Store(true) // the copy of chunk 3 waits: chunks 0-2 are copied, not yet recorded
			if err := v.AddLeg(1, p.fault[1]); err != nil {
				t.Fatal(err)
			}
			<-src.entered
			if err := v.FailLeg(1); err != nil {
				t.Fatal(err)
			}
			mustWrite(t, v, fill(0x99), 1*chunk, false) // leg 0 only
			target := Leg(p.fault[1])
			if how == "blank-replacement" {
				target = legtest.NewMemLeg("blank", 4<<20)
			}
			if err := v.AddLeg(1, target); err != nil {
				t.Fatal(err)
			}
			close(src.release)
			waitInSync(t, v)
			for c := int64(0); c < 4; c++ {
				want := byte(0x10 + c)
				if c == 1 {
					want = 0x99
				}
				got := make([]byte, 4096)
				if err := target.ReadAt(got, c*chunk); err != nil {
					t.Fatal(err)
				}
				if got[0] != want {
					t.Fatalf("leg 1 reported in sync but holds %#x in chunk %d, want %#x", got[0], c, want)
				}
			}
		})
	}
}

// Finding 4: when the last leg times out on a write, the range stays held
// until the abandoned call returns. A later FUA write to it waits (and
// lands after it), or fails with a clear error after the I/O timeout; it
// is never overwritten by the abandoned call landing late.
func TestAbandonedWriteOnTheLastLegHoldsItsRange(t *testing.T) {
	for _, legs := range []string{"degraded", "both-hang"} {
		t.Run(legs, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := newMemPair(t, 4<<20, 64<<10)
				opts := testOptions(t)
				opts.IOTimeout = 2 * time.Second
				v, err := Assemble(p.legs(), opts)
				if err != nil {
					t.Fatal(err)
				}
				mustWrite(t, v, fill(0x01), 0, false)
				if legs == "degraded" {
					if err := v.FailLeg(1); err != nil {
						t.Fatal(err)
					}
				} else {
					p.fault[1].HangNth(legtest.OpWrite, 1)
				}
				p.fault[0].HangNth(legtest.OpWrite, 1)
				if err := v.WriteAt(fill(0x11), 0, false); err == nil {
					t.Fatal("a write whose every leg hung was acknowledged")
				}
				// The abandoned call still runs. A FUA write of the range
				// waits for it; the hung call returns meanwhile.
				done := make(chan error, 1)
				go func() { done <- v.WriteAt(fill(0x22), 0, true) }()
				time.Sleep(opts.IOTimeout / 2)
				synctest.Wait()
				select {
				case err := <-done:
					t.Fatalf("a write over an abandoned one went ahead at once (err %v)", err)
				default:
				}
				p.fault[0].Heal()
				p.fault[1].Heal()
				if err := <-done; err != nil {
					t.Fatalf("the waiting write: %v", err)
				}
				synctest.Wait()
				if got := mustRead(t, v, 0); got[0] != 0x22 {
					t.Fatalf("read %#x: the abandoned write landed over the acknowledged FUA write", got[0])
				}
				// Without a return the next write fails after the timeout.
				last := 0
				if st := v.Status(); st.Legs[0].State != "in_sync" {
					last = 1
				}
				p.fault[last].HangNth(legtest.OpWrite, 1)
				if err := v.WriteAt(fill(0x33), 0, false); err == nil {
					t.Fatal("a write whose last leg hung was acknowledged")
				}
				start := time.Now()
				err = v.WriteAt(fill(0x44), 0, true)
				if err == nil || !strings.Contains(err.Error(), "abandoned") {
					t.Fatalf("write over a still-running abandoned write: %v, want an error naming it", err)
				}
				if d := time.Since(start); d < opts.IOTimeout || d > 3*opts.IOTimeout {
					t.Fatalf("the write waited %v, want about the I/O timeout %v", d, opts.IOTimeout)
				}
				p.fault[last].Heal()
				synctest.Wait()
				mustWrite(t, v, fill(0x55), 0, true)
				if got := mustRead(t, v, 0); got[0] != 0x55 {
					t.Fatalf("read %#x, want 0x55", got[0])
				}
				v.Close()
			})
		})
	}
}

// Finding 5: a hung write on a failed leg must not land after the slot was
// re-added under a new leg object on the same storage (a path or a name
// reopened): the add waits until the call returned. The replaced object
// is closed.
func TestZombieWriteCannotLandAfterReAddByPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newMemPair(t, 4<<20, 64<<10)
		opts := testOptions(t)
		opts.IOTimeout = 2 * time.Second
		old := legtest.NewHandle(p.fault[1])
		v, err := Assemble([2]Leg{p.fault[0], old}, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		mustWrite(t, v, fill(0x01), 0, false) // the chunk's bit is set: the next write is data only
		p.fault[1].HangNth(legtest.OpWrite, 1)
		mustWrite(t, v, fill(0x11), 0, false) // leg 1 hangs, is failed; leg 0 acknowledges
		if st := v.Status(); st.Legs[1].State != "failed" {
			t.Fatalf("leg 1 not failed after its write hung: %+v", st)
		}
		replacement := legtest.NewHandle(p.mem[1]) // `mirrorctl leg add 1 PATH`: a new object, the same storage
		if err := v.AddLeg(1, replacement); err == nil {
			waitInSync(t, v)
			mustWrite(t, v, fill(0x22), 0, false)
			p.fault[1].Heal() // the zombie write lands now
			synctest.Wait()
			t.Logf("after the late landing: identical %v, status %+v, mem1 %#x", p.identical(v.Size()), v.Status(), p.mem[1].Bytes()[0])
			if !p.identical(v.Size()) && v.Status().Legs[1].State == "in_sync" {
				t.Fatal("both legs reported in sync but they differ: the hung write landed after the re-add")
			}
			t.Fatal("the slot was re-added while a write into it was still out")
		}
		p.fault[1].Heal()
		synctest.Wait()
		if err := v.AddLeg(1, replacement); err != nil {
			t.Fatalf("add after the hung call returned: %v", err)
		}
		if !old.Closed() {
			t.Error("the replaced leg object was not closed")
		}
		waitInSync(t, v)
		mustWrite(t, v, fill(0x22), 0, false)
		if !p.identical(v.Size()) {
			t.Fatal("legs differ")
		}
	})
}

// Finding 7: status shows, for a failed leg, what a re-add will copy.
func TestStatusShowsWhatAReAddWillCopy(t *testing.T) {
	const chunk = 64 << 10
	p := newMemPair(t, 4<<20, chunk)
	v, err := Assemble(p.legs(), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.FailLeg(1); err != nil {
		t.Fatal(err)
	}
	for c := int64(0); c < 8; c++ {
		mustWrite(t, v, fill(1), c*chunk, false)
	}
	if got := v.Status().Legs[1].OutOfSyncBytes; got != 8*chunk {
		t.Fatalf("failed leg out_of_sync_bytes %d, want %d (8 chunks written since it left)", got, 8*chunk)
	}
	if err := v.AddLeg(1, p.fault[1]); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := v.WaitInSync(ctx); err != nil {
		t.Fatal(err)
	}
	if st := v.Status(); st.Resync.TotalBytes != 8*chunk || st.Legs[1].OutOfSyncBytes != 0 {
		t.Fatalf("after the re-add: %+v", st)
	}
}

// Fencing (DESIGN.md): a RESERVATION CONFLICT means the peer took over and
// fenced this node. It is never a leg failure: the volume stops serving
// (ErrFenced, state "fenced"), fails no leg, writes no more metadata, and
// tells the node once.
func TestReservationConflictFencesTheVolume(t *testing.T) {
	for _, on := range []string{"data-write", "metadata-write"} {
		t.Run(on, func(t *testing.T) {
			p := newMemPair(t, 4<<20, 64<<10)
			opts := testOptions(t)
			var told atomic.Int32
			opts.OnFenced = func() { told.Add(1) }
			v, err := Assemble(p.legs(), opts)
			if err != nil {
				t.Fatal(err)
			}
			mustWrite(t, v, fill(1), 0, false) // chunk 0's bit is durable
			conflict := fmt.Errorf("WRITE(16): %w", iscsi.ErrReservationConflict)
			p.fault[0].FailFrom(legtest.OpWrite, 1, conflict)
			before := [2]uint64{examineMem(t, p.mem[0]).Events, examineMem(t, p.mem[1]).Events}
			off := int64(0) // same chunk: data only
			if on == "metadata-write" {
				off = 10 << 16 // a clean chunk: its bit is written first
			}
			if err := v.WriteAt(fill(2), off, false); !errors.Is(err, ErrFenced) {
				t.Fatalf("write on a fenced leg: %v, want ErrFenced", err)
			}
			for range 3 {
				if err := v.WriteAt(fill(3), 1<<16, false); !errors.Is(err, ErrFenced) {
					t.Fatalf("later write: %v, want ErrFenced", err)
				}
				if err := v.ReadAt(make([]byte, 4096), 0); !errors.Is(err, ErrFenced) {
					t.Fatalf("read after fencing: %v, want ErrFenced", err)
				}
			}
			st := v.Status()
			if st.State != "fenced" || st.Legs[0].State != "in_sync" || st.Legs[1].State != "in_sync" || !strings.Contains(st.Error, "fenced") {
				t.Fatalf("status after a reservation conflict: %+v", st)
			}
			if err := v.Close(); !errors.Is(err, ErrFenced) {
				t.Fatalf("close of a fenced volume: %v", err)
			}
			p.reopen()
			after := [2]uint64{examineMem(t, p.mem[0]).Events, examineMem(t, p.mem[1]).Events}
			if after != before {
				t.Fatalf("metadata written after fencing: events %v -> %v", before, after)
			}
			for i := range 2 {
				if info := examineMem(t, p.mem[i]); info.LegStates != [2]string{"in_sync", "in_sync"} {
					t.Fatalf("leg %d records %v after fencing: a leg was failed", i, info.LegStates)
				}
			}
			time.Sleep(10 * time.Millisecond) // OnFenced runs in its own goroutine
			if n := told.Load(); n != 1 {
				t.Fatalf("OnFenced called %d times, want once", n)
			}
		})
	}
}

// Options.Publish: every metadata write that changes a leg state or starts
// a generation is handed to Publish, and the I/O waiting for it is
// acknowledged only after Publish returned; Volume.Known reports the same.
func TestPublishHoldsTheWriteThatMissedALegUntilReturned(t *testing.T) {
	p := newMemPair(t, 4<<20, 64<<10)
	opts := testOptions(t)
	var mu sync.Mutex
	var got []KnownState
	gate := make(chan struct{})
	var gated atomic.Bool
	opts.Publish = func(k KnownState) {
		if gated.Load() {
			<-gate
		}
		mu.Lock()
		got = append(got, k)
		mu.Unlock()
	}
	v, err := Assemble(p.legs(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	mu.Lock()
	if len(got) != 1 || got[0].LegStates != [2]string{"in_sync", "in_sync"} || got[0] != v.Known() {
		t.Fatalf("published at assembly: %+v, Known %+v", got, v.Known())
	}
	mu.Unlock()
	for range 5 { // bitmap-only writes are not published
		mustWrite(t, v, fill(1), 0, false)
		mustWrite(t, v, fill(1), 5<<16, false)
	}
	gated.Store(true)
	p.fault[1].FailNth(legtest.OpWrite, 1, errMedium)
	done := make(chan error, 1)
	go func() { done <- v.WriteAt(fill(2), 0, false) }()
	select {
	case err := <-done:
		t.Fatalf("a write that missed leg 1 was acknowledged (%v) before Publish returned", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	last := got[len(got)-1]
	if len(got) != 2 || last.LegStates != [2]string{"in_sync", "failed"} || last.Generation == got[0].Generation || last != v.Known() {
		t.Fatalf("published %+v, Known %+v: want the failure with a new generation, once", got, v.Known())
	}
}

// The operator's `leg fail` is recorded on the failed leg itself: its own
// superblock then says it failed, so started alone it is refused even
// when the other leg's record never reached anyone.
func TestOperatorFailIsRecordedOnTheFailedLeg(t *testing.T) {
	p := newMemPair(t, 4<<20, 64<<10)
	v, err := Assemble(p.legs(), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	gens := len(examineMem(t, p.mem[1]).Generations)
	if err := v.FailLeg(1); err != nil {
		t.Fatal(err)
	}
	info := examineMem(t, p.mem[1])
	if info.LegStates[1] != "failed" || len(info.Generations) != gens {
		t.Fatalf("leg 1 records %v with %d generations, want itself failed and its history unchanged (%d)", info.LegStates, len(info.Generations), gens)
	}
	if err := v.AddLeg(1, p.fault[1]); err != nil {
		t.Fatalf("re-adding the leg the operator failed: %v", err)
	}
	waitInSync(t, v)
	if st := v.Status(); st.Resync.TotalBytes != 0 {
		t.Fatalf("nothing was written while leg 1 was out, yet %d bytes were copied", st.Resync.TotalBytes)
	}
}

// Options.OpenLeg and Options.BeforeReAdd: a leg reopened by name comes
// from the hook, and BeforeReAdd can refuse the add before anything is
// written to it.
func TestOpenLegAndBeforeReAddHooks(t *testing.T) {
	p := newMemPair(t, 4<<20, 64<<10)
	opts := testOptions(t)
	var opened []string
	opts.OpenLeg = func(spec string) (Leg, error) {
		opened = append(opened, spec)
		return legtest.NewHandle(p.fault[1]), nil
	}
	refuse := errors.New("array not fenced yet")
	var asked []int
	opts.BeforeReAdd = func(slot int, leg Leg) error {
		asked = append(asked, slot)
		if len(asked) == 1 {
			return refuse
		}
		return nil
	}
	v, err := Assemble([2]Leg{p.fault[0], legtest.NewHandle(p.fault[1])}, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.FailLeg(1); err != nil {
		t.Fatal(err)
	}
	writes := p.fault[1].Count(legtest.OpWrite)
	if err := v.AddLeg(1, nil); !errors.Is(err, refuse) {
		t.Fatalf("add refused by BeforeReAdd: %v", err)
	}
	if p.fault[1].Count(legtest.OpWrite) != writes {
		t.Fatal("the refused leg was written to")
	}
	if err := v.AddLeg(1, nil); err != nil {
		t.Fatal(err)
	}
	waitInSync(t, v)
	if len(opened) != 2 || opened[0] != "mem1" || len(asked) != 2 || asked[1] != 1 {
		t.Fatalf("OpenLeg calls %v, BeforeReAdd calls %v", opened, asked)
	}
}
