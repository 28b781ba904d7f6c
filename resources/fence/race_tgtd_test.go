package fence_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/resources/fence"
	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

// Both nodes declare each other dead at once (a heartbeat partition) and
// take over at the same time. Exactly one must win: it holds both arrays,
// the other is fenced off both. Working on the arrays in parallel, node1
// can win array A while node2 wins array B (forced here by holding each
// node's PREEMPT on one array until the other node's went through): both
// takeovers fail and each node is fenced off one array, so nobody can run
// the volume.
func TestSimultaneousTakeoversHaveOneWinner(t *testing.T) {
	dir := t.TempDir()
	arrays := []*iscsitarget.Array{iscsitarget.StartArray(t, dir, "array-a", lunSize), iscsitarget.StartArray(t, dir, "array-b", lunSize)}
	const key1, key2 = 0x1111, 0x2222
	isPreempt := func(cdb []byte, sa byte) bool { return cdb[0] == 0x5f && cdb[1]&0x1f == sa }
	a1, b2 := make(chan struct{}), make(chan struct{})
	var a1once, b2once sync.Once
	waitOr := func(c chan struct{}) {
		select {
		case <-c:
		case <-time.After(3 * time.Second): // the other node never got there
		}
	}
	// hooks[node][array] interposes that node's volume session to that array.
	hooks := map[string]map[string]func(*interposer){
		"node1": {
			"array-a": func(c *interposer) { // node1's PREEMPT on A goes first
				c.afterSend = func(cdb []byte) {
					if isPreempt(cdb, 4) {
						time.Sleep(50 * time.Millisecond)
						a1once.Do(func() { close(a1) })
					}
				}
			},
			"array-b": func(c *interposer) { // node1's PREEMPT on B waits for node2's
				c.onCommand = func(cdb []byte) {
					if isPreempt(cdb, 5) || isPreempt(cdb, 4) {
						waitOr(b2)
					}
				}
			},
		},
		"node2": {
			"array-a": func(c *interposer) {
				c.onCommand = func(cdb []byte) {
					if isPreempt(cdb, 5) || isPreempt(cdb, 4) {
						waitOr(a1)
					}
				}
			},
			"array-b": func(c *interposer) {
				c.afterSend = func(cdb []byte) {
					if isPreempt(cdb, 4) {
						time.Sleep(50 * time.Millisecond)
						b2once.Do(func() { close(b2) })
					}
				}
			},
		},
	}
	var armed sync.WaitGroup
	armed.Add(1)
	fences := map[string]*fence.Fence{}
	vols := map[string]map[string]*iscsi.Disk{}
	for node, key := range map[string]uint64{"node1": key1, "node2": key2} {
		var cfgArrays []fence.Array
		vols[node] = map[string]*iscsi.Disk{}
		for _, a := range arrays {
			hook := hooks[node][a.Name]
			var dialer net.Dialer
			dial := func(c context.Context, network, addr string) (net.Conn, error) {
				nc, err := dialer.DialContext(c, network, addr)
				if err != nil {
					return nil, err
				}
				ic := &interposer{Conn: nc}
				go func() { armed.Wait(); hook(ic) }()
				return ic, nil
			}
			d, err := iscsi.OpenLeg(ctx(t), a.URL, iscsi.Config{InitiatorName: "iqn.2026-01.org.hamirror.test:" + node,
				Timeout: 5 * time.Second, ReconnectInterval: 50 * time.Millisecond, Dial: dial})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			vols[node][a.Name] = d
			cfgArrays = append(cfgArrays, fence.Array{Name: a.Name, Volume: d})
		}
		peer := uint64(key1 + key2 - key)
		f, err := fence.New(fence.Config{Key: key, Peers: []uint64{peer}, Arrays: cfgArrays})
		if err != nil {
			t.Fatal(err)
		}
		fences[node] = f
	}
	mustOK(t, "node1 register")(fences["node1"].Register(ctx(t)))
	mustOK(t, "node2 register")(fences["node2"].Register(ctx(t)))
	mustOK(t, "node1 acquire")(fences["node1"].Acquire(ctx(t)))
	armed.Done()
	time.Sleep(50 * time.Millisecond) // the hooks are set

	var wg sync.WaitGroup
	errs := map[string]error{}
	var mu sync.Mutex
	for node, f := range fences {
		wg.Go(func() {
			r, err := f.Takeover(ctx(t))
			mu.Lock()
			errs[node] = err
			mu.Unlock()
			t.Logf("%s takeover: %v\n%s", node, err, r)
		})
	}
	wg.Wait()
	winners := 0
	for _, err := range errs {
		if err == nil {
			winners++
		}
	}
	if winners != 1 {
		t.Fatalf("%d of two simultaneous takeovers won (node1: %v; node2: %v); want exactly one", winners, errs["node1"], errs["node2"])
	}
	for node, err := range errs {
		for _, a := range arrays {
			werr := vols[node][a.Name].WriteAt(make([]byte, 4096), 0, true)
			if won := err == nil; won != (werr == nil) {
				t.Fatalf("%s (won %v) writes on %s: %v", node, won, a.Name, werr)
			}
			if err != nil && !errors.Is(werr, iscsi.ErrReservationConflict) {
				t.Fatalf("the loser %s's write on %s: %v, want a reservation conflict", node, a.Name, werr)
			}
		}
	}
}
