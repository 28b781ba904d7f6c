package node

import (
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/hamirror/hamirror/resources"
)

// startRecorder keeps what the metrics show of the group's starts here
// (takeovers and clean starts, their durations and phases) and the
// outcome of every agent operation. The loop feeds it the group's status
// after each step (observe); the operations' goroutines feed it each
// result (opDone) before they post it to the loop. Scrapes read a copy
// (snapshot). Nothing here is on the volume's I/O path.
//
// A group start begins at the first step that shows the group starting
// with no resource running (a restart of some resources above running
// ones is not a group start) and ends when the group runs: its phases are
// the fence and start operations meanwhile, each with the time the agent
// took. It is a takeover when a fence of a peer succeeded in it; else a
// clean start (a hand-over, a start next to a clean peer). A start that
// ends any other way (a failed start, the role lost) is abandoned.
type startRecorder struct {
	mu      sync.Mutex
	run     *startRun // the group start under way (nil: none)
	pending []startPhase
	stats   startStats
}

type startRun struct {
	began time.Time
}

// startPhase is one fence or start operation of a group start.
type startPhase struct {
	Phase    string // phaseFence or phaseStart
	Resource string // the resource started (phaseStart)
	Began    time.Time
	Duration time.Duration
	Fenced   bool // a successful fence of a peer
}

// Start kinds (the kind label) and phases (the phase label).
const (
	startTakeover = "takeover"
	startClean    = "clean"
	phaseFence    = "fence_peers"
	phaseStart    = "start"
)

// startStats is the recorder's copy for one scrape.
type startStats struct {
	Starts    map[string]uint64 // kind -> completed group starts
	Abandoned map[string]uint64 // kind -> abandoned group starts
	// Last is the last completed start of each kind.
	Last  map[string]lastStart
	Fence map[string]uint64 // result -> fence operations (of peers)
	Ops   map[opKey]uint64  // agent operations by resource, op and result
}

type lastStart struct {
	At       time.Time // when the group ran
	Duration time.Duration
	Phases   []startPhase
}

type opKey struct{ Resource, Op, Result string }

func newStartRecorder() *startRecorder {
	return &startRecorder{stats: startStats{Starts: map[string]uint64{}, Abandoned: map[string]uint64{},
		Last: map[string]lastStart{}, Fence: map[string]uint64{}, Ops: map[opKey]uint64{}}}
}

// opDone records the outcome of operation e, which began at began and
// took d.
func (r *startRecorder) opDone(e resources.Effect, began time.Time, d time.Duration, err error) {
	result := strings.ReplaceAll(resources.ResultOf(e.Op, err).Outcome.String(), " ", "_")
	r.mu.Lock()
	defer r.mu.Unlock()
	switch e.Kind {
	case resources.EffectFence:
		r.stats.Fence[result]++
		r.pending = append(r.pending, startPhase{Phase: phaseFence, Began: began, Duration: d, Fenced: err == nil})
	case resources.EffectStart:
		r.stats.Ops[opKey{e.Resource, "start", result}]++
		r.pending = append(r.pending, startPhase{Phase: phaseStart, Resource: e.Resource, Began: began, Duration: d})
	case resources.EffectStop:
		r.stats.Ops[opKey{e.Resource, "stop", result}]++
	case resources.EffectMonitor:
		r.stats.Ops[opKey{e.Resource, "monitor", result}]++
	}
}

// observe takes the group's status after a loop step at now.
func (r *startRecorder) observe(now time.Time, st resources.Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.run == nil {
		if st.State == resources.GroupStarting && !anyRunning(st) {
			r.run = &startRun{began: now}
			return // keep the phases that finished before this step
		}
		r.pending = r.pending[:0]
		return
	}
	switch st.State {
	case resources.GroupStarting:
		return
	case resources.GroupRunning:
		kind, began := startClean, r.run.began
		for _, p := range r.pending {
			if p.Fenced {
				kind = startTakeover
			}
			if p.Began.Before(began) {
				began = p.Began
			}
		}
		r.stats.Starts[kind]++
		r.stats.Last[kind] = lastStart{At: now, Duration: now.Sub(began), Phases: append([]startPhase(nil), r.pending...)}
	default:
		kind := startClean
		for _, p := range r.pending {
			if p.Fenced {
				kind = startTakeover
			}
		}
		r.stats.Abandoned[kind]++
	}
	r.run = nil
	r.pending = r.pending[:0]
}

func anyRunning(st resources.Status) bool {
	for _, rs := range st.Resources {
		if rs.State == resources.ResRunning {
			return true
		}
	}
	return false
}

// snapshot copies the figures for a scrape.
func (r *startRecorder) snapshot() startStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	// A stored lastStart's Phases is never written again: sharing it is safe.
	return startStats{Starts: maps.Clone(r.stats.Starts), Abandoned: maps.Clone(r.stats.Abandoned),
		Last: maps.Clone(r.stats.Last), Fence: maps.Clone(r.stats.Fence), Ops: maps.Clone(r.stats.Ops)}
}
