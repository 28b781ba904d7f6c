package heartbeat

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// What the failover layer needs from a running member (docs/HA.md), on
// the real runner, codec and disk link, in virtual time.

// TestMemberAppStateAtOnceAndOverTheDiskAlone: a change of the app state
// reaches the peer at once (not at the next keepalive), a burst is
// bounded, and the largest state crosses a 1024-byte disk slot when the
// network is cut.
func TestMemberAppStateAtOnceAndOverTheDiskAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, disk := newMemNet(), &memDisk{b: make([]byte, 4*1024)}
		c := memConfig()
		n1 := startMem(t, c, net, disk, "n1")
		defer n1.stop()
		n2 := startMem(t, c, net, disk, "n2")
		defer n2.stop()
		time.Sleep(time.Second)
		synctest.Wait()

		// 60ms after a keepalive (the next is 140ms away), a change goes
		// out at once; a second change right after it waits for the first
		// tick keepalive/4 after that send (so a burst of changes costs at
		// most four sends per keepalive), and never for the keepalive.
		justHeard(t, n2.Member, "n1")
		time.Sleep(60 * time.Millisecond)
		set := time.Now()
		if err := n1.SetAppState([]byte("group=starting")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		b, at, ok := n2.PeerApp("n1")
		if !ok || string(b) != "group=starting" || !at.Equal(set) {
			t.Fatalf("n2 has n1's app state %q (%v) %v after the change, want it at once", b, ok, at.Sub(set))
		}
		if err := n1.SetAppState([]byte("group=running")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(c.Timing.Keepalive/4 - 2*time.Millisecond)
		synctest.Wait()
		if b, _, _ := n2.PeerApp("n1"); string(b) != "group=starting" {
			t.Errorf("a second change went out %v after the first", time.Since(set))
		}
		time.Sleep(c.Timing.Keepalive / 4)
		synctest.Wait()
		if b, at, _ := n2.PeerApp("n1"); string(b) != "group=running" || at.Sub(set) > c.Timing.Keepalive/2 {
			t.Fatalf("the second change: %q %v after the first, want it within keepalive/2", b, at.Sub(set))
		}
		if !sawApp(n2, "n1", []byte("group=starting")) || !sawApp(n2, "n1", []byte("group=running")) {
			t.Errorf("EventApps missing at n2: %v", n2.events)
		}

		net.setCut("nic1", "n1", true)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		largest := bytes.Repeat([]byte("A"), MaxAppState)
		if err := n1.SetAppState(largest); err != nil {
			t.Fatal(err)
		}
		if err := n1.SetAppState(make([]byte, MaxAppState+1)); err == nil {
			t.Error("an app state over the limit was accepted")
		}
		time.Sleep(c.Timing.Keepalive)
		synctest.Wait()
		v := n2.View()
		p, _ := v.Peer("n1")
		if p.State != NodePartitioned || !p.HasApp || !bytes.Equal(p.App, largest) || p.Age < 0 || p.Age > c.Timing.Keepalive {
			t.Errorf("n2's view of n1 over the disk alone: state %s, app %d bytes (known %v), age %v", p.State, len(p.App), p.HasApp, p.Age)
		}
		if !sawApp(n2, "n1", largest) {
			t.Error("no EventApp for the state that came over the disk")
		}
		js, _ := json.Marshal(n2.Status())
		if !strings.Contains(string(js), `"app":"QUFB`) {
			t.Errorf("status JSON lacks n1's app state: %s", js)
		}
		n1.mu.Lock()
		defer n1.mu.Unlock()
		for _, l := range n1.logs {
			if strings.Contains(l, "send") {
				t.Errorf("n1: %s", l)
			}
		}
	})
}

func sawApp(r *runningMember, node string, b []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.Kind == EventApp && string(e.Node) == node && bytes.Equal(e.App, b) {
			return true
		}
	}
	return false
}

// TestMemberSetEligibleMovesTheRole: the active node turns ineligible: its
// role is standby the moment the call returns, the event follows, the
// peer takes over; eligible again, it stays standby.
func TestMemberSetEligibleMovesTheRole(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, disk := newMemNet(), &memDisk{b: make([]byte, 4*1024)}
		c := memConfig()
		n1 := startMem(t, c, net, disk, "n1")
		defer n1.stop()
		n2 := startMem(t, c, net, disk, "n2")
		defer n2.stop()
		time.Sleep(time.Second)
		synctest.Wait()
		if v := n1.View(); v.Role != RoleActive || !v.Eligible {
			t.Fatalf("n1 %s eligible=%v", v.Role, v.Eligible)
		}
		n1.SetEligible(false)
		if v := n1.View(); v.Role != RoleStandby || v.Eligible {
			t.Errorf("right after SetEligible(false) n1 is %s eligible=%v, want standby", v.Role, v.Eligible)
		}
		time.Sleep(c.Timing.Keepalive)
		synctest.Wait()
		if _, ok := n1.saw(EventRole, "", "standby"); !ok {
			t.Errorf("no role event at n1: %v", n1.events)
		}
		v := n2.View()
		if p, _ := v.Peer("n1"); v.Role != RoleActive || p.Eligible || p.Role != RoleStandby {
			t.Errorf("n2 is %s and sees n1 %s eligible=%v", v.Role, p.Role, p.Eligible)
		}
		n1.SetEligible(true)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if p, _ := n2.View().Peer("n1"); n1.View().Role != RoleStandby || n2.View().Role != RoleActive || !p.Eligible {
			t.Errorf("after n1 turned eligible again: n1 %s, n2 %s, n1 eligible at n2 %v", n1.View().Role, n2.View().Role, p.Eligible)
		}
	})
}
