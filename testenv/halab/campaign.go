package halab

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/hamirror/hamirror/testenv/bench"
)

// Campaign measures one system under one fault many times on a lab whose
// system has been Setup and Started: per run, the client loop commits
// steadily, the fault hits the active node, the client's outage is
// measured, acknowledged rows are looked for on the new active node, and
// the victim is recovered as a standby (so runs alternate between nodes).
type Campaign struct {
	Lab    *Lab
	System System
	Fault  Fault
	Runs   int
	Client ClientOptions
	// GiveUp bounds one run's wait for the service to return (default
	// 60 s); a run that gives up is recorded as not recovered.
	GiveUp time.Duration
	Logf   func(format string, args ...any)
}

// RunResult is one fault and what the client saw.
type RunResult struct {
	Victim, Survivor string
	Recovered        bool   // the client succeeded again within GiveUp
	Outage           Outage // valid when Recovered
	// VIP is when the VIP was first seen on the survivor, from the fault
	// (0: not seen within the run).
	VIP       time.Duration
	Phases    []Phase // the system's own breakdown, if it exposes one
	Committed int     // rows acknowledged during the run
	Lost      []int64 // acknowledged rows the new active node lacks
}

// Result is a campaign's runs.
type Result struct {
	System string
	Fault  Fault
	Runs   []RunResult
}

