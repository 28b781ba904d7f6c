package heartbeat

import (
	"strings"
	"testing"
)

// A node whose recorded term is at the limit (only a corrupt or forged
// term gets there) must not claim the next one: its peers would refuse
// every beat of it as malformed, count it dead, take over too, and
// LoadTerm would refuse both state files at the next start. It stays out
// of the active role and says how to reset the terms; its beats stay
// well-formed, and never are two nodes active.
func TestNoClaimBeyondTheTermLimit(t *testing.T) {
	s := newSim(t)
	for _, l := range []string{"cluster n1 n2", "preferred n1"} {
		s.run(strings.Fields(l))
	}
	s.terms["n1"] = maxTerm
	s.run([]string{"start", "n1", "n2"})
	s.run([]string{"tick", "10s"})
	n1, n2 := s.node("n1"), s.node("n2")
	for _, n := range []*simNode{n1, n2} {
		if _, err := UnmarshalHeartbeat(Heartbeat{Term: n.m.Term()}.MarshalBinary()); err != nil {
			t.Errorf("%s's own beats are refused by its peers: %v", n.id, err)
		}
		if n.m.Counters().Malformed != 0 {
			t.Errorf("%s refused %d beats as malformed", n.id, n.m.Counters().Malformed)
		}
	}
	if n1.m.Role() == RoleActive && n2.m.Role() == RoleActive {
		t.Errorf("both active")
	}
	alarm := false
	for _, e := range n1.events {
		alarm = alarm || (e.Kind == EventAlarm && strings.Contains(e.Msg, "takeover term is at its limit"))
	}
	if !alarm {
		t.Errorf("n1 raised no alarm saying its term is at the limit")
	}
}
