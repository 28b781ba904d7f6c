package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/testenv/bench"
	"github.com/hamirror/hamirror/testenv/hblab"
)

// heartbeatRuns is how many times the peer is killed.
const heartbeatRuns = 30

// benchHeartbeat measures dead-peer detection in the netns lab: two nodes
// with two private NICs (veth), a pty serial line and a disk slot file, at
// the default timing. Each run kills node n1 at a random phase of its
// keepalive and times n2's "n1 dead" event. The peers' figures are their
// documented defaults, not measurements.
func benchHeartbeat() error {
	lab, err := hblab.New(hblab.Options{Name: "bench", Nodes: 2, Serial: true, Disk: true, Preferred: "n2"})
	if err != nil {
		return err
	}
	defer lab.Close()
	ctx := context.Background()
	n2, err := lab.Start(ctx, "n2")
	if err != nil {
		return err
	}
	tm := lab.Config.Timing
	var ms []float64
	for i := range heartbeatRuns {
		n1, err := lab.Start(ctx, "n1")
		if err != nil {
			return err
		}
		mark := time.Now()
		if _, err := n2.WaitEvent(5*time.Second, func(e heartbeat.Event) bool {
			return hblab.NodeEvent("n1", "alive")(e) && !e.At.Before(mark)
		}); err != nil {
			return err
		}
		// Let every medium come up, then kill at a random keepalive phase.
		time.Sleep(tm.Keepalive*3 + rand.N(tm.Keepalive))
		stopped := time.Now()
		n1.Stop()
		e, err := n2.WaitEvent(tm.Dead+3*time.Second, func(e heartbeat.Event) bool {
			return hblab.NodeEvent("n1", "dead")(e) && e.At.After(stopped)
		})
		if err != nil {
			return fmt.Errorf("run %d: %w", i, err)
		}
		ms = append(ms, float64(e.At.Sub(stopped).Microseconds())/1000)
	}
	target := float64((tm.Dead + tm.Keepalive).Milliseconds())
	t := bench.Table{Title: fmt.Sprintf("Heartbeat: peer killed -> dead event, %d runs (netns lab: 2 NICs + serial + disk)", len(ms)),
		Unit: "ms", Base: "keepalived (default)", LowerIsBetter: true}
	t.Add("hamirror p50", bench.Median(ms), fmt.Sprintf("keepalive %v, dead %v", tm.Keepalive, tm.Dead))
	t.Add("hamirror p99", bench.Percentile(ms, 99), fmt.Sprintf("target <= deadtime + keepalive = %.0f ms", target))
	t.Add("hamirror max", bench.Percentile(ms, 100))
	t.Add("keepalived (default)", 3500, "3 x advert_int 1 s + skew; documented default")
	t.Add("Corosync (default)", 6600, "token 3 s + consensus 3.6 s; documented default")
	t.Add("Heartbeat (default)", 30000, "deadtime 30 s; documented default")
	t.Print(os.Stdout)
	if p99 := bench.Percentile(ms, 99); p99 > target {
		return fmt.Errorf("p99 detection %.0f ms exceeds deadtime + keepalive (%.0f ms)", p99, target)
	}
	return nil
}
