package agents

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
)

// capture counts the announcements of addr seen on the client's bridge.
type capture struct {
	mu   sync.Mutex
	macs []string // sender MAC of each announcement, in order
	stop func()
}

func (c *capture) seen() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.macs...)
}

func (c *capture) add(mac string) {
	c.mu.Lock()
	c.macs = append(c.macs, mac)
	c.mu.Unlock()
}

// captureAnnouncements listens on the client's br0 for gratuitous ARPs
// (IPv4) or unsolicited neighbour advertisements (IPv6) of addr.
func captureAnnouncements(t *testing.T, s *segment, addr netip.Addr) *capture {
	t.Helper()
	c := &capture{}
	var read func() error
	var closeFn func() error
	err := inNetns(t, s.client, func() error {
		ifi, err := net.InterfaceByName("br0")
		if err != nil {
			return err
		}
		if addr.Is4() {
			cl, err := arp.Dial(ifi)
			if err != nil {
				return err
			}
			closeFn = cl.Close
			read = func() error {
				p, _, err := cl.Read()
				if err != nil {
					return err
				}
				if p.Operation == arp.OperationRequest && p.SenderIP == addr && p.TargetIP == addr {
					c.add(p.SenderHardwareAddr.String())
				}
				return nil
			}
			return nil
		}
		conn, _, err := ndp.Listen(ifi, ndp.Unspecified)
		if err != nil {
			return err
		}
		closeFn = conn.Close
		read = func() error {
			m, _, _, err := conn.ReadFrom()
			if err != nil {
				return err
			}
			if na, ok := m.(*ndp.NeighborAdvertisement); ok && na.TargetAddress == addr && na.Override && !na.Solicited {
				for _, o := range na.Options {
					if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
						c.add(lla.Addr.String())
					}
				}
			}
			return nil
		}
		return nil
	})
	if err != nil {
		t.Fatalf("capturing in %s: %v", s.client, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for read() == nil {
		}
	}()
	c.stop = func() { closeFn(); <-done }
	t.Cleanup(c.stop)
	return c
}

func newVIPAgent(t *testing.T, params map[string]any) *vipAgent {
	t.Helper()
	a, _ := newAgent(t, "vip", params, nil)
	return a.(*vipAgent)
}

// in runs one agent call inside namespace ns.
func in(t *testing.T, ns string, call func(context.Context) error) error {
	t.Helper()
	ctx := ctxFor(t, 10*time.Second)
	return inNetns(t, ns, func() error { return call(ctx) })
}

