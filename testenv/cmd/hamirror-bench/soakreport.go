package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hamirror/hamirror/testenv/halab"
	"github.com/hamirror/hamirror/testenv/halab/hamirror"
)

// soakHost is what the soak measured of the host.
type soakHost struct {
	load    string // the load generator's summary
	loadavg string
	latMax  time.Duration // the latency meter's worst wake-up delay
	latOver int           // its wake-ups later than 50 ms
	// psiCPU, psiIO: the share of the soak some task waited for a CPU, for I/O.
	psiCPU, psiIO float64
}

// latencyMeter sleeps 10 ms again and again in this (unniced) process and
// records how late it wakes: how starved a normal process is.
type latencyMeter struct {
	mu   sync.Mutex
	max  time.Duration
	over int
	done chan struct{}
	wg   sync.WaitGroup
}

func startLatencyMeter() *latencyMeter {
	m := &latencyMeter{done: make(chan struct{})}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			t := time.Now()
			select {
			case <-m.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			late := time.Since(t) - 10*time.Millisecond
			m.mu.Lock()
			m.max = max(m.max, late)
			if late > 50*time.Millisecond {
				m.over++
			}
			m.mu.Unlock()
		}
	}()
	return m
}

func (m *latencyMeter) stop() (time.Duration, int) {
	close(m.done)
	m.wg.Wait()
	return m.max, m.over
}

