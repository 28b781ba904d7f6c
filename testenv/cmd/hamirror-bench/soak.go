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

	"github.com/hamirror/hamirror/testenv/halab"
	"github.com/hamirror/hamirror/testenv/halab/hamirror"
)

// soakStatus is the part of a node's status the soak watches: besides
// hamirror.Status, membership's stall counters.
type soakStatus struct {
	hamirror.Status
	Cluster struct {
		Role         string        `json:"role"`
		Term         uint64        `json:"term"`
		Stalls       uint64        `json:"stalls"`
		LongestStall time.Duration `json:"longest_stall_ns"`
		Nodes        []struct {
			ID    string `json:"id"`
			Self  bool   `json:"self"`
			State string `json:"state"`
			Media []struct {
				Name  string `json:"name"`
				State string `json:"state"`
			} `json:"media"`
		} `json:"nodes"`
	} `json:"cluster"`
}

// soakView is what the soak compares from one poll to the next, per node.
type soakView struct {
	role, group string
	term        uint64
	peer        string            // the node's verdict on its peer
	media       map[string]string // the peer's media as the node sees them
	noneUp      bool              // no medium of the peer up (a near miss)
}

// soakEvent is one change the soak saw.
type soakEvent struct {
	at   time.Time
	node string
	what string
	// takeover: a false takeover (or its start): role, group or term.
	takeover bool
	// medium: a medium's state change ("disk-a warn -> down"), counted
	// rather than listed.
	medium string
}

// benchSoak runs hamirror's fast profile (keepalive 50 ms, dead 300 ms,
// the failover bench's row: ping target every 200 ms) with the client
// loop for HAMIRROR_SOAK (default 10m) while a load generator keeps every
// core busy and writes with an fsync after every chunk on the lab's
// filesystem, under nice -n HAMIRROR_SOAK_NICE (default 10; the lab is
// what gets starved; HAMIRROR_SOAK_LOAD=0 runs without the load). Both
// mirrords run at HAMIRROR_SOAK_MIRRORD_NICE (default -10, as
// systemd/mirrord.service runs it; the rest of the lab is unniced). Nothing is injected: any change of the active node, role,
// group state or term, and any fence, is a false takeover, and the
// section fails. It also reports the client's outages and attempt
// latencies, membership's stalls, media that went down, the WARN and
// ERROR lines of both mirrord logs, and how late this (unniced) process's
// own 10 ms sleeps woke.
func benchSoak() error {
	if err := halab.Available(); err != nil {
		fmt.Printf("soak section skipped: %v\n", err)
		return nil
	}
	bin := hamirrorBin()
	if bin == "" {
		return errors.New("no bin/mirrord: run make build (make bench does)")
	}
	if err := hamirror.Available(); err != nil {
		fmt.Printf("soak section skipped: %v\n", err)
		return nil
	}
	dur := 10 * time.Minute
	if v := os.Getenv("HAMIRROR_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("HAMIRROR_SOAK=%q: want a duration such as 10m", v)
		}
		dur = d
	}
	niceness := 10
	if v := os.Getenv("HAMIRROR_SOAK_NICE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 19 {
			return fmt.Errorf("HAMIRROR_SOAK_NICE=%q: want 0 to 19", v)
		}
		niceness = n
	}
	// mirrord's niceness: systemd/mirrord.service's Nice=-10 by default.
	mirrordNice := -10
	if v := os.Getenv("HAMIRROR_SOAK_MIRRORD_NICE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < -20 || n > 19 {
			return fmt.Errorf("HAMIRROR_SOAK_MIRRORD_NICE=%q: want -20 to 19", v)
		}
		mirrordNice = n
	}
	withLoad := os.Getenv("HAMIRROR_SOAK_LOAD") != "0"
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	l, err := halab.New(ctx, halab.Options{Name: "soak", Arrays: 2, LUNSize: 160 << 20,
		Keep: os.Getenv("HAMIRROR_BENCH_KEEP") != ""})
	if err != nil {
		return err
	}
	defer l.Close()
	p := hamirror.FastProfile()
	p.Ping, p.PingInterval = true, 200*time.Millisecond
	s := &hamirror.System{Bin: bin, Profile: p}
	if err := s.Setup(ctx, l); err != nil {
		return err
	}
	if err := s.Start(ctx); err != nil {
		return err
	}
	defer s.Stop(context.Background())
	active, err := s.WaitRunning(ctx, 90*time.Second)
	if err != nil {
		return err
	}
	// Let the pair settle (the volume's first sync, initdead) before the load.
	if err := s.WaitStandby(ctx, halab.Peer(active), 3*time.Minute); err != nil {
		return fmt.Errorf("the pair did not settle: %w", err)
	}
	for _, id := range []string{"n1", "n2"} {
		if err := reniceTasks(s.Daemon(id).Pid(), mirrordNice); err != nil {
			return fmt.Errorf("renicing %s's mirrord: %w", id, err)
		}
	}
	fmt.Printf("%s: %s active; soak of %v, mirrord at nice %d, load %s\n", s.Name(), active, dur, mirrordNice, loadWords(withLoad, niceness))

	client := l.StartClient(halab.ClientOptions{})
	defer client.Stop()
	var load *loadProc
	if withLoad {
		if load, err = startLoad(filepath.Join(l.Dir, "load"), niceness); err != nil {
			return err
		}
		defer func() {
			if load != nil {
				load.stop()
			}
		}()
	}
	lat := startLatencyMeter()
	start := time.Now()
	loadBefore := loadAvg()
	cpu0, io0 := pressure()
	events, polls := watchSoak(ctx, s, start.Add(dur))
	cpu1, io1 := pressure()
	loadAfter := loadAvg()
	us := float64(time.Since(start).Microseconds())
	latMax, latOver := lat.stop()
	client.Stop()
	loadLine := "no load"
	if load != nil {
		loadLine = strings.TrimSpace(load.stop())
		load = nil
	}
	if ctx.Err() != nil {
		return errors.New("interrupted; the lab was removed")
	}
	return reportSoak(s, start, time.Since(start), events, polls, client.Attempts(), soakHost{
		load: loadLine, loadavg: loadBefore + " -> " + loadAfter, latMax: latMax, latOver: latOver,
		psiCPU: float64(cpu1-cpu0) / us, psiIO: float64(io1-io0) / us})
}

