package heartbeat

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// Unit tests of the run-nonce freshness check (Machine.Receive): a frame
// is a beat only if it echoes this node's current run nonce.

const (
	ourNonce  = 0xa11ce
	peerNonce = 0xb0b
)

var t0 = time.Unix(1_700_000_000, 0)

// freshMachine is n2 of a pair with one NIC and one disk slot, started and
// ticked once at t0.
func freshMachine(t *testing.T) *Machine {
	t.Helper()
	m, err := NewMachine(MachineConfig{Self: "n2", Nodes: []NodeID{"n1", "n2"}, Preferred: "n1",
		Timing: DefaultConfig().Timing, Media: []Medium{{Name: "nic1"}, {Name: "disk-a", Disk: true}},
		Boot: 100, Nonce: ourNonce}, t0)
	if err != nil {
		t.Fatal(err)
	}
	m.Tick(t0)
	m.Ready()
	return m
}

// fromN1 is a frame of n1's run (boot 5, peerNonce) on nic1.
func fromN1(seq uint64, role Role, echo ...uint64) Frame {
	return Frame{Type: MsgHeartbeat, Boot: 5, Seq: seq, Nonce: peerNonce, From: "n1", Medium: "nic1", Echo: echo,
		Payload: Heartbeat{Role: role}.MarshalBinary()}
}

// sentEchoes returns the echoes of the frames m sends at now (nil: none sent).
func sentEchoes(t *testing.T, m *Machine, now time.Time) [][]uint64 {
	t.Helper()
	m.Tick(now)
	var out [][]uint64
	for _, o := range m.Ready().Send {
		if o.Frame.Nonce != ourNonce {
			t.Errorf("sent run nonce %#x, want %#x", o.Frame.Nonce, uint64(ourNonce))
		}
		out = append(out, o.Frame.Echo)
	}
	return out
}

func TestFrameWithoutOurNonceIsNoBeat(t *testing.T) {
	m := freshMachine(t)
	now := t0.Add(10 * time.Millisecond)
	if err := m.Receive(now, "nic1", fromN1(1, RoleActive)); err != nil {
		t.Fatalf("an authentic unconfirmed frame is no error: %v", err)
	}
	if err := m.Receive(now, "nic1", fromN1(2, RoleActive, 0x1234)); err != nil {
		t.Fatal(err)
	}
	c := m.Counters()
	if c.Unconfirmed != 2 || c.Accepted != 0 {
		t.Errorf("counters %+v, want 2 unconfirmed, 0 accepted", c)
	}
	// It answers at once (not at the next keepalive), echoing n1's nonce.
	echoes := sentEchoes(t, m, now)
	if len(echoes) != 2 {
		t.Fatalf("sent %d frames right after learning n1's nonce, want one per medium", len(echoes))
	}
	for _, e := range echoes {
		if !slices.Equal(e, []uint64{peerNonce}) {
			t.Errorf("echo %v, want [%#x]", e, peerNonce)
		}
	}
	st := m.Status(now)
	if s := m.NodeState("n1"); s != NodeUnknown {
		t.Errorf("n1 %s after unconfirmed frames only, want unknown", s)
	}
	if st.Nodes[0].Role != "none" || st.Nodes[0].Media[0].LastHeard != -1 {
		t.Errorf("an unconfirmed frame changed n1's view: %+v", st.Nodes[0])
	}
	// Once n1 echoes our nonce, its frames are beats.
	now = now.Add(10 * time.Millisecond)
	if err := m.Receive(now, "nic1", fromN1(3, RoleActive, 0x1234, ourNonce)); err != nil {
		t.Fatal(err)
	}
	m.Tick(now)
	if s := m.NodeState("n1"); s != NodeAlive {
		t.Errorf("n1 %s after a frame echoing our nonce, want alive", s)
	}
	if m.Role() != RoleStandby || m.Counters().Accepted != 1 {
		t.Errorf("role %s accepted %d, want standby to the active n1 and 1", m.Role(), m.Counters().Accepted)
	}
}

