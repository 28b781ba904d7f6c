package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hamirror/hamirror/testenv/halab"
	"github.com/hamirror/hamirror/testenv/halab/hamirror"
	"github.com/hamirror/hamirror/testenv/halab/peers"
)

// failoverRuns is the default number of faults per setting and fault;
// HAMIRROR_BENCH_RUNS changes it (p99 needs many more runs than this).
const failoverRuns = 5

// defaultFaults are the faults measured unless HAMIRROR_BENCH_FAULTS
// says otherwise.
const defaultFaults = "kill freeze public-down array-kill"

// failoverSystem is one row of the failover section: a system and setting
// on the failover lab; arrays: it runs on the lab's two tgtd arrays.
type failoverSystem struct {
	new    func() halab.System
	avail  func() error
	arrays bool
}

func failoverSystems() []failoverSystem {
	bin := hamirrorBin()
	hm := func(p hamirror.Profile) func() halab.System {
		p.Ping = true
		return func() halab.System { return &hamirror.System{Bin: bin, Profile: p, DatabaseSteps: true} }
	}
	fast := hamirror.FastProfile()
	fast.PingInterval = 200 * time.Millisecond
	hmAvail := func() error {
		if bin == "" {
			return errors.New("no bin/mirrord: run make build (make bench does)")
		}
		return hamirror.Available()
	}
	return []failoverSystem{
		{new: hm(hamirror.DefaultProfile()), avail: hmAvail, arrays: true},
		{new: hm(fast), avail: hmAvail, arrays: true},
		{new: func() halab.System { return &peers.Keepalived{} }, avail: peers.KeepalivedAvailable},
		{new: func() halab.System { return &peers.Keepalived{AdvertInt: "0.01"} }, avail: peers.KeepalivedAvailable},
		{new: func() halab.System { return &peers.Pacemaker{} }, avail: peers.PacemakerAvailable},
		{new: func() halab.System { return &peers.Pacemaker{Token: 1000, Ping: time.Second} }, avail: peers.PacemakerAvailable},
	}
}

// hamirrorBin is the folder of the mirrord and mirrorctl that make build
// left in bin/ ("" if absent).
func hamirrorBin() string {
	dir, err := filepath.Abs("bin")
	if err != nil {
		return ""
	}
	for _, b := range []string{"mirrord", "mirrorctl"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return ""
		}
	}
	return dir
}

// benchFailover measures the client-visible outage when the active node
// fails, for every system on the same network-namespace lab with the same
// client loop (a fresh connection to the VIP and one committed INSERT per
// attempt; connect timeout 100 ms, 500 ms per attempt, 10 ms between
// attempts). HAMIRROR_BENCH_RUNS is the number of runs per system and
// fault (default 5); HAMIRROR_BENCH_FAULTS lists the faults (default
// every one: "kill freeze public-down array-kill"; array-kill only for
// the systems on the lab's arrays, hamirror's); HAMIRROR_BENCH_SYSTEMS
// keeps only the systems whose name holds one of its words ("hamirror",
// "fast", "keepalived", "pacemaker", "token"); HAMIRROR_BENCH_KEEP=1
// keeps each lab's folder (the daemons' logs); HAMIRROR_BENCH_LUNS says
// where the arrays' LUN files are (lunPlace).
func benchFailover() error {
	if err := halab.Available(); err != nil {
		fmt.Printf("failover section skipped: %v\n", err)
		return nil
	}
	if err := setLUNPlace(); err != nil {
		return err
	}
	runs := failoverRuns
	if s := os.Getenv("HAMIRROR_BENCH_RUNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return fmt.Errorf("HAMIRROR_BENCH_RUNS=%q: want a positive number of runs", s)
		}
		runs = n
	}
	var faults []halab.Fault
	fs := os.Getenv("HAMIRROR_BENCH_FAULTS")
	if fs == "" {
		fs = defaultFaults
	}
	for _, f := range strings.Fields(fs) {
		faults = append(faults, halab.Fault(f))
	}
	// Ctrl-C ends the runs; every lab is still closed.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var results []*halab.Result
	var skipped []string
	for _, fault := range faults {
		for _, fs := range failoverSystems() {
			s := fs.new()
			if !wanted(s.Name()) || !halab.Supports(s, fault) {
				continue
			}
			if err := fs.avail(); err != nil {
				skipped = append(skipped, fmt.Sprintf("%s: %v", s.Name(), err))
				continue
			}
			fmt.Printf("%s, fault %s, %d runs ...\n", s.Name(), fault, runs)
			res, err := failoverCampaign(ctx, s, fs.arrays, fault, runs)
			if res != nil && len(res.Runs) > 0 {
				results = append(results, res)
			}
			if err != nil {
				printFailover(results, skipped)
				if ctx.Err() != nil {
					return errors.New("interrupted; every lab was removed")
				}
				return err
			}
		}
	}
	printFailover(results, skipped)
	return nil
}

// wanted says whether HAMIRROR_BENCH_SYSTEMS selects the system named name.
func wanted(name string) bool {
	words := strings.Fields(strings.ToLower(os.Getenv("HAMIRROR_BENCH_SYSTEMS")))
	if len(words) == 0 {
		return true
	}
	for _, w := range words {
		if strings.Contains(strings.ToLower(name), w) {
			return true
		}
	}
	return false
}