// reniceTasks sets the niceness of every thread of process pid (Linux
// nices threads, not processes; threads made later inherit it from the
// thread that makes them).
func reniceTasks(pid, niceness int) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, niceness); err != nil {
			return fmt.Errorf("thread %d: %w", tid, err)
		}
	}
	return nil
}

func loadWords(on bool, niceness int) string {
	if !on {
		return "off (HAMIRROR_SOAK_LOAD=0)"
	}
	return fmt.Sprintf("every core busy + fsync-heavy writers, nice -n %d", niceness)
}

// watchSoak polls both nodes' status every 100 ms until end and returns
// every change it saw and the number of polls.
func watchSoak(ctx context.Context, s *hamirror.System, end time.Time) ([]soakEvent, int) {
	var events []soakEvent
	last := map[string]*soakView{}
	polls := 0
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(end) && ctx.Err() == nil {
		polls++
		for _, id := range []string{"n1", "n2"} {
			var st soakStatus
			now := time.Now()
			if err := s.CallNode(id, "status", nil, &st); err != nil {
				events = append(events, soakEvent{at: now, node: id, what: "status: " + err.Error()})
				continue
			}
			v := viewOf(&st, halab.Peer(id))
			events = append(events, diffViews(now, id, last[id], v)...)
			last[id] = v
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	for _, id := range []string{"n1", "n2"} {
		var st soakStatus
		if err := s.CallNode(id, "status", nil, &st); err == nil {
			events = append(events, soakEvent{at: time.Now(), node: id,
				what: fmt.Sprintf("at the end: %d stalls since mirrord started, longest %v", st.Cluster.Stalls, st.Cluster.LongestStall.Round(time.Millisecond))})
		}
	}
	return events, polls
}

func viewOf(st *soakStatus, peer string) *soakView {
	v := &soakView{role: st.Cluster.Role, group: st.Group.State, term: st.Cluster.Term, media: map[string]string{}}
	for _, n := range st.Cluster.Nodes {
		if n.ID == peer && !n.Self {
			v.peer = n.State
			v.noneUp = len(n.Media) > 0
			for _, m := range n.Media {
				v.media[m.Name] = m.State
				v.noneUp = v.noneUp && m.State != "up"
			}
		}
	}
	return v
}

// diffViews returns what changed on node id from a to b (a nil: the first
// poll, nothing to compare).
func diffViews(at time.Time, id string, a, b *soakView) []soakEvent {
	if a == nil {
		return nil
	}
	var ev []soakEvent
	add := func(takeover bool, f string, args ...any) {
		ev = append(ev, soakEvent{at: at, node: id, what: fmt.Sprintf(f, args...), takeover: takeover})
	}
	if a.role != b.role {
		add(true, "role %s -> %s", a.role, b.role)
	}
	if a.group != b.group {
		add(true, "group %s -> %s", a.group, b.group)
	}
	if a.term != b.term {
		add(true, "term %d -> %d", a.term, b.term)
	}
	if a.peer != b.peer {
		add(false, "peer %s -> %s", a.peer, b.peer)
	}
	if a.noneUp != b.noneUp {
		add(false, "no medium of the peer up: %v -> %v %v", a.noneUp, b.noneUp, b.media)
	}
	for name, st := range b.media {
		if a.media[name] != st {
			ev = append(ev, soakEvent{at: at, node: id, medium: fmt.Sprintf("%s %s -> %s", name, a.media[name], st)})
		}
	}
	return ev
}
