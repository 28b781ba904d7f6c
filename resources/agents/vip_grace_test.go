package agents

import (
	"context"
	"testing"
	"time"
)

// A lost carrier's grace starts again with each Start: the node handed
// the group over (Stop) during one loss; when the group comes back and
// the cable drops again before the first monitor, that monitor must not
// count the time since the first loss (a review found it failed at once,
// and the fatal restart kept the node out until cleanup).
func TestVIPCarrierGraceStartsAgainAfterStopAndStart(t *testing.T) {
	s := newSegment(t, 1)
	n := s.nodes[0]
	b := newVIPAgent(t, map[string]any{"address": "10.222.0.100/24", "interface": "eth0"})
	b.carrierGrace = 2 * time.Second
	if err := in(t, n, b.Start); err != nil {
		t.Fatal(err)
	}
	sh(t, "ip", "-n", s.client, "link", "set", "p0", "down") // cable out
	if err := in(t, n, b.Monitor); err != nil {
		t.Fatalf("first sighting: %v", err)
	}
	// the ping hand-over stops the group here
	if err := in(t, n, b.Stop); err != nil {
		t.Fatal(err)
	}
	sh(t, "ip", "-n", s.client, "link", "set", "p0", "up") // cable back
	time.Sleep(2500 * time.Millisecond)                    // later: failback / peer died
	waitFor(t, 5*time.Second, "carrier", func() bool {
		return in(t, n, func(ctx context.Context) error {
			l, err := b.link()
			if err != nil {
				return err
			}
			return b.linkUp(l)
		}) == nil
	})
	if err := in(t, n, b.Start); err != nil {
		t.Fatal(err)
	}
	sh(t, "ip", "-n", s.client, "link", "set", "p0", "down") // flaps again before the first monitor
	if err := in(t, n, b.Monitor); err != nil {
		t.Errorf("first sighting of a new loss after Start: %v, want nil (grace)", err)
	}
}
