package heartbeat

import (
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// freezeClock is the system clock (virtual inside a synctest bubble),
// except that while it is frozen every Now blocks: the member's loop
// stops inside its next step, as a process stopped with SIGSTOP or a
// paused VM would, while its peers go on. Its link readers go on queueing
// the frames that arrive (a stopped process's socket buffers do the same).
type freezeClock struct {
	mu     sync.Mutex
	frozen chan struct{}
}

func (c *freezeClock) Now() time.Time {
	c.mu.Lock()
	ch := c.frozen
	c.mu.Unlock()
	if ch != nil {
		<-ch
	}
	return time.Now()
}

func (c *freezeClock) NewTicker(d time.Duration) (<-chan time.Time, func()) {
	return SystemClock{}.NewTicker(d)
}

func (c *freezeClock) freeze() { c.mu.Lock(); c.frozen = make(chan struct{}); c.mu.Unlock() }
func (c *freezeClock) thaw()   { c.mu.Lock(); close(c.frozen); c.frozen = nil; c.mu.Unlock() }

// lastHeard is how long ago m last heard peer on medium (-1: never).
func lastHeard(m *Member, peer NodeID, medium string) time.Duration {
	for _, n := range m.Status().Nodes {
		for _, md := range n.Media {
			if n.ID == peer && md.Name == medium {
				return md.LastHeard
			}
		}
	}
	return -1
}

// justHeard waits (in the bubble) until m has just taken a frame from
// peer on nic1: the next thing its loop does is a tick.
func justHeard(t *testing.T, m *Member, peer NodeID) {
	t.Helper()
	for i := 0; lastHeard(m, peer, "nic1") != 0; i++ {
		if i > 200 {
			t.Fatalf("%s never hears %s", m.cfg.Self, peer)
		}
		time.Sleep(5 * time.Millisecond)
		synctest.Wait()
	}
}

// TestMemberStallDoesNotJudgeBeforeListening: the standby's loop stops
// for 5s (dead is 2s) inside a tick step, right after it heard the active
// peer, which goes on sending. When it runs again its tick comes first,
// before the 25 frames that queued meanwhile: it must neither find the
// peer dead nor elect itself. (The peer rightly finds it dead.)
func TestMemberStallDoesNotJudgeBeforeListening(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newMemNet()
		c := memConfig()
		c.Disks = nil // nic1 only: the order of steps is exact
		n1 := startMemOn(t, c, net, nil, "n1", nil)
		defer n1.stop()
		time.Sleep(25 * time.Millisecond) // n2 ticks between n1's sends
		clk := &freezeClock{}
		n2 := startMemOn(t, c, net, nil, "n2", clk)
		defer n2.stop()
		time.Sleep(time.Second)
		synctest.Wait()
		if n1.Status().Role != "active" || n2.Status().Role != "standby" {
			t.Fatalf("roles n1 %s n2 %s", n1.Status().Role, n2.Status().Role)
		}
		for round := range 2 {
			justHeard(t, n2.Member, "n1")
			clk.freeze()
			time.Sleep(5 * time.Second)
			synctest.Wait()
			if _, ok := n1.saw(EventNode, "n2", "dead"); !ok {
				t.Errorf("round %d: n1 did not find the stopped n2 dead", round)
			}
			clk.thaw()
			time.Sleep(3 * time.Second)
			synctest.Wait()
			if at, ok := n2.saw(EventNode, "n1", "dead"); ok {
				t.Fatalf("round %d: n2 found the live n1 dead at %v, after its own stall", round, at)
			}
			if _, ok := n2.saw(EventRole, "", "active"); ok {
				t.Fatalf("round %d: n2 elected itself after its own stall", round)
			}
			st := n2.Status()
			if st.Role != "standby" || st.Nodes[0].State != NodeAlive || st.Stalls != uint64(round+1) || st.LongestStall < 5*time.Second {
				t.Errorf("round %d: n2 after the stall: role %s, n1 %s, stalls %d (longest %v)", round, st.Role, st.Nodes[0].State, st.Stalls, st.LongestStall)
			}
			if n1.Status().Nodes[1].State != NodeAlive || n1.Status().Role != "active" {
				t.Errorf("round %d: n1 sees n2 %s, role %s", round, n1.Status().Nodes[1].State, n1.Status().Role)
			}
		}
	})
}

// roleChanges lists m's role events as "from->to".
func (r *runningMember) roleChanges() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		if e.Kind == EventRole {
			out = append(out, e.From+"->"+e.To)
		}
	}
	return out
}

// TestMemberStallOfTheActiveNode (issue 11, proof case 2): the active
// n1's loop stops for 4s (dead is 2s), with disk slots and network. n2
// finds it dead and takes over (its resources layer fences n1). When n1
// runs again it still claims the active role from before its stall; it
// must yield to n2, and n2 must keep the role, never handing the service
// back to the node it fenced.
func TestMemberStallOfTheActiveNode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, disk := newMemNet(), &memDisk{b: make([]byte, 4*1024)}
		c := memConfig()
		clk := &freezeClock{}
		n1 := startMemOn(t, c, net, disk, "n1", clk)
		defer n1.stop()
		n2 := startMem(t, c, net, disk, "n2")
		defer n2.stop()
		time.Sleep(time.Second)
		synctest.Wait()
		if n1.Status().Role != "active" || n2.Status().Role != "standby" {
			t.Fatalf("roles n1 %s n2 %s", n1.Status().Role, n2.Status().Role)
		}
		clk.freeze()
		time.Sleep(4 * time.Second)
		synctest.Wait()
		if n2.Status().Role != "active" {
			t.Fatalf("n2 did not take over from the stopped n1: %s", n2.Status().Role)
		}
		clk.thaw()
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if got := n2.roleChanges(); !slices.Equal(got, []string{"none->standby", "standby->active"}) {
			t.Errorf("n2's roles %v: it handed the role back to the node it fenced", got)
		}
		if got := n1.roleChanges(); !slices.Equal(got, []string{"none->active", "active->standby"}) {
			t.Errorf("n1's roles %v: it kept its stale claim", got)
		}
		if n1.Status().Role != "standby" || n2.Status().Role != "active" {
			t.Errorf("after the stall: n1 %s, n2 %s", n1.Status().Role, n2.Status().Role)
		}
	})
}
