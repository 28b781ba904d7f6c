package mirror

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/hamirror/hamirror/mirror/legtest"
)

// Close while an add reopens a leg by name: the slot holds no leg object
// (the failed one was closed before the reopen) and belongs to the add.
// A resync batch recorded at Close must not flush that slot (it gets no
// I/O while failed or being added), and the add must end, not hang, once
// its open returns after Close.
func TestCloseWhileAReAddReopensTheLeg(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const chunk = 64 << 10
		p := newMemPair(t, 4<<20, chunk)
		opts := testOptions(t)
		opts.ResyncMinRate, opts.ResyncMaxRate = chunk, chunk // one chunk a second
		opening := make(chan struct{})
		release := make(chan struct{})
		opts.OpenLeg = func(spec string) (Leg, error) {
			close(opening)
			<-release // the array answers the login slowly
			return legtest.NewHandle(p.fault[1]), nil
		}
		v, err := Assemble([2]Leg{p.fault[0], legtest.NewHandle(p.fault[1])}, opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.FailLeg(1); err != nil {
			t.Fatal(err)
		}
		for c := int64(0); c < 8; c++ {
			mustWrite(t, v, fill(1), c*chunk, false)
		}
		if err := v.AddLeg(1, legtest.NewHandle(p.fault[1])); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2500 * time.Millisecond) // a few chunks copied, not yet recorded
		p.fault[1].FailNth(legtest.OpWrite, 1, errMedium)
		mustWrite(t, v, fill(2), 0, false) // leg 1 fails again
		added := make(chan error, 1)
		go func() { added <- v.AddLeg(1, nil) }()
		<-opening
		closed := make(chan error, 1)
		go func() { closed <- v.Close() }()
		synctest.Wait()
		close(release)
		t.Logf("close: %v", <-closed)
		select {
		case err := <-added:
			t.Logf("add: %v", err)
		case <-time.After(time.Minute):
			t.Fatal("an add whose open returned after Close never returned")
		}
	})
}
