package heartbeat

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// memNet is an in-memory network for the runner: one memLink per node and
// medium, any of which can be cut. Inside a synctest bubble the runner's
// real tickers run on virtual time, so these tests take no real time.
type memNet struct {
	mu    sync.Mutex
	links map[string][]*memLink // medium -> attached links
	cut   map[string]bool       // "medium@node"
}

type memLink struct {
	net    *memNet
	node   string
	medium string
	in     chan []byte
	done   chan struct{}
	once   sync.Once
}

func newMemNet() *memNet { return &memNet{links: map[string][]*memLink{}, cut: map[string]bool{}} }

func (n *memNet) attach(node, medium string) *memLink {
	l := &memLink{net: n, node: node, medium: medium, in: make(chan []byte, 16), done: make(chan struct{})}
	n.mu.Lock()
	n.links[medium] = append(n.links[medium], l)
	n.mu.Unlock()
	return l
}

func (n *memNet) setCut(medium, node string, cut bool) {
	n.mu.Lock()
	n.cut[medium+"@"+node] = cut
	n.mu.Unlock()
}

func (l *memLink) Medium() string { return l.medium }
func (l *memLink) Send(p []byte) error {
	l.net.mu.Lock()
	defer l.net.mu.Unlock()
	if l.net.cut[l.medium+"@"+l.node] {
		return nil
	}
	for _, o := range l.net.links[l.medium] {
		if o == l || l.net.cut[o.medium+"@"+o.node] {
			continue
		}
		select {
		case <-o.done:
		case o.in <- append([]byte(nil), p...):
		default: // full: dropped like a datagram
		}
	}
	return nil
}
func (l *memLink) Receive() ([]byte, error) {
	select {
	case p := <-l.in:
		return p, nil
	case <-l.done:
		return nil, ErrClosed
	}
}
func (l *memLink) Close() error { l.once.Do(func() { close(l.done) }); return nil }

// memDisk is a SlotDevice in memory.
type memDisk struct {
	mu sync.Mutex
	b  []byte
}

func (d *memDisk) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return copy(p, d.b[off:]), nil
}
func (d *memDisk) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return copy(d.b[off:], p), nil
}

type runningMember struct {
	*Member
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	events []Event
	logs   []string
}

func (r *runningMember) stop() { r.cancel(); <-r.done }

func (r *runningMember) saw(kind EventKind, node, to string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.Kind == kind && string(e.Node) == node && e.To == to {
			return e.At, true
		}
	}
	return time.Time{}, false
}

func startMem(t *testing.T, c Config, net *memNet, disk *memDisk, id string) *runningMember {
	t.Helper()
	return startMemOn(t, c, net, disk, id, nil)
}

// startMemOn starts member id on nic1 and, with disk, the slots of
// "disk-a"; clock nil is the system clock (virtual in a synctest bubble).
func startMemOn(t *testing.T, c Config, net *memNet, disk *memDisk, id string, clock Clock) *runningMember {
	t.Helper()
	return startMemWith(t, c, net, disk, id, MemberOptions{Clock: clock})
}

// startMemWith is startMemOn with more options; the member's events and
// logs are recorded, and passed on to opt.OnEvent too.
func startMemWith(t *testing.T, c Config, net *memNet, disk *memDisk, id string, opt MemberOptions) *runningMember {
	t.Helper()
	c.Self = NodeID(id)
	links := []Link{net.attach(id, "nic1")}
	if disk != nil {
		dl, err := c.DiskLinkFor("disk-a", disk, 0, 1024, 4)
		if err != nil {
			t.Fatal(err)
		}
		links = append(links, dl)
	}
	r := &runningMember{done: make(chan struct{})}
	onEvent := opt.OnEvent
	opt.OnEvent = func(e Event) {
		r.mu.Lock()
		r.events = append(r.events, e)
		r.mu.Unlock()
		if onEvent != nil {
			onEvent(e)
		}
	}
	opt.Logf = func(f string, a ...any) {
		r.mu.Lock()
		r.logs = append(r.logs, strings.TrimSpace(sprintf(f, a...)))
		r.mu.Unlock()
	}
	m, err := NewMember(c, simKey, links, opt)
	if err != nil {
		t.Fatal(err)
	}
	r.Member = m
	var ctx context.Context
	ctx, r.cancel = context.WithCancel(context.Background())
	go func() { defer close(r.done); m.Run(ctx) }()
	return r
}

