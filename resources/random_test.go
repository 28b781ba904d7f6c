package resources

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/hamirror/hamirror/heartbeat"
)

// TestRandomHistories drives the two-node sim with random histories
// (Jepsen-like: crashes, freezes, partitions, operator commands, failing
// and hanging agents) and checks after every step that the service never
// runs on two nodes with registered keys. With HAMIRROR_RANDOM_LIVENESS=1
// it then heals everything, cleans up, and checks that exactly one node
// runs the group. The script of a failing history is printed;
// HAMIRROR_RANDOM_RUNS sets the count.
func TestRandomHistories(t *testing.T) {
	runs := 200
	if v, err := strconv.Atoi(os.Getenv("HAMIRROR_RANDOM_RUNS")); err == nil {
		runs = v
	}
	liveness := os.Getenv("HAMIRROR_RANDOM_LIVENESS") != ""
	for seed := range runs {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			script := randomHistory(uint64(seed), liveness)
			defer func() {
				if t.Failed() {
					t.Logf("script (seed %d):\n%s", seed, strings.Join(script, "\n"))
				}
			}()
			s := newSim(t)
			for i, line := range script {
				s.where = fmt.Sprintf("seed %d line %d (%s)", seed, i+1, line)
				s.runRandom(strings.Fields(line))
				if t.Failed() {
					return
				}
			}
		})
	}
}

var randomResources = []string{"fence", "volume", "fs", "vip", "db"}

func randomHistory(seed uint64, liveness bool) []string {
	r := rand.New(rand.NewPCG(seed, 7))
	nodes := []string{"n1", "n2"}
	pick := func(a []string) string { return a[r.IntN(len(a))] }
	out := []string{"cluster n1 n2", "start n1 n2", "tick 2s"}
	for range 40 {
		n := pick(nodes)
		var l string
		switch k := r.IntN(100); {
		case k < 35:
			l = fmt.Sprintf("tick %dms", 100*(1+r.IntN(60)))
		case k < 40:
			l = "kill " + n
		case k < 44:
			l = "crash " + n
		case k < 52:
			l = "start " + n
		case k < 56:
			l = "freeze " + n
		case k < 60:
			l = "thaw " + n
		case k < 64:
			l = pick([]string{"cut", "heal"}) + " " + pick([]string{"network", "disks"})
		case k < 80:
			l = "try " + n + " " + pick([]string{"move", "standby", "unstandby", "maintenance on", "maintenance off", "cleanup", "restart " + pick(randomResources), "cleanup " + pick(randomResources), "shutdown"})
		case k < 85:
			l = fmt.Sprintf("fail %s %s %s %d", n, pick([]string{"start", "stop"}), pick(randomResources), 1+r.IntN(3))
		case k < 88:
			l = "break " + n + " " + pick(randomResources[2:])
		case k < 93:
			l = pick([]string{"hang", "unhang"}) + " " + n + " " + pick([]string{"start", "stop", "monitor"}) + " " + pick(randomResources)
		case k < 96:
			l = "fail " + n + " fence"
		default:
			l = "exit " + n
		}
		out = append(out, l)
	}
	if !liveness {
		return out
	}
	// heal everything; the operator cleans up; the group must run once
	out = append(out, "heal network", "heal disks", "thaw n1", "thaw n2", "unfail n1 fence", "unfail n2 fence", "unhang-all", "start n1", "start n2", "tick 5s")
	for range 3 {
		out = append(out, "exit-shut", "try n1 maintenance off", "try n2 maintenance off", "try n1 unstandby", "try n2 unstandby", "unfail-all", "try n1 cleanup", "try n2 cleanup", "tick 2m")
	}
	return append(out, "one-runs")
}

// runRandom runs one line of a random history: the sim's commands, made
// forgiving where a random history cannot know the state (start of a
// running node, exit of a busy one, a refused command).
func (s *sim) runRandom(a []string) {
	switch a[0] {
	case "start":
		for _, id := range a[1:] {
			if n := s.node(id); !n.up {
				s.start(heartbeat.NodeID(id))
			}
		}
	case "kill", "crash":
		if s.node(a[1]).up {
			s.run(a)
		}
	case "exit":
		if n := s.node(a[1]); n.up && n.g.Idle() {
			s.run(a)
		}
	case "thaw", "freeze":
		if s.node(a[1]).up {
			s.run(a)
		}
	case "try":
		n := s.node(a[1])
		if n.up && !n.frozen {
			if a[2] == "shutdown" {
				s.shut = setShut(s.shut, n.id)
			}
			_ = s.command(n, a[2:])
			s.drain(n)
		}
	case "unhang-all":
		for _, n := range s.nodes {
			n.hang = nil
			if n.up && !n.frozen {
				for _, e := range n.pending { // held operations: answer them now
					n.g.Done(s.now, s.answer(n, e, OK))
				}
			}
			n.pending, n.hold = nil, nil
		}
	case "exit-shut": // nodes asked to shut down exit once idle; started again
		for _, id := range s.order {
			if n := s.nodes[id]; s.shut[id] && n.up && n.g.Idle() {
				s.run([]string{"exit", string(id)})
				s.start(id)
				delete(s.shut, id)
			}
		}
	case "unfail-all":
		for _, n := range s.nodes {
			for _, r := range n.res {
				r.failStart, r.failStop = 0, 0
			}
		}
	case "one-runs":
		var run []string
		for _, id := range s.order {
			n := s.nodes[id]
			st := n.g.Status()
			if st.State == GroupRunning {
				run = append(run, string(id))
			} else if st.State != GroupStopped && st.State != GroupFailed {
				// failed: a start hung before the healing, and the watchdog
				// timed it out after the last cleanup (a fatal start failure)
				s.errorf("%s's group is %s (reason %q, waiting %q), want running, stopped or failed", id, st.State, st.Reason, st.Waiting)
			}
		}
		if len(run) != 1 {
			s.errorf("the group runs on %v after healing and cleanup, want exactly one node", run)
		}
	default:
		s.run(a)
	}
	s.checkServices()
}

func setShut(m map[heartbeat.NodeID]bool, id heartbeat.NodeID) map[heartbeat.NodeID]bool {
	if m == nil {
		m = map[heartbeat.NodeID]bool{}
	}
	m[id] = true
	return m
}

// checkServices: no two up, unfrozen nodes with registered keys run the
// same service (address, database, file system) that their group machine
// started (leftovers of a crashed run, being stopped, are not counted).
func (s *sim) checkServices() {
	for _, typ := range []string{TypeVIP, TypePostgreSQL, TypeFilesystem, TypeVolume} {
		var v []string
		for _, id := range s.order {
			n := s.nodes[id]
			r := n.fake(typ)
			if !n.up || n.frozen || r == nil || !r.running || !s.reg[id] {
				continue
			}
			for _, rs := range n.g.Status().Resources {
				if rs.Type == typ && rs.State == ResRunning {
					v = append(v, string(id))
				}
			}
		}
		if len(v) > 1 {
			s.errorf("two nodes run %s: %v", typ, v)
		}
	}
}