// The takeover story: the address lived on another node, the client
// cached that node's MAC; Start on the new node moves it, and the
// client's neighbour entry follows from the announcements alone (the
// client sends nothing), exactly announce_count of them; then the
// client reaches the address; Stop removes it.
func TestVIPTakeover(t *testing.T) {
	for _, tc := range []struct{ name, vip, pingFlag, nodad string }{
		{"IPv4", "10.222.0.100/24", "-4", ""},
		{"IPv6", "fd00:222::100/64", "-6", "nodad"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSegment(t, 2)
			oldNode, newNode := s.nodes[0], s.nodes[1]
			vip := netip.MustParsePrefix(tc.vip)
			ip := vip.Addr().String()
			add := []string{"ip", "-n", oldNode, "addr", "add", tc.vip, "dev", "eth0"}
			if tc.nodad != "" {
				add = append(add, tc.nodad)
			}
			sh(t, add...)
			sh(t, "ip", "netns", "exec", s.client, "ping", tc.pingFlag, "-c1", "-W2", ip)
			oldMAC, newMAC := s.mac(t, oldNode), s.mac(t, newNode)
			if mac, _ := s.neigh(t, ip); mac != oldMAC {
				t.Fatalf("client's entry for %s is %q, want the old node's %s", ip, mac, oldMAC)
			}
			// The old node dies.
			sh(t, "ip", "-n", oldNode, "link", "set", "eth0", "down")

			capt := captureAnnouncements(t, s, vip.Addr())
			a := newVIPAgent(t, map[string]any{"address": tc.vip, "interface": "eth0",
				"announce_count": 3, "announce_interval": "100ms"})
			if err := in(t, newNode, a.Stop); err != nil {
				t.Fatalf("Stop before any Start: %v", err)
			}
			mustNotRunning(t, in(t, newNode, a.Monitor))
			if err := in(t, newNode, a.Start); err != nil {
				t.Fatalf("Start: %v", err)
			}
			waitFor(t, 3*time.Second, "the client's neighbour entry to follow the announcements", func() bool {
				mac, _ := s.neigh(t, ip)
				return mac == newMAC
			})
			waitFor(t, 3*time.Second, "three announcements", func() bool { return len(capt.seen()) >= 3 })
			time.Sleep(300 * time.Millisecond)
			if got := capt.seen(); len(got) != 3 || got[0] != newMAC || got[2] != newMAC {
				t.Errorf("announcements seen = %v, want 3 from %s", got, newMAC)
			}
			sh(t, "ip", "netns", "exec", s.client, "ping", tc.pingFlag, "-c1", "-W2", ip)

			if err := in(t, newNode, a.Monitor); err != nil {
				t.Fatalf("Monitor: %v", err)
			}
			if err := in(t, newNode, a.Start); err != nil {
				t.Fatalf("second Start: %v", err)
			}
			// The switch port (the bridge's end of the veth) goes down:
			// the NIC loses its carrier and keeps its addresses.
			sh(t, "ip", "-n", s.client, "link", "set", "p1", "down")
			mustFailed(t, in(t, newNode, a.Monitor), "no carrier")
			// With ping targets the node's ping rounds judge the lost
			// carrier first (Env.CarrierGrace): the monitor does not fail
			// within the grace, so no failure count outlives the cable;
			// past it, nobody took the group over and it fails. Start
			// still refuses.
			b := newVIPAgent(t, map[string]any{"address": tc.vip, "interface": "eth0"})
			b.carrierGrace = 300 * time.Millisecond
			for range 2 {
				if err := in(t, newNode, b.Monitor); err != nil {
					t.Errorf("Monitor within the carrier grace: %v, want nil", err)
				}
			}
			time.Sleep(400 * time.Millisecond)
			mustFailed(t, in(t, newNode, b.Monitor), "no peer reaching more ping targets")
			if err := in(t, newNode, b.Start); err == nil || !strings.Contains(err.Error(), "no carrier") {
				t.Errorf("Start with no carrier: %v, want a refusal", err)
			}
			sh(t, "ip", "-n", s.client, "link", "set", "p1", "up")
			if err := in(t, newNode, a.Monitor); err != nil {
				t.Fatalf("Monitor with the carrier back: %v", err)
			}
			if err := in(t, newNode, b.Monitor); err != nil {
				t.Fatalf("Monitor with the carrier back (grace): %v", err)
			}
			if vip.Addr().Is4() {
				// Administratively down (IPv6 addresses would be flushed:
				// then Monitor says not running).
				sh(t, "ip", "-n", newNode, "link", "set", "eth0", "down")
				mustFailed(t, in(t, newNode, a.Monitor), "administratively down")
				sh(t, "ip", "-n", newNode, "link", "set", "eth0", "up")
			}
			twice(t, "Stop", func() error { return in(t, newNode, a.Stop) })
			mustNotRunning(t, in(t, newNode, a.Monitor))
			if out := sh(t, "ip", "-n", newNode, "addr", "show", "dev", "eth0"); strings.Contains(out, ip+"/") {
				t.Fatalf("the address is still there after Stop:\n%s", out)
			}
		})
	}
}

func TestVIPRefusesAnAddressOnAnotherInterface(t *testing.T) {
	s := newSegment(t, 1)
	sh(t, "ip", "-n", s.nodes[0], "addr", "add", "10.222.0.100/32", "dev", "lo")
	a := newVIPAgent(t, map[string]any{"address": "10.222.0.100/24", "interface": "eth0"})
	mustFailed(t, in(t, s.nodes[0], a.Start), "already on lo")
	mustNotRunning(t, in(t, s.nodes[0], a.Monitor))
}

func TestVIPLabelAndMissingInterface(t *testing.T) {
	s := newSegment(t, 1)
	a := newVIPAgent(t, map[string]any{"address": "10.222.0.100/24", "interface": "eth0", "label": "eth0:svc"})
	if err := in(t, s.nodes[0], a.Start); err != nil {
		t.Fatal(err)
	}
	if out := sh(t, "ip", "-n", s.nodes[0], "-4", "addr", "show", "dev", "eth0"); !strings.Contains(out, "eth0:svc") {
		t.Errorf("no label eth0:svc on the address:\n%s", out)
	}
	if err := in(t, s.nodes[0], a.Stop); err != nil {
		t.Fatal(err)
	}
	b := newVIPAgent(t, map[string]any{"address": "10.222.0.100/24", "interface": "eth9"})
	mustFailed(t, in(t, s.nodes[0], b.Start), "eth9")
	mustFailed(t, in(t, s.nodes[0], b.Monitor), "eth9")
	if err := in(t, s.nodes[0], b.Stop); err != nil {
		t.Fatalf("Stop with no such interface: %v", err)
	}
}
