package fence_test

import (
	"encoding/binary"
	"errors"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/resources/fence"
	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

// raceRound is what one takeover under the victim's write load showed.
type raceRound struct {
	good, refused int64 // the victim's writes: GOOD, RESERVATION CONFLICT
	// goodAfter: victim writes whose GOOD arrived after Takeover returned.
	goodAfter int64
	// landedAfter: regions the array changed after Takeover returned (read
	// from its backing file right then, and again once every victim write
	// had ended): writes admitted before the PREEMPT that landed later.
	landedAfter int
	// lastLanding: when the array last changed, after Takeover returned
	// (polled every millisecond).
	lastLanding time.Duration
	took        time.Duration // Takeover's duration
	res         fence.Result
}

// takeoverUnderLoad runs one round: node1 holds the reservation and keeps
// raceSlots FUA writes in flight (each slot rewrites its own region with
// a new sequence number), node2 takes over with cfg, and the array's
// backing file is compared right after Takeover returned and after every
// victim write ended.
func takeoverUnderLoad(t *testing.T, a *iscsitarget.Array, round int, tweak func(*fence.Config)) raceRound {
	const raceSlots, region = 120, 64 << 10
	open := func(node string) *iscsi.Disk {
		d, err := iscsi.OpenLeg(ctx(t), a.URL, iscsi.Config{InitiatorName: "iqn.2026-01.org.hamirror.test:" + node,
			Timeout: 5 * time.Second, ReconnectInterval: 100 * time.Millisecond, QueueDepth: 128})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	vol1, vol2 := open("node1"), open("node2")
	defer vol1.Close()
	defer vol2.Close()
	key1, key2 := uint64(0x1100+round), uint64(0x2200+round)
	f1, err := fence.New(fence.Config{Key: key1, Peers: []uint64{key2}, Arrays: []fence.Array{{Name: a.Name, Volume: vol1}}})
	if err != nil {
		t.Fatal(err)
	}
	cfg2 := fence.Config{Key: key2, Peers: []uint64{key1}, Arrays: []fence.Array{{Name: a.Name, Volume: vol2}}}
	if tweak != nil {
		tweak(&cfg2)
	}
	f2, err := fence.New(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, "node1 register")(f1.Register(ctx(t)))
	mustOK(t, "node2 register")(f2.Register(ctx(t)))
	mustOK(t, "node1 acquire")(f1.Acquire(ctx(t)))

	var (
		r        raceRound
		seq      atomic.Uint64
		returned atomic.Bool
		wg       sync.WaitGroup
		started  = make(chan struct{}, raceSlots)
	)
	for slot := range raceSlots {
		wg.Go(func() {
			buf := make([]byte, region)
			for i := 0; ; i++ {
				n := seq.Add(1)
				for s := 0; s < region; s += 512 {
					binary.BigEndian.PutUint64(buf[s:], n)
				}
				err := vol1.WriteAt(buf, int64(slot*region), true)
				if i == 0 {
					started <- struct{}{}
				}
				switch {
				case err == nil && returned.Load():
					atomic.AddInt64(&r.goodAfter, 1)
					atomic.AddInt64(&r.good, 1)
				case err == nil:
					atomic.AddInt64(&r.good, 1)
				case errors.Is(err, iscsi.ErrReservationConflict):
					atomic.AddInt64(&r.refused, 1)
					return // the mirror stops on the conflict (fenced)
				default:
					t.Errorf("node1's write: %v", err)
					return
				}
			}
		})
	}
	for range raceSlots {
		<-started
	}
	time.Sleep(30 * time.Millisecond) // the target's queues fill
	img, err := os.Open(a.Img)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	// image reads the sequence number each region starts with: a region
	// whose number changed was written.
	image := func() []uint64 {
		seqs := make([]uint64, raceSlots)
		var b [8]byte
		for s := range seqs {
			if _, err := img.ReadAt(b[:], int64(s*region)); err != nil {
				t.Fatal(err)
			}
			seqs[s] = binary.BigEndian.Uint64(b[:])
		}
		return seqs
	}
	t0 := time.Now()
	res, err := f2.Takeover(ctx(t), key1)
	r.took, r.res = time.Since(t0), res
	returned.Store(true)
	atThen := image()
	if err != nil {
		t.Fatalf("node2's takeover: %v\n%s", err, res)
	}
	returnedAt := time.Now()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	final, quiet := atThen, time.Time{}
	for quiet.IsZero() || time.Since(quiet) < 100*time.Millisecond {
		if cur := image(); !slices.Equal(cur, final) {
			final, r.lastLanding = cur, time.Since(returnedAt)
		}
		select {
		case <-done:
			if quiet.IsZero() {
				quiet = time.Now()
			}
		default:
		}
		time.Sleep(time.Millisecond)
	}
	for s := range atThen {
		if atThen[s] != final[s] {
			r.landedAfter++
		}
	}
	if err := vol1.WriteAt(make([]byte, 512), 0, true); !errors.Is(err, iscsi.ErrReservationConflict) {
		t.Fatalf("node1's write after the takeover: %v, want the conflict", err)
	}
	if err := vol2.Clear(key2); err != nil { // the next round starts afresh
		t.Fatal(err)
	}
	return r
}

// Commands the victim queued at the array before the takeover's PREEMPT
// may still complete after it (tgtd refuses PREEMPT AND ABORT, which
// would abort them, and checks a command's reservation when it admits
// it, not when its backing-store thread writes it). By the time Takeover
// returns, every write admitted before the PREEMPT must have landed, so
// the new owner reads final superblocks and bitmaps: after a plain
// PREEMPT, Takeover sends an ordered barrier (tgtd keeps one task set for
// every initiator), or waits Config.PreemptDrain (NoBarrier).
//
// On tgtd 1.0.85 without the drain, most rounds showed writes landing
// after Takeover returned (20 to 104 of the 120 regions); three rounds
// made this test fail almost surely before Takeover waited. The first
// round here measures it without the wait (logged, not asserted: a race);
// HAMIRROR_DRAIN_ROUNDS=N runs N rounds of each for a campaign.
func TestNoVictimWriteLandsAfterTakeoverReturns(t *testing.T) {
	a := iscsitarget.StartArray(t, t.TempDir(), "array-a", 16<<20)
	rounds, measured := 3, 1
	if n, err := strconv.Atoi(os.Getenv("HAMIRROR_DRAIN_ROUNDS")); err == nil && n > 0 {
		rounds, measured = n, n
	}
	noDrain := func(c *fence.Config) { c.PreemptDrain = -1 }
	landedRounds, landed, latest := 0, 0, time.Duration(0)
	for round := range measured {
		r := takeoverUnderLoad(t, a, round, noDrain)
		logRound(t, "without the wait", round, r)
		if r.landedAfter > 0 {
			landedRounds++
			landed += r.landedAfter
			latest = max(latest, r.lastLanding)
		}
	}
	t.Logf("without the wait: writes landed after Takeover returned in %d of %d rounds (%d regions in all, the latest %v after it returned)",
		landedRounds, measured, landed, latest.Round(time.Millisecond))
	for round := range rounds {
		r := takeoverUnderLoad(t, a, measured+rounds+round, nil)
		logRound(t, "with the barrier", round, r)
		if r.good == 0 || r.refused == 0 {
			t.Fatalf("the race did not happen: %d GOOD, %d refused", r.good, r.refused)
		}
		if !r.res.Barrier || r.res.Drained != 0 {
			t.Fatalf("round %d: Takeover after tgtd's plain PREEMPT: barrier %v, waited %v; want the ordered barrier and no wait", round, r.res.Barrier, r.res.Drained)
		}
		if r.landedAfter > 0 {
			t.Fatalf("round %d: %d of node1's regions changed after node2's Takeover returned, after its ordered barrier: writes admitted before the PREEMPT landed after it", round, r.landedAfter)
		}
	}
	for round := range rounds {
		r := takeoverUnderLoad(t, a, measured+round, func(c *fence.Config) { c.NoBarrier = true })
		logRound(t, "with the wait", round, r)
		if r.good == 0 || r.refused == 0 {
			t.Fatalf("the race did not happen: %d GOOD, %d refused", r.good, r.refused)
		}
		if r.res.Drained != fence.DefaultPreemptDrain || r.took < fence.DefaultPreemptDrain {
			t.Fatalf("round %d: Takeover after tgtd's plain PREEMPT waited %v (took %v), want %v", round, r.res.Drained, r.took, fence.DefaultPreemptDrain)
		}
		if r.landedAfter > 0 {
			t.Fatalf("round %d: %d of node1's regions changed after node2's Takeover returned: writes admitted before the PREEMPT landed after it", round, r.landedAfter)
		}
	}
}

func logRound(t *testing.T, what string, round int, r raceRound) {
	t.Helper()
	t.Logf("%s, round %d: takeover in %v; node1's writes: %d GOOD (%d after Takeover returned), %d refused; regions changed after Takeover returned: %d (the last %v after)",
		what, round, r.took.Round(time.Millisecond), r.good, r.goodAfter, r.refused, r.landedAfter, r.lastLanding.Round(time.Millisecond))
}