// lunDir and lunPlace: where the labs keep the arrays' LUN files (and
// Pacemaker's shared loop device), HAMIRROR_BENCH_LUNS. "ram", the
// default, puts them on the tmpfs /dev/shm: the arrays then answer a
// flush from memory, as a real array's battery-backed cache does, and
// what is measured is the failover, not this host's disk (a shared
// virtual disk whose fdatasync takes from 1 ms to over 500 ms). The lab
// never cuts an array's power, so its LUNs are as safe either way: a
// killed tgtd leaves its writes in the host's page cache. "disk" keeps
// them in the lab's folder under TMPDIR.
var lunDir, lunPlace string

func setLUNPlace() error {
	switch v := os.Getenv("HAMIRROR_BENCH_LUNS"); v {
	case "", "ram":
		var st unix.Statfs_t
		if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
			return fmt.Errorf("HAMIRROR_BENCH_LUNS=ram needs a tmpfs on /dev/shm (statfs: %v); set HAMIRROR_BENCH_LUNS=disk to keep the LUN files on the disk", err)
		}
		lunDir, lunPlace = "/dev/shm", "LUN files in RAM"
	case "disk":
		lunDir, lunPlace = "", "LUN files on the host's disk"
	default:
		return fmt.Errorf("HAMIRROR_BENCH_LUNS=%q: want ram (the default) or disk", v)
	}
	return nil
}

// failoverCampaign runs one system on a lab of its own.
func failoverCampaign(ctx context.Context, s halab.System, arrays bool, fault halab.Fault, runs int) (*halab.Result, error) {
	opt := halab.Options{Name: "bench", Arrays: -1, LUNDir: lunDir, Keep: os.Getenv("HAMIRROR_BENCH_KEEP") != "",
		Private: append(peers.PacemakerPrivate(), "/etc/keepalived"), Overlay: peers.PacemakerOverlay()}
	if arrays {
		opt.Arrays, opt.LUNSize = 2, 160<<20
	}
	l, err := halab.New(ctx, opt)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	if err := s.Setup(ctx, l); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	defer s.Stop(context.Background())
	fmt.Printf("  started in %.1f s\n", time.Since(start).Seconds())
	return halab.Campaign{Lab: l, System: s, Fault: fault, Runs: runs,
		Logf: func(f string, a ...any) { fmt.Printf("  "+f+"\n", a...) }}.Run(ctx)
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }

// printFailover prints one row per system and fault, then each one's
// breakdown, then the peers' documented defaults.
func printFailover(results []*halab.Result, skipped []string) {
	fmt.Printf("\nFailover: client-visible outage after the active node's fault (s, lower is better; netns lab, shared host, %s)\n", lunPlace)
	fmt.Printf("  %-44s %-11s %5s %7s %7s %7s %9s  %s\n", "subject", "fault", "runs", "p50", "p99", "max", "vs ka p50", "acknowledged rows lost")
	base := map[halab.Fault]time.Duration{}
	for _, r := range results {
		if strings.HasPrefix(r.System, "keepalived, defaults") {
			base[r.Fault] = halab.Summarise(r.Outages()).P50
		}
	}
	for _, r := range results {
		st := halab.Summarise(r.Outages())
		ratio := "-"
		if b := base[r.Fault]; b > 0 && st.N > 0 {
			ratio = fmt.Sprintf("%.2fx", float64(st.P50)/float64(b))
		}
		lost, committed := r.LostTotal()
		note := fmt.Sprintf("%d of %d", lost, committed)
		if st.N < len(r.Runs) {
			note += fmt.Sprintf("; %d runs not served again", len(r.Runs)-st.N)
		}
		p50, p99, pmax := secs(st.P50), secs(st.P99), secs(st.Max)
		if st.N == 0 {
			p50, p99, pmax = "-", "-", "-"
		}
		fmt.Printf("  %-44s %-11s %5d %7s %7s %7s %9s  %s\n", r.System, r.Fault, len(r.Runs), p50, p99, pmax, ratio, note)
	}
	for _, r := range results {
		names, st := r.PhaseStats()
		if len(names) == 0 {
			continue
		}
		fmt.Printf("\n  %s, %s: breakdown, seconds from the fault (p50 / max)\n", r.System, r.Fault)
		for _, n := range names {
			fmt.Printf("    %-28s %6s / %6s  (%d runs)\n", n, secs(st[n].P50), secs(st[n].Max), st[n].N)
		}
	}
	for _, s := range skipped {
		fmt.Printf("\n  skipped %s\n", s)
	}
	fmt.Println(`
  The client loop is the same for every row: a new connection to the VIP and one committed INSERT per
  attempt (connect timeout 100 ms, 500 ms per attempt, 10 ms pause). keepalived moves the VIP alone and each
  node runs its own PostgreSQL, so the rows the dead node acknowledged are lost by design. Pacemaker fences
  with fence_halab (the lab's power switch): fence_scsi needs the kernel's SCSI layer, which this host lacks.
  Documented defaults: keepalived 3 x advert_int (1 s) + skew to declare the master dead; Corosync token
  3 s + consensus 3.6 s before membership changes, then Pacemaker fences and starts the group.
  hamirror fences through SCSI-3 reservations on the lab's two tgtd arrays (PREEMPT, then an ordered
  barrier), assembles the mirror, mounts ext4 (nbdfuse + loop), adds the VIP and starts PostgreSQL; its
  freeze stops mirrord alone; public-down hands over on the ping target (the client); array-kill kills
  one array under the active node, which runs on (no move).`)
}
