package mirror

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hamirror/hamirror/mirror/legtest"
)

// A copier (a verify, a read's repair) locks a chunk and waits for the
// writes in flight there to drain. When such a write fails on leg 0 and
// its call to leg 1 hangs, leg 0 is failed and the write's range stays
// held until the abandoned call returns (machine rule 8): the write
// drains only then, maybe never. The copier must not wait for it: its
// copy no longer counts once a leg failed, so it gives up and its caller
// returns within bounded time (the model campaign's seed 100746 hung
// here). The held range itself must still keep later writes away.
func TestCopierDoesNotWaitForAWriteHeldByAnAbandonedCall(t *testing.T) {
	for _, how := range []string{"verify", "read-repair"} {
		t.Run(how, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const chunk = 64 << 10
				p := newMemPair(t, 4<<20, chunk)
				opts := testOptions(t)
				opts.IOTimeout = 2 * time.Second
				opts.BitClearDelay = time.Hour // chunk 1's bit stays durable: the write below calls the legs at once
				v, err := Assemble(p.legs(), opts)
				if err != nil {
					t.Fatal(err)
				}
				defer func() {
					p.fault[0].Heal()
					p.fault[1].Heal()
					synctest.Wait()
					v.Close()
				}()
				const off = chunk + 3*4096 // in chunk 1
				mustWrite(t, v, fill(0x11), off, true)
				mustWrite(t, v, fill(0x11), chunk, true)

				// The write: a medium error on leg 0, a hang on leg 1.
				p.fault[0].FailNth(legtest.OpWrite, 1, errMedium)
				p.fault[1].HangNth(legtest.OpWrite, 1)
				wrote := make(chan error, 1)
				go func() { wrote <- v.WriteAt(fill(0x22), off, true) }()
				synctest.Wait()
				if p.fault[1].Hung() != 1 {
					t.Fatalf("the write to leg 1 is not hanging (hung calls %d)", p.fault[1].Hung())
				}

				// The copier locks chunk 1 while the write is in flight.
				copied := make(chan error, 1)
				if how == "verify" {
					go func() {
						_, err := v.Verify(context.Background(), false)
						copied <- err
					}()
				} else {
					p.fault[0].BadRange(chunk, 4096, errMedium) // the retry on leg 1 works; leg 0's copy is rewritten
					go func() {
						// Reads alternate between the legs: one of two reaches leg 0.
						var err error
						for range 2 {
							if err = v.ReadAt(make([]byte, 4096), chunk); err != nil {
								break
							}
						}
						copied <- err
					}()
				}
				synctest.Wait()
				select {
				case err := <-copied:
					t.Fatalf("the %s returned (%v) before the write in its chunk ended: it did not wait for it", how, err)
				default:
				}

				if err := <-wrote; err == nil {
					t.Fatal("the write failed on leg 0 and hung on leg 1, yet it was acknowledged")
				}
				if st := v.Status(); st.Legs[0].State != "failed" {
					t.Fatalf("leg 0 after its write error: %+v", st.Legs[0])
				}
				select {
				case err := <-copied:
					t.Logf("%s: %v", how, err)
					if how == "verify" && !errors.Is(err, ErrNoLeg) {
						t.Errorf("verify after leg 0 failed under it: %v; want a leg left sync (ErrNoLeg)", err)
					}
					if how == "read-repair" && err != nil {
						t.Errorf("read: %v; leg 1 holds the data, the read must succeed", err)
					}
				case <-time.After(10 * opts.IOTimeout):
					t.Fatalf("the %s still waits %v after its leg failed, for a write whose call on leg 1 hangs: the caller hangs", how, 10*opts.IOTimeout)
				}

				// Rule 8 holds: a write over the held range is refused while
				// the abandoned call may still land.
				if err := v.WriteAt(fill(0x33), off, true); !errors.Is(err, ErrTimeout) {
					t.Fatalf("write over the held range while its abandoned call runs: %v; want ErrTimeout", err)
				}
				p.fault[1].Heal() // the abandoned write lands
				synctest.Wait()
				mustWrite(t, v, fill(0x44), off, true)
				if got := mustRead(t, v, off); got[0] != 0x44 {
					t.Fatalf("read %#x after the acknowledged write of 0x44", got[0])
				}
			})
		})
	}
}