// TestUnconfirmedFrameCarriesNothing: neither a role, a ping score nor a
// table is taken from a frame that does not echo our nonce: it may be a
// capture of a state long gone.
func TestUnconfirmedFrameCarriesNothing(t *testing.T) {
	m := freshMachine(t)
	tb := BuildTable([]NodeID{"n1", "n2"}, nil, "n1", 7)
	f := Frame{Type: MsgTable, Boot: 5, Seq: 1, Nonce: peerNonce, From: "n1", Medium: "nic1", Payload: tb.MarshalBinary()}
	now := t0.Add(time.Millisecond)
	m.Receive(now, "nic1", f)
	hb := fromN1(2, RoleActive)
	hb.Payload = Heartbeat{Round: 9, Role: RoleActive, HasPing: true, PingScore: 3, App: []byte("running")}.MarshalBinary()
	m.Receive(now, "nic1", hb)
	if v := m.Table().Version; v != 0 {
		t.Errorf("table version %d taken from an unconfirmed frame", v)
	}
	if p := m.peers["n1"]; !reflect.DeepEqual(p.hb, Heartbeat{}) {
		t.Errorf("heartbeat %+v taken from an unconfirmed frame", p.hb)
	}
	if b, _, ok := m.PeerApp("n1"); ok || b != nil {
		t.Errorf("app state %q taken from an unconfirmed frame", b)
	}
	if evs := m.Ready().Events; len(evs) != 0 {
		t.Errorf("events from unconfirmed frames: %v", evs)
	}
	// Confirmed, the same table is taken from n1 (once alive, it is the
	// coordinator).
	m.Receive(now, "nic1", fromN1(3, RoleActive, ourNonce))
	m.Tick(now)
	f.Seq, f.Echo = 4, []uint64{ourNonce}
	m.Receive(now, "nic1", f)
	if v := m.Table().Version; v != 7 {
		t.Errorf("table version %d from a confirmed frame, want 7", v)
	}
}

func TestPeerRestartMovesTheEcho(t *testing.T) {
	m := freshMachine(t)
	now := t0.Add(time.Millisecond)
	m.Receive(now, "nic1", fromN1(9, RoleStandby, ourNonce))
	m.Tick(now)
	m.Ready()
	// n1 restarts: boot 6, a new nonce, sequences from 1 again.
	now = now.Add(time.Second)
	f := fromN1(1, RoleStandby)
	f.Boot, f.Nonce = 6, 0xc0ffee
	if err := m.Receive(now, "nic1", f); err != nil {
		t.Fatalf("first frame of n1's new boot: %v", err)
	}
	for _, e := range sentEchoes(t, m, now) {
		if !slices.Equal(e, []uint64{0xc0ffee}) {
			t.Errorf("echo %v after n1's restart, want only its new nonce", e)
		}
	}
	// The old run's frames are refused (older boot) even with our nonce.
	if err := m.Receive(now, "nic1", fromN1(10, RoleActive, ourNonce)); err == nil || m.Counters().Replayed != 1 {
		t.Errorf("a frame of n1's previous boot: %v, replayed %d", err, m.Counters().Replayed)
	}
}

// TestSameBootOtherNonceRefused: two runs that share a boot ID cannot be
// ordered; the one heard first keeps the peer slot, the other is refused.
func TestSameBootOtherNonceRefused(t *testing.T) {
	m := freshMachine(t)
	m.Receive(t0, "nic1", fromN1(1, RoleStandby, ourNonce))
	f := fromN1(2, RoleActive, ourNonce)
	f.Nonce = 0xbad
	err := m.Receive(t0, "nic1", f)
	if err == nil || !strings.Contains(err.Error(), "another run nonce") || m.Counters().Replayed != 1 {
		t.Errorf("same boot, other nonce: %v (replayed %d)", err, m.Counters().Replayed)
	}
}

