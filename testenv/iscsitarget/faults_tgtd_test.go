package iscsitarget

import (
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/hamirror/hamirror/iscsi"
)

// writeLoad runs writers that each cycle over their own region of 64 KiB
// blocks until stopped, recording the generation last acknowledged at each
// offset (a failed write makes its block's content unknown).
type writeLoad struct {
	d       *iscsi.Disk
	mu      sync.Mutex
	acked   map[int64]uint64
	errs    []error
	errTime []time.Time
	stop    chan struct{}
	wg      sync.WaitGroup
}

const loadBlock = 64 << 10

func startLoad(d *iscsi.Disk, writers int, regionBlocks int) *writeLoad {
	l := &writeLoad{d: d, stop: make(chan struct{}), acked: map[int64]uint64{}}
	for w := range writers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				off := int64(w*regionBlocks+i%regionBlocks) * loadBlock
				gen := uint64(i / regionBlocks)
				err := d.WriteAt(pattern(uint64(off)+gen<<40, loadBlock), off, false)
				l.mu.Lock()
				if err == nil {
					l.acked[off] = gen
				} else {
					delete(l.acked, off)
					l.errs = append(l.errs, err)
					l.errTime = append(l.errTime, time.Now())
				}
				l.mu.Unlock()
				if err != nil {
					time.Sleep(20 * time.Millisecond) // a failed leg is retried by the mirror, not in a tight loop
				}
			}
		}()
	}
	return l
}

func (l *writeLoad) finish() {
	close(l.stop)
	l.wg.Wait()
}

// firstErrorAfter waits until every writer has seen an error after t0 and
// returns how long the first and last took.
func (l *writeLoad) errorsSince(t0 time.Time) (n int, first error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, tm := range l.errTime {
		if tm.After(t0) {
			if first == nil {
				first = l.errs[i]
			}
			n++
		}
	}
	return n, first
}

func (l *writeLoad) verify(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	acked := maps.Clone(l.acked)
	l.mu.Unlock()
	buf := make([]byte, loadBlock)
	for off, gen := range acked {
		if err := l.d.ReadAt(buf, off); err != nil {
			t.Fatalf("reading acknowledged block at %d: %v", off, err)
		}
		mustEqual(t, "acknowledged block", buf, pattern(uint64(off)+gen<<40, loadBlock))
	}
	if len(acked) == 0 {
		t.Fatal("no write was ever acknowledged")
	}
}

func waitConnected(t *testing.T, d *iscsi.Disk, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !d.Connected() {
		if time.Now().After(deadline) {
			t.Fatalf("disk did not reconnect within %v", within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitErrors(t *testing.T, l *writeLoad, t0 time.Time, within time.Duration) error {
	t.Helper()
	deadline := t0.Add(within)
	for {
		if n, first := l.errorsSince(t0); n > 0 {
			return first
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write failed within %v of the fault", within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var faultCfg = iscsi.Config{Timeout: time.Second, ReconnectInterval: 100 * time.Millisecond}

// TestTgtdHangFailsFastAndRecovers: SIGSTOP freezes the array with its
// connections open. Outstanding writes must fail within the timeout (not
// hang), new calls fail at once while it is away, and after SIGCONT the
// Disk reconnects by itself with every acknowledged write intact.
func TestTgtdHangFailsFastAndRecovers(t *testing.T) {
	td, _ := newTgtd(t, 64<<20, "")
	d := openDisk(t, legURL(td), faultCfg)
	l := startLoad(d, 4, 50)
	time.Sleep(200 * time.Millisecond)
	t0 := time.Now()
	if err := td.Pause(); err != nil {
		t.Fatal(err)
	}
	err := waitErrors(t, l, t0, 3*faultCfg.Timeout)
	if !errors.Is(err, iscsi.ErrTimeout) {
		t.Fatalf("write during hang failed with %v, want ErrTimeout", err)
	}
	t.Logf("first write error after %v: %v", time.Since(t0).Round(time.Millisecond), err)
	// While the array is frozen, calls fail fast instead of queueing.
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	if err := d.Flush(); err == nil {
		t.Fatal("flush succeeded against a frozen array")
	} else if el := time.Since(start); el > faultCfg.Timeout+500*time.Millisecond {
		t.Fatalf("flush took %v against a frozen array", el)
	}
	if err := td.Resume(); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, d, 10*time.Second)
	time.Sleep(300 * time.Millisecond) // writes succeed again
	l.finish()
	l.verify(t)
	if d.Stats().Reconnects == 0 {
		t.Fatal("no reconnect counted")
	}
	if err := d.WriteAt(pattern(1, 4096), 0, true); err != nil {
		t.Fatalf("write after recovery: %v", err)
	}
}

// TestTgtdKillFailsFastAndRecovers: SIGKILL resets the connections and
// refuses new ones; writes fail at once, and after a restart of the array
// the Disk comes back by itself.
func TestTgtdKillFailsFastAndRecovers(t *testing.T) {
	td, _ := newTgtd(t, 64<<20, "")
	d := openDisk(t, legURL(td), faultCfg)
	l := startLoad(d, 4, 50)
	time.Sleep(200 * time.Millisecond)
	t0 := time.Now()
	if err := td.Kill(); err != nil {
		t.Fatal(err)
	}
	err := waitErrors(t, l, t0, faultCfg.Timeout)
	if !errors.Is(err, iscsi.ErrDisconnected) {
		t.Fatalf("write after kill failed with %v, want ErrDisconnected", err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := d.Flush(); !errors.Is(err, iscsi.ErrDisconnected) {
		t.Fatalf("flush with the array down: %v, want ErrDisconnected", err)
	}
	if d.Connected() {
		t.Fatal("disk claims to be connected to a dead array")
	}
	if err := td.Restart(); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, d, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	l.finish()
	l.verify(t)
}