// Run runs the campaign. It stops at the first run that cannot be set up
// or recovered (those are harness or system failures, not figures).
func (c Campaign) Run(ctx context.Context) (*Result, error) {
	if c.GiveUp == 0 {
		c.GiveUp = 60 * time.Second
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	res := &Result{System: c.System.Name(), Fault: c.Fault}
	for i := range c.Runs {
		r, err := c.one(ctx)
		if err != nil {
			return res, fmt.Errorf("%s, %s, run %d: %w", res.System, c.Fault, i+1, err)
		}
		res.Runs = append(res.Runs, r)
		switch {
		case r.Recovered && c.Fault.Moves():
			c.Logf("%s, %s, run %d/%d: %s on %s, outage %v (VIP on %s after %v), %d lost; %s", res.System, c.Fault, i+1, c.Runs,
				c.Fault, r.Victim, r.Outage.Duration.Round(time.Millisecond), r.Survivor, r.VIP.Round(time.Millisecond), len(r.Lost), r.steps())
		case r.Recovered:
			c.Logf("%s, %s, run %d/%d: %s under %s, outage %v, %d lost; %s", res.System, c.Fault, i+1, c.Runs,
				c.Fault, r.Victim, r.Outage.Duration.Round(time.Millisecond), len(r.Lost), r.steps())
		default:
			c.Logf("%s, %s, run %d/%d: no service within %v", res.System, c.Fault, i+1, c.Runs, c.GiveUp)
		}
	}
	return res, nil
}

func (c Campaign) one(ctx context.Context) (RunResult, error) {
	var r RunResult
	var err error
	if r.Victim, err = c.System.Active(ctx); err != nil {
		return r, err
	}
	r.Survivor = Peer(r.Victim)
	if !c.Fault.Moves() {
		r.Survivor = r.Victim
	}
	cl := c.Lab.StartClient(c.Client)
	defer cl.Stop()
	if err := cl.WaitCommits(ctx, 20, time.Now(), 30*time.Second); err != nil {
		return r, fmt.Errorf("before the fault: %w", err)
	}
	// A random phase against the system's timers.
	time.Sleep(rand.N(500 * time.Millisecond))
	// The VIP's move (none where the service stays on its node).
	var vip *vipWatch
	if c.Fault.Moves() {
		vip = c.watchVIP(r.Survivor)
	}
	fault := time.Now()
	if err := Inject(ctx, c.System, c.Fault, r.Victim); err != nil {
		vip.stop()
		return r, fmt.Errorf("injecting %s into %s: %w", c.Fault, r.Victim, err)
	}
	o, werr := cl.WaitOutage(ctx, fault, time.Now(), c.GiveUp)
	if werr == nil {
		r.Recovered, r.Outage = true, o
		// A few more commits on the new node, then stop writing.
		cl.WaitCommits(ctx, 5, o.To, 10*time.Second)
	}
	if at := vip.stop(); !at.IsZero() {
		r.VIP = at.Sub(fault)
	}
	cl.Stop()
	ids := cl.Committed()
	r.Committed = len(ids)
	if r.Recovered {
		if r.Lost, err = c.Lab.Missing(ctx, cl.opt.Addr, ids); err != nil {
			return r, fmt.Errorf("reading the ledger back: %w", err)
		}
	}
	if err := c.System.Recover(ctx, r.Victim); err != nil {
		return r, fmt.Errorf("recovering %s: %w", r.Victim, err)
	}
	// After Recover: a system may log its last step after the client was
	// already served (Pacemaker's pgsql agent polls the database once a
	// second before it reports the start done).
	if r.Recovered {
		if r.Phases, err = c.System.Breakdown(ctx, fault, r.Survivor); err != nil {
			return r, fmt.Errorf("breakdown: %w", err)
		}
	}
	return r, nil
}

// steps lists the run's phases and when the client was served, in
// seconds from the fault.
func (r RunResult) steps() string {
	var b strings.Builder
	b.WriteString("steps (s from the fault):")
	for _, p := range r.Phases {
		fmt.Fprintf(&b, " %s %.3f,", p.Name, p.At.Seconds())
	}
	fmt.Fprintf(&b, " client served %.3f", r.Outage.FaultToService.Seconds())
	return b.String()
}

// vipWatch polls a node for the VIP every 5 ms until it shows up.
type vipWatch struct {
	stopc chan struct{}
	wg    sync.WaitGroup
	at    time.Time
}

func (c Campaign) watchVIP(node string) *vipWatch {
	w := &vipWatch{stopc: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			if ok, _ := c.Lab.HasAddr(node, VIP); ok {
				w.at = time.Now()
				return
			}
			select {
			case <-w.stopc:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return w
}

// stop ends the watch and returns when the VIP was seen (zero if not, or
// no watch).
func (w *vipWatch) stop() time.Time {
	if w == nil {
		return time.Time{}
	}
	close(w.stopc)
	w.wg.Wait()
	return w.at
}

// Stats are a set of durations summarised.
type Stats struct {
	N             int
	P50, P99, Max time.Duration
}

// Summarise returns p50/p99/max of ds (nearest rank).
func Summarise(ds []time.Duration) Stats {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return Stats{N: len(ds), P50: time.Duration(bench.Percentile(xs, 50)), P99: time.Duration(bench.Percentile(xs, 99)),
		Max: time.Duration(bench.Percentile(xs, 100))}
}

// Outages returns the outages of the recovered runs.
func (r *Result) Outages() []time.Duration {
	var ds []time.Duration
	for _, run := range r.Runs {
		if run.Recovered {
			ds = append(ds, run.Outage.Duration)
		}
	}
	return ds
}

// PhaseStats summarises, for each phase name in order of first
// appearance, its time from the fault over the runs that report it; the
// VIP watcher's figure is the phase "VIP on survivor".
func (r *Result) PhaseStats() ([]string, map[string]Stats) {
	var names []string
	by := map[string][]time.Duration{}
	add := func(name string, d time.Duration) {
		if _, ok := by[name]; !ok {
			names = append(names, name)
		}
		by[name] = append(by[name], d)
	}
	for _, run := range r.Runs {
		for _, p := range run.Phases {
			add(p.Name, p.At)
		}
		if run.VIP > 0 {
			add("VIP on survivor", run.VIP)
		}
		if run.Recovered {
			add("client served", run.Outage.FaultToService)
		}
	}
	out := map[string]Stats{}
	for _, n := range names {
		out[n] = Summarise(by[n])
	}
	return names, out
}

// LostTotal counts acknowledged rows lost over all runs.
func (r *Result) LostTotal() (lost, committed int) {
	for _, run := range r.Runs {
		lost += len(run.Lost)
		committed += run.Committed
	}
	return lost, committed
}
