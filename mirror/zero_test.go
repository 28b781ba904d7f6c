package mirror

import (
	"bytes"
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hamirror/hamirror/mirror/legtest"
)

// Issue 10 finding 4: a zero larger than a leg can zero within the I/O
// timeout (here 32 MiB at 10 MiB/s with a 1 s timeout, on both legs) is
// cut into pieces that each fit: it succeeds and no leg fails.
func TestLargeZeroOnSlowLegsIsCutIntoPieces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const size, rate = 40 << 20, 10 << 20
		var slow [2]*legtest.SlowLeg
		var legs [2]Leg
		for i := range 2 {
			slow[i] = legtest.NewSlowLeg(legtest.NewMemLeg([]string{"a", "b"}[i], size), rate)
			legs[i] = slow[i]
		}
		if _, err := Create(legs, CreateOptions{ChunkSize: 64 << 10, NodeID: "n"}); err != nil {
			t.Fatal(err)
		}
		opts := testOptions(t)
		opts.IOTimeout = time.Second
		v, err := Assemble(legs, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		ones := bytes.Repeat([]byte{1}, 1<<20)
		for off := int64(0); off < 33<<20; off += 1 << 20 {
			if err := v.WriteAt(ones, off, false); err != nil {
				t.Fatal(err)
			}
		}
		const zoff, zlen = 4096, 32 << 20
		if err := v.Zero(zoff, zlen, false); err != nil {
			t.Fatalf("zero of 32 MiB at 10 MiB/s with a 1 s I/O timeout: %v", err)
		}
		if st := v.Status(); st.State != "clean" {
			t.Fatalf("a leg failed zeroing on healthy legs: %+v", st)
		}
		for i, s := range slow {
			calls := s.ZeroCalls()
			next := int64(zoff)
			for _, c := range calls {
				if c.Took >= opts.IOTimeout || c.Off != next {
					t.Fatalf("leg %d: zero pieces %+v: each must take less than %v and follow the previous", i, calls, opts.IOTimeout)
				}
				next += c.Length
			}
			if next != zoff+zlen || len(calls) < 4 {
				t.Fatalf("leg %d: pieces %+v do not cover the range in several pieces", i, calls)
			}
			t.Logf("leg %d: %d pieces, the first %d bytes", i, len(calls), calls[0].Length)
		}
		want := append(bytes.Repeat([]byte{1}, zoff), make([]byte, 1<<20-zoff)...)
		edge := append(make([]byte, 4096), bytes.Repeat([]byte{1}, 4096)...)
		for _, c := range []struct {
			off  int64
			want []byte
		}{{0, want}, {zoff + zlen - 4096, edge}} {
			got := make([]byte, len(c.want))
			if err := v.ReadAt(got, c.off); err != nil || !bytes.Equal(got, c.want) {
				t.Fatalf("data at %d after the zero is wrong (%v)", c.off, err)
			}
		}
	})
}

// ctxLeg is a leg whose ZeroContext hangs until its context ends and
// records when that was.
type ctxLeg struct {
	Leg
	ended chan time.Duration
}

func (c *ctxLeg) ZeroContext(ctx context.Context, off, length int64, unmap bool) error {
	t0 := time.Now()
	<-ctx.Done()
	c.ended <- time.Since(t0)
	return ctx.Err()
}

// A leg that can be told to stop zeroing is told so before the engine
// gives up on it, so it issues nothing after that.
func TestZeroContextEndsBeforeTheIOTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := legtest.NewMemLeg("a", 8<<20), legtest.NewMemLeg("b", 8<<20)
		hung := &ctxLeg{Leg: b, ended: make(chan time.Duration, 1)}
		if _, err := Create([2]Leg{a, hung}, CreateOptions{ChunkSize: 64 << 10, NodeID: "n"}); err != nil {
			t.Fatal(err)
		}
		opts := testOptions(t)
		opts.IOTimeout = 2 * time.Second
		v, err := Assemble([2]Leg{a, hung}, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		if err := v.Zero(0, 1<<20, true); err != nil {
			t.Fatalf("zero with one leg failing: %v", err)
		}
		if d := <-hung.ended; d >= opts.IOTimeout {
			t.Fatalf("the leg's zero was told to stop after %v, not before the %v I/O timeout", d, opts.IOTimeout)
		}
		if st := v.Status(); st.Legs[1].State != "failed" || st.Legs[0].State != "in_sync" {
			t.Fatalf("status %+v", st)
		}
	})
}
