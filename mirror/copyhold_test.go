package mirror

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hamirror/hamirror/mirror/legtest"
)

// Machine rule 8 for copiers: a read repair or a verify repair writes the
// good copy of a chunk over the bad one under the chunk lock. When that
// write hangs and its leg cannot be failed (the other leg was failed
// meanwhile: it is the last working leg), the chunk lock ends but the
// call still runs. A write acknowledged after that must never be
// overwritten by the repair's old data landing late.
func TestAbandonedRepairWriteOnTheLastLegHoldsItsRange(t *testing.T) {
	for _, how := range []string{"read-repair", "verify-repair"} {
		t.Run(how, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := newMemPair(t, 4<<20, 64<<10)
				opts := testOptions(t)
				opts.IOTimeout = 2 * time.Second
				opts.BitClearDelay = time.Hour // chunk 0's bit stays durable: the repair writes data only
				v, err := Assemble(p.legs(), opts)
				if err != nil {
					t.Fatal(err)
				}
				defer v.Close()
				mustWrite(t, v, fill(0xAA), 0, true)
				p.fault[1].HangNth(legtest.OpWrite, 1) // the repair write to leg 1
				repaired := make(chan error, 1)
				if how == "read-repair" {
					p.fault[1].BadRange(0, 4096, errMedium)
					go func() {
						// Reads alternate between the legs: one of two reaches leg 1.
						var err error
						for range 2 {
							if err = v.ReadAt(make([]byte, 4096), 0); err != nil {
								break
							}
						}
						repaired <- err
					}()
				} else {
					if err := p.mem[1].WriteAt(fill(0x55), 0, true); err != nil { // the legs differ: verify repairs leg 1 from leg 0
						t.Fatal(err)
					}
					go func() {
						_, err := v.Verify(context.Background(), true)
						repaired <- err
					}()
				}
				synctest.Wait()
				if p.fault[1].Hung() != 1 {
					t.Fatalf("the repair write to leg 1 is not running (hung calls %d)", p.fault[1].Hung())
				}
				// The operator fails leg 0 while the repair write hangs:
				// leg 1 becomes the last working leg.
				if err := v.FailLeg(0); err != nil {
					t.Fatal(err)
				}
				t.Logf("repair ended: %v", <-repaired)
				done := make(chan error, 1)
				go func() { done <- v.WriteAt(fill(0xBB), 0, true) }()
				time.Sleep(opts.IOTimeout / 2)
				p.fault[1].Heal() // the abandoned repair write lands now
				err = <-done
				synctest.Wait()
				got := mustRead(t, v, 0)
				if err == nil && got[0] != 0xBB {
					t.Fatalf("read %#x after the acknowledged FUA write of 0xbb: the abandoned repair write landed over it", got[0])
				}
				t.Logf("write after the repair: %v; read %#x", err, got[0])
			})
		})
	}
}