// pressure returns the kernel's pressure-stall totals (µs) of cpu and io
// ("some": at least one task waiting), zero when /proc/pressure is absent.
func pressure() (cpu, io int64) {
	read := func(name string) int64 {
		b, err := os.ReadFile("/proc/pressure/" + name)
		if err != nil {
			return 0
		}
		line, _, _ := strings.Cut(string(b), "\n")
		_, t, _ := strings.Cut(line, "total=")
		n, _ := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
		return n
	}
	return read("cpu"), read("io")
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// clientGap is one run of failed client attempts.
type clientGap struct {
	from     time.Time
	length   time.Duration // from the first failure's start to the next success's end
	attempts int
	err      string
}

// clientGaps returns the runs of failed attempts in as.
func clientGaps(as []halab.Attempt) []clientGap {
	var gaps []clientGap
	var cur *clientGap
	for _, a := range as {
		switch {
		case a.Err != nil && cur == nil:
			cur = &clientGap{from: a.Start, attempts: 1, err: a.Err.Error()}
		case a.Err != nil:
			cur.attempts++
		case cur != nil:
			cur.length = a.End.Sub(cur.from)
			gaps = append(gaps, *cur)
			cur = nil
		}
	}
	if cur != nil {
		cur.length = as[len(as)-1].End.Sub(cur.from)
		gaps = append(gaps, *cur)
	}
	return gaps
}

// reportSoak prints the soak's result and fails it on a false takeover.
func reportSoak(s *hamirror.System, start time.Time, el time.Duration, events []soakEvent, polls int,
	as []halab.Attempt, host soakHost) error {
	rel := func(t time.Time) string { return fmt.Sprintf("+%7.2fs", t.Sub(start).Seconds()) }
	falses := 0
	fmt.Printf("\nSoak: %s, %v, %d status polls of each node (netns lab, shared host)\n", s.Name(), el.Round(time.Second), polls)
	fmt.Printf("  host: %s; load average %s\n", host.load, host.loadavg)
	fmt.Printf("  pressure stall (some task waiting): cpu %.0f%% of the time, io %.0f%%\n", host.psiCPU*100, host.psiIO*100)
	fmt.Printf("  this process's 10 ms sleeps (unniced): worst %v late, %d more than 50 ms late\n",
		host.latMax.Round(time.Millisecond), host.latOver)
	fmt.Printf("\n  events seen in both nodes' status (false: a takeover or its start)\n")
	media := map[string]int{}
	var mediaKeys []string
	listed := 0
	for _, e := range events {
		if e.medium != "" {
			k := e.node + " sees the peer's " + e.medium
			if media[k] == 0 {
				mediaKeys = append(mediaKeys, k)
			}
			media[k]++
			continue
		}
		listed++
		mark := ""
		if e.takeover {
			mark, falses = "FALSE", falses+1
		}
		fmt.Printf("    %s %s %-5s %s\n", rel(e.at), e.node, mark, e.what)
	}
	if listed == 0 {
		fmt.Printf("    none\n")
	}
	fmt.Printf("\n  media state changes (a medium goes warn after its warn time, down after dead without a frame)\n")
	slices.Sort(mediaKeys)
	for _, k := range mediaKeys {
		fmt.Printf("    %5d x %s\n", media[k], k)
	}

	// The logs: every fence and every WARN or ERROR, by message.
	fences := 0
	for _, id := range []string{"n1", "n2"} {
		lines, err := s.LogSince(id, start)
		if err != nil {
			fmt.Printf("\n  %s's log: %v\n", id, err)
			continue
		}
		counts := map[string]int{}
		first := map[string]string{}
		var order []string
		for _, l := range lines {
			if strings.Contains(l, "msg=fencing ") || strings.Contains(l, "FENCED") {
				fences++
			}
			if !strings.Contains(l, "level=WARN") && !strings.Contains(l, "level=ERROR") {
				continue
			}
			k := logMsg(l)
			if counts[k] == 0 {
				order = append(order, k)
				first[k] = l
			}
			counts[k]++
		}
		fmt.Printf("\n  %s's mirrord log since the start: %d lines, %d WARN/ERROR\n", id, len(lines), sumCounts(counts))
		for _, k := range order {
			fmt.Printf("    %4d x %s\n         first: %s\n", counts[k], k, clip(first[k], 300))
		}
	}

	gaps := clientGaps(as)
	var ok []time.Duration
	failed := 0
	for _, a := range as {
		if a.Err == nil {
			ok = append(ok, a.End.Sub(a.Start))
		} else {
			failed++
		}
	}
	st := halab.Summarise(ok)
	fmt.Printf("\n  client: %d attempts, %d committed, %d failed in %d outages; committed attempt p50 %v p99 %v max %v\n",
		len(as), len(ok), failed, len(gaps), st.P50.Round(time.Millisecond), st.P99.Round(time.Millisecond), st.Max.Round(time.Millisecond))
	slices.SortFunc(gaps, func(a, b clientGap) int { return int(b.length - a.length) })
	for i, g := range gaps {
		if i == 10 {
			fmt.Printf("    ... %d shorter ones\n", len(gaps)-10)
			break
		}
		fmt.Printf("    %s outage %6.2fs, %d failed attempts: %s\n", rel(g.from), g.length.Seconds(), g.attempts, clip(g.err, 160))
	}
	fmt.Printf("\n  false takeovers: %d status changes, %d fence lines in the logs\n", falses, fences)
	if falses > 0 || fences > 0 {
		return fmt.Errorf("soak: %d false-takeover changes and %d fences in %v under load", falses, fences, el.Round(time.Second))
	}
	return nil
}

// logMsg is a log line's msg (and err when there is one) with every
// number made N: what the soak groups WARN and ERROR lines by.
func logMsg(line string) string {
	msg := field(line, "msg")
	if e := field(line, "err"); e != "" {
		msg += " err=" + clip(e, 120)
	}
	var b strings.Builder
	for i, r := range msg {
		switch {
		case r < '0' || r > '9':
			b.WriteRune(r)
		case i == 0 || msg[i-1] < '0' || msg[i-1] > '9':
			b.WriteByte('N')
		}
	}
	return b.String()
}

// field returns key's value in a logfmt line ("" if absent).
func field(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if strings.HasPrefix(v, `"`) {
		for j := 1; j < len(v); j++ {
			if v[j] == '\\' {
				j++
				continue
			}
			if v[j] == '"' {
				return v[1:j]
			}
		}
		return v[1:]
	}
	v, _, _ = strings.Cut(v, " ")
	return v
}

func sumCounts(m map[string]int) int {
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
