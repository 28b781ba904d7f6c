package heartbeat_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// recorder is a Link that keeps a copy of every frame it sends in a
// capture shared by all a node's links: the attacker's recording.
type recorder struct {
	heartbeat.Link
	c *capture
}

// capture is every frame a node sent, with the time since it began.
type capture struct {
	mu     sync.Mutex
	start  time.Time
	frames []sent
}

type sent struct {
	at     time.Duration
	medium string
	b      []byte
}

func (r *recorder) Send(b []byte) error {
	r.c.mu.Lock()
	r.c.frames = append(r.c.frames, sent{time.Since(r.c.start), r.Medium(), append([]byte(nil), b...)})
	r.c.mu.Unlock()
	return r.Link.Send(b)
}

// replayPair is two members on real media: UDP over loopback (n1 on
// 127.0.0.1, n2 on 127.0.0.2, one port) and a disk slot area in a file.
type replayPair struct {
	t   *testing.T
	cfg heartbeat.Config
	key []byte
}

func newReplayPair(t *testing.T) *replayPair {
	pc, err := net.ListenPacket("udp4", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no loopback UDP on 127.0.0.2: %v", err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	slots := filepath.Join(t.TempDir(), "slots")
	if err := os.WriteFile(slots, make([]byte, 2*1024), 0o600); err != nil {
		t.Fatal(err)
	}
	c := heartbeat.DefaultConfig()
	c.Cluster, c.KeyFile, c.Preferred, c.Port = "replay", "/k", "n1", port
	c.Timing = heartbeat.Timing{Keepalive: 50 * time.Millisecond, Warn: 150 * time.Millisecond,
		Dead: 300 * time.Millisecond, InitDead: time.Second}
	for i, id := range []heartbeat.NodeID{"n1", "n2"} {
		c.Nodes = append(c.Nodes, heartbeat.Node{ID: id,
			Links: []heartbeat.NIC{{Medium: "nic1", Address: net.IPv4(127, 0, 0, byte(i+1)).String()}}})
	}
	c.Disks = []heartbeat.Disk{{Name: "disk-a", Path: slots, SlotSize: 1024, Slots: 2}}
	c.Self = "n1"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return &replayPair{t: t, cfg: c, key: []byte("replay test cluster key, 32 byte")}
}

func (p *replayPair) self(id heartbeat.NodeID) heartbeat.Config {
	c := p.cfg
	c.Self = id
	return c
}

// start runs member id on freshly opened links; wrap may replace them.
func (p *replayPair) start(id heartbeat.NodeID, wrap func(heartbeat.Link) heartbeat.Link) (*heartbeat.Member, func()) {
	p.t.Helper()
	c := p.self(id)
	links, err := heartbeat.OpenLinks(c)
	if err != nil {
		p.t.Fatal(err)
	}
	for i := range links {
		if wrap != nil {
			links[i] = wrap(links[i])
		}
	}
	m, err := heartbeat.NewMember(c, p.key, links, heartbeat.MemberOptions{Logf: p.t.Logf})
	if err != nil {
		p.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	return m, func() { cancel(); <-done }
}

func peerState(m *heartbeat.Member, id heartbeat.NodeID) heartbeat.NodeState {
	for _, n := range m.Status().Nodes {
		if n.ID == id {
			return n.State
		}
	}
	return heartbeat.NodeUnknown
}

func waitState(t *testing.T, m *heartbeat.Member, id heartbeat.NodeID, want heartbeat.NodeState, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for peerState(m, id) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s still %s after %v, want %s (status %+v)", id, peerState(m, id), within, want, m.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReplayAfterRestartOverRealMedia is the issue 6 follow-up on real
// media: n1 and n2 run while an attacker records all n1 sends (UDP
// datagrams and disk slot writes). Then n1 dies and n2 restarts, and the
// attacker plays n1's recording back to n2 at its original pace: as
// datagrams from n1's address to n2's socket, and written into n1's disk
// slot. The restarted n2 must not take them for beats: n1 stays unknown,
// is declared dead after initdead, and n2 takes the active role.
func TestReplayAfterRestartOverRealMedia(t *testing.T) {
	t.Parallel()
	p := newReplayPair(t)
	rec := &capture{start: time.Now()}
	n1, stop1 := p.start("n1", func(l heartbeat.Link) heartbeat.Link { return &recorder{Link: l, c: rec} })
	n2, stop2 := p.start("n2", nil)
	waitState(t, n2, "n1", heartbeat.NodeAlive, 2*time.Second)
	waitState(t, n1, "n2", heartbeat.NodeAlive, 2*time.Second)
	time.Sleep(1500 * time.Millisecond) // the capture: longer than initdead + dead
	stop1()
	stop2()
	frames := rec.frames // n1's senders are done
	if n := len(frames); n < 40 {
		t.Fatalf("only %d frames captured", n)
	}

	n2, stop2 = p.start("n2", nil)
	defer stop2()
	began := time.Now()
	// The attacker: n1's UDP socket (n1 is gone, its address is free) and
	// n1's disk slot.
	udp, err := heartbeat.ListenUDP("nic1", "", "127.0.0.1", p.cfg.Port, []string{"127.0.0.2"})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	f, err := os.OpenFile(p.cfg.Disks[0].Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c1 := p.self("n1")
	disk, err := c1.DiskLinkFor("disk-a", f, 0, 1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	replayed := make(chan int)
	go func() {
		n := 0
		defer func() { replayed <- n }()
		for _, fr := range frames {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(began.Add(fr.at))):
			}
			l := heartbeat.Link(udp)
			if fr.medium == "disk-a" {
				l = disk
			}
			if err := l.Send(fr.b); err != nil {
				t.Errorf("replaying on %s: %v", fr.medium, err)
				return
			}
			n++
		}
	}()
	tm := p.cfg.Timing
	time.Sleep(tm.InitDead - tm.Keepalive)
	// (dead too, should this goroutine have slept past initdead: the point
	// is that no replayed frame made n1 look alive)
	if s := peerState(n2, "n1"); s != heartbeat.NodeUnknown && s != heartbeat.NodeDead {
		t.Errorf("within initdead the restarted n2 sees the dead n1 %s, want unknown: replayed frames were taken as beats", s)
	}
	waitState(t, n2, "n1", heartbeat.NodeDead, 2*time.Second) // due at initdead; slack for a loaded machine
	if r := n2.Status().Role; r != "active" {
		t.Errorf("n2 role %s with n1 dead, want active", r)
	}
	time.Sleep(tm.Dead) // the replay goes on: n1 stays dead
	if s := peerState(n2, "n1"); s != heartbeat.NodeDead {
		t.Errorf("n1 %s while its old frames are replayed, want dead", s)
	}
	cancel()
	n := <-replayed
	st := n2.Status()
	t.Logf("replayed %d frames; n2 counted %+v", n, st.Rejected)
	if n < 20 {
		t.Errorf("only %d frames replayed: the test proved nothing", n)
	}
	if st.Rejected.Accepted != 0 {
		t.Errorf("n2 accepted %d replayed frames", st.Rejected.Accepted)
	}
}