func memConfig() Config {
	c := DefaultConfig()
	c.Cluster, c.KeyFile, c.Preferred = "simcluster", "/k", "n1"
	for _, id := range []NodeID{"n1", "n2"} {
		c.Nodes = append(c.Nodes, Node{ID: id, Links: []NIC{{Medium: "nic1", Address: string(id)}}})
	}
	c.Disks = []Disk{{Name: "disk-a", SlotSize: 1024, Slots: 4}}
	return c
}

// TestMemberDetectsDeathOnVirtualTime runs two real runners (tickers,
// queues, codec, disk poller) on virtual time: the dead event comes within
// deadtime + one keepalive of the stop, and the survivor takes over.
func TestMemberDetectsDeathOnVirtualTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, disk := newMemNet(), &memDisk{b: make([]byte, 4*1024)}
		c := memConfig()
		n1 := startMem(t, c, net, disk, "n1")
		n2 := startMem(t, c, net, disk, "n2")
		defer n2.stop()
		time.Sleep(time.Second)
		synctest.Wait()
		if n1.Status().Role != "active" || n2.Status().Role != "standby" {
			t.Fatalf("roles n1 %s n2 %s", n1.Status().Role, n2.Status().Role)
		}
		stopped := time.Now()
		n1.stop()
		time.Sleep(c.Timing.Dead + c.Timing.Keepalive)
		synctest.Wait()
		at, ok := n2.saw(EventNode, "n1", "dead")
		if !ok {
			t.Fatalf("n1 not dead: %v", n2.events)
		}
		t.Logf("virtual detection time %v", at.Sub(stopped))
		if d := at.Sub(stopped); d > c.Timing.Dead+c.Timing.Keepalive || d < c.Timing.Dead-c.Timing.Keepalive {
			t.Errorf("detected after %v", d)
		}
		if n2.Status().Role != "active" {
			t.Errorf("n2 did not take over: %s", n2.Status().Role)
		}
	})
}

// TestMemberPartitionAndRefusedFrames: with the network cut the disk slot
// keeps the peer "partitioned" forever; frames that fail the codec are
// counted and logged once per interval, not per frame.
func TestMemberPartitionAndRefusedFrames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, disk := newMemNet(), &memDisk{b: make([]byte, 4*1024)}
		c := memConfig()
		n1 := startMem(t, c, net, disk, "n1")
		n2 := startMem(t, c, net, disk, "n2")
		defer n1.stop()
		defer n2.stop()
		time.Sleep(time.Second)
		attacker := net.attach("evil", "nic1")
		for range 50 {
			attacker.Send([]byte("HMHB not a frame at all, just noise on the wire....."))
			time.Sleep(10 * time.Millisecond)
		}
		net.setCut("nic1", "n1", true)
		time.Sleep(time.Minute)
		synctest.Wait()
		if _, ok := n2.saw(EventNode, "n1", "partitioned"); !ok {
			t.Errorf("no partition event: %v", n2.events)
		}
		if _, ok := n2.saw(EventNode, "n1", "dead"); ok || n2.Status().Role != "standby" {
			t.Errorf("partitioned peer taken for dead / taken over: role %s", n2.Status().Role)
		}
		st := n2.Status()
		if st.Rejected.Malformed != 50 {
			t.Errorf("malformed %d, want 50", st.Rejected.Malformed)
		}
		n2.mu.Lock()
		refusals := 0
		for _, l := range n2.logs {
			if strings.Contains(l, "refused a frame") {
				refusals++
			}
		}
		n2.mu.Unlock()
		if refusals != 1 {
			t.Errorf("%d log lines for 50 refused frames, want 1 (rate-limited)", refusals)
		}
	})
}

func sprintf(f string, a ...any) string { return fmt.Sprintf(f, a...) }
