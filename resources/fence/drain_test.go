package fence

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"
)

// Which takeovers call for the wait: a victim removed by plain PREEMPT on
// any array; not PREEMPT AND ABORT, not a takeover that removed nobody.
func TestPlainPreemptCallsForTheDrain(t *testing.T) {
	for _, c := range []struct {
		name string
		r    Result
		want bool
	}{
		{"nobody removed", Result{Arrays: []ArrayResult{{Array: "a", Holder: true}, {Array: "b", Unreachable: true}}}, false},
		{"PREEMPT AND ABORT everywhere", Result{Arrays: []ArrayResult{{Array: "a", Preempted: []uint64{peer}, Aborted: true}}}, false},
		{"plain PREEMPT on one array", Result{Arrays: []ArrayResult{{Array: "a", Preempted: []uint64{peer}, Aborted: true}, {Array: "b", Preempted: []uint64{peer}}}}, true},
	} {
		if got := plainPreempt(c.r); got != c.want {
			t.Errorf("%s: plainPreempt = %v, want %v", c.name, got, c.want)
		}
	}
}

// The wait lasts PreemptDrain; one cut short by the context stays owed and
// the next operation waits it out in full.
func TestDrainWaitsAndACutWaitStaysOwed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &Fence{log: slog.New(slog.DiscardHandler), owed: DefaultPreemptDrain}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		t0 := time.Now()
		if d, err := f.drain(ctx); !errors.Is(err, context.DeadlineExceeded) || d != 0 {
			t.Fatalf("drain cut by the context: %v %v", d, err)
		}
		if f.owed != DefaultPreemptDrain || time.Since(t0) != 100*time.Millisecond {
			t.Fatalf("after the cut: owed %v, took %v", f.owed, time.Since(t0))
		}
		t0 = time.Now()
		if d, err := f.drain(context.Background()); err != nil || d != DefaultPreemptDrain || time.Since(t0) != DefaultPreemptDrain {
			t.Fatalf("drain: %v %v after %v", d, err, time.Since(t0))
		}
		if d, err := f.drain(context.Background()); err != nil || d != 0 || f.owed != 0 {
			t.Fatalf("nothing owed: %v %v", d, err)
		}
	})
}