// TestDiskSlotNeedsTheEchoToo: a disk slot proves liveness only with a
// frame that echoes our nonce, so a slot left or rewritten from an
// earlier run cannot make a dead peer "partitioned".
func TestDiskSlotNeedsTheEchoToo(t *testing.T) {
	m := freshMachine(t)
	for i := range 240 { // 12s: past initdead, a tick every keepalive/4
		now := t0.Add(time.Duration(i) * 50 * time.Millisecond)
		if i%5 == 0 {
			f := fromN1(uint64(i+1), RoleActive)
			f.Medium = "disk-a"
			m.Receive(now, "disk-a", f)
		}
		m.Tick(now)
	}
	if s := m.NodeState("n1"); s != NodeDead {
		t.Errorf("n1 %s with only unconfirmed slot frames for 12s, want dead", s)
	}
	var alarm bool
	for _, e := range m.Ready().Events {
		alarm = alarm || e.Kind == EventAlarm && strings.Contains(e.Msg, "do not echo this node's run")
	}
	if !alarm {
		t.Error("no alarm about a dead peer whose unconfirmed frames keep coming")
	}
}

func TestNewMachineRefusesZeroNonce(t *testing.T) {
	_, err := NewMachine(MachineConfig{Self: "n1", Nodes: []NodeID{"n1", "n2"}, Media: []Medium{{Name: "nic1"}}, Boot: 1}, t0)
	if err == nil {
		t.Error("a machine without a run nonce started")
	}
}

func TestRunNonceIsNewEachRun(t *testing.T) {
	seen := map[uint64]bool{}
	for range 100 {
		n, err := runNonce()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 || seen[n] {
			t.Fatalf("run nonce %#x zero or repeated", n)
		}
		seen[n] = true
	}
	if !errors.Is(checkNonces(0, nil), ErrMalformed) {
		t.Error("zero nonce passes checkNonces")
	}
}

// TestHandshakeCostsLessThanAKeepaliveOnVirtualTime runs two real runners
// on virtual time: with the nonce handshake, nodes started together and a
// node restarted next to a running one are heard within one keepalive
// (before it, the first frame was a beat: the check may cost at most one
// beat interval at start).
func TestHandshakeCostsLessThanAKeepaliveOnVirtualTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, disk := newMemNet(), &memDisk{b: make([]byte, 4*1024)}
		c := memConfig()
		k := c.Timing.Keepalive
		began := time.Now()
		n1 := startMem(t, c, net, disk, "n1")
		n2 := startMem(t, c, net, disk, "n2")
		defer n1.stop()
		time.Sleep(2 * k)
		synctest.Wait()
		for _, w := range []struct {
			r    *runningMember
			peer string
		}{{n1, "n2"}, {n2, "n1"}} {
			at, ok := w.r.saw(EventNode, w.peer, "alive")
			if !ok || at.Sub(began) > k {
				t.Errorf("started together, %s alive after %v (seen %v), want within %v", w.peer, at.Sub(began), ok, k)
			}
		}
		n2.stop()
		time.Sleep(c.Timing.Dead + k)
		synctest.Wait()
		if _, ok := n1.saw(EventNode, "n2", "dead"); !ok {
			t.Fatal("n2 not dead after its stop")
		}
		time.Sleep(k / 3) // restart at some phase of n1's ticks
		restarted := time.Now()
		n2 = startMem(t, c, net, disk, "n2")
		defer n2.stop()
		time.Sleep(2 * k)
		synctest.Wait()
		var back time.Time
		n1.mu.Lock()
		for _, e := range n1.events {
			if e.Kind == EventNode && e.Node == "n2" && e.To == "alive" && !e.At.Before(restarted) {
				back = e.At
				break
			}
		}
		n1.mu.Unlock()
		if back.IsZero() || back.Sub(restarted) > k {
			t.Errorf("restarted n2 alive at n1 after %v, want within %v", back.Sub(restarted), k)
		}
		if at, ok := n2.saw(EventNode, "n1", "alive"); !ok || at.Sub(restarted) > k {
			t.Errorf("restarted n2 heard n1 after %v, want within %v", at.Sub(restarted), k)
		}
		t.Logf("restart: n1 heard n2 after %v", back.Sub(restarted))
	})
}
