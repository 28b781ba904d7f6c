package hblab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/creack/pty"
	"github.com/hamirror/hamirror/heartbeat"
)

// Options shape a lab.
type Options struct {
	Name      string           // short tag, made unique per lab (namespace names)
	Nodes     int              // 2..N
	Media     int              // private NICs per node (default 2)
	Serial    bool             // two-node labs only: a pty serial line with a cuttable relay
	Disk      bool             // a shared slot file as the disk medium "disk-a"
	Timing    heartbeat.Timing // zero: heartbeat defaults
	Preferred string
	Logf      func(format string, args ...any) // default: discard
}

// Lab is a set of namespaces, links and files for one heartbeat cluster.
type Lab struct {
	opt    Options
	prefix string
	dir    string
	Config heartbeat.Config // the cluster config (Self unset)
	Key    []byte

	serial *relay
	ptys   []*os.File // masters and the lab's slave copies, closed by Close

	mu      sync.Mutex
	members map[string]*Member
	procs   map[string]*Process
	boots   map[string]uint64
}

// New builds the lab. On error everything built so far is removed.
func New(opt Options) (_ *Lab, err error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if opt.Media == 0 {
		opt.Media = 2
	}
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	if opt.Serial && opt.Nodes != 2 {
		return nil, errors.New("hblab: a serial line joins exactly two nodes")
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	sweepStale()
	l := &Lab{opt: opt, prefix: fmt.Sprintf("hb-%s-%d-%s", opt.Name, os.Getpid(), hex.EncodeToString(rnd[:])),
		members: map[string]*Member{}, procs: map[string]*Process{}, boots: map[string]uint64{}}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	if l.dir, err = os.MkdirTemp("", l.prefix); err != nil {
		return nil, err
	}
	c := heartbeat.DefaultConfig()
	if opt.Timing != (heartbeat.Timing{}) {
		c.Timing = opt.Timing
	}
	c.Cluster, c.KeyFile, c.Preferred = "lab", filepath.Join(l.dir, "cluster.key"), heartbeat.NodeID(opt.Preferred)
	l.Key = []byte(hex.EncodeToString(rnd[:]) + "-hamirror-lab-cluster-key")
	if err := os.WriteFile(c.KeyFile, l.Key, 0o600); err != nil {
		return nil, err
	}
	if err := run("ip", "netns", "add", l.ns("sw")); err != nil {
		return nil, err
	}
	for k := 1; k <= opt.Media; k++ {
		br := fmt.Sprintf("br%d", k)
		if err := runAll(
			[]string{"ip", "-n", l.ns("sw"), "link", "add", "name", br, "type", "bridge"},
			[]string{"ip", "-n", l.ns("sw"), "link", "set", br, "up"}); err != nil {
			return nil, err
		}
	}
	var slaves []string
	if opt.Serial {
		l.serial = &relay{}
		for range 2 {
			m, s, err := pty.Open()
			if err != nil {
				return nil, fmt.Errorf("pty: %w", err)
			}
			l.ptys = append(l.ptys, m, s)
			slaves = append(slaves, s.Name())
		}
		l.serial.start(l.ptys[0], l.ptys[2])
	}
	if opt.Disk {
		path := filepath.Join(l.dir, "slots")
		if err := os.WriteFile(path, make([]byte, 8*1024), 0o600); err != nil {
			return nil, err
		}
		c.Disks = []heartbeat.Disk{{Name: "disk-a", Path: path, SlotSize: 1024, Slots: 8}}
	}
	for i := 1; i <= opt.Nodes; i++ {
		id := fmt.Sprintf("n%d", i)
		ns := l.ns(id)
		n := heartbeat.Node{ID: heartbeat.NodeID(id), Address: fmt.Sprintf("192.0.2.%d", i)}
		if err := runAll([]string{"ip", "netns", "add", ns}, []string{"ip", "-n", ns, "link", "set", "lo", "up"}); err != nil {
			return nil, err
		}
		for k := 1; k <= opt.Media; k++ {
			eth, port, addr := fmt.Sprintf("eth%d", k), fmt.Sprintf("%sk%d", id, k), fmt.Sprintf("10.0.%d.%d", k, i)
			if err := runAll(
				[]string{"ip", "-n", l.ns("sw"), "link", "add", "name", port, "type", "veth", "peer", "name", eth, "netns", ns},
				[]string{"ip", "-n", l.ns("sw"), "link", "set", port, "master", fmt.Sprintf("br%d", k), "up"},
				[]string{"ip", "-n", ns, "addr", "add", addr + "/24", "dev", eth},
				[]string{"ip", "-n", ns, "link", "set", eth, "up"}); err != nil {
				return nil, err
			}
			n.Links = append(n.Links, heartbeat.NIC{Medium: fmt.Sprintf("nic%d", k), Interface: eth, Address: addr})
		}
		if opt.Serial {
			n.Serial = slaves[i-1]
		}
		c.Nodes = append(c.Nodes, n)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	l.Config = c
	return l, nil
}

// sweepStale deletes lab namespaces left behind by a process that died
// before its cleanup ran (a test binary killed by its timeout).
func sweepStale() {
	for _, ns := range StaleNetns("hb") {
		run("ip", "netns", "del", ns)
	}
}

// StaleNetns lists the network namespaces named TAG-NAME-PID-RAND-ROLE
// (the names hblab and halab give) whose PID is dead: left behind by a
// lab whose process died before its cleanup ran.
func StaleNetns(tag string) []string {
	var stale []string
	ents, _ := os.ReadDir("/var/run/netns")
	for _, e := range ents {
		f := strings.Split(e.Name(), "-")
		if len(f) < 5 || f[0] != tag {
			continue
		}
		pid, err := strconv.Atoi(f[len(f)-3])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			stale = append(stale, e.Name())
		}
	}
	return stale
}

func runAll(cmds ...[]string) error {
	for _, c := range cmds {
		if err := run(c...); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) ns(name string) string { return l.prefix + "-" + name }

// Netns is the namespace of node id (for attackers and probes).
func (l *Lab) Netns(id string) string { return l.ns(id) }

// Close stops every member and removes namespaces, ptys and files.
func (l *Lab) Close() error {
	l.mu.Lock()
	ms := make([]*Member, 0, len(l.members))
	for _, m := range l.members {
		ms = append(ms, m)
	}
	ps := make([]*Process, 0, len(l.procs))
	for _, p := range l.procs {
		ps = append(ps, p)
	}
	l.mu.Unlock()
	for _, m := range ms {
		m.Stop()
	}
	var errs []error
	for _, p := range ps {
		errs = append(errs, p.Stop())
	}
	// Closing every slave makes the relay's blocking master reads fail
	// (EIO); only then can the relay stop.
	for i := 1; i < len(l.ptys); i += 2 {
		l.ptys[i].Close()
	}
	if l.serial != nil {
		l.serial.stop()
	}
	for i := 1; i <= l.opt.Nodes; i++ {
		run("ip", "netns", "del", l.ns(fmt.Sprintf("n%d", i)))
	}
	if err := run("ip", "netns", "del", l.ns("sw")); err != nil && l.Config.Cluster != "" {
		errs = append(errs, err)
	}
	if l.dir != "" {
		os.RemoveAll(l.dir)
	}
	return errors.Join(errs...)
}

// CutNIC pulls (cut=true) or plugs back node id's cable on medium nicK.
func (l *Lab) CutNIC(id, medium string, cut bool) error {
	var k int
	if _, err := fmt.Sscanf(medium, "nic%d", &k); err != nil {
		return fmt.Errorf("hblab: medium %q is not a NIC", medium)
	}
	state := "up"
	if cut {
		state = "down"
	}
	return run("ip", "-n", l.ns("sw"), "link", "set", fmt.Sprintf("%sk%d", id, k), state)
}

// CutSerial cuts or restores the serial cable.
func (l *Lab) CutSerial(cut bool) { l.serial.cut.Store(cut) }

// SerialInject writes raw bytes onto the serial cable towards node index i (0 or 1).
func (l *Lab) SerialInject(i int, b []byte) error {
	_, err := l.ptys[2*i].Write(b)
	return err
}

// Boot returns the boot ID of node id's current run.
func (l *Lab) Boot(id string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.boots[id]
}

// Member is one running node.
type Member struct {
	*heartbeat.Member
	*eventLog
	ID     string
	lab    *Lab
	cancel context.CancelFunc
	done   chan struct{}
}

// Start runs node id until Stop (or ctx ends).
func (l *Lab) Start(ctx context.Context, id string) (*Member, error) {
	c := l.Config
	c.Self = heartbeat.NodeID(id)
	var links []heartbeat.Link
	err := InNetns(l.ns(id), func() error {
		var err error
		links, err = heartbeat.OpenLinks(c)
		return err
	})
	if err != nil {
		return nil, err
	}
	boot := uint64(time.Now().UnixNano())
	m := &Member{eventLog: newEventLog(id), ID: id, lab: l, done: make(chan struct{})}
	hm, err := heartbeat.NewMember(c, l.Key, links, heartbeat.MemberOptions{
		Boot:    boot,
		Logf:    func(f string, a ...any) { l.opt.Logf(id+": "+f, a...) },
		OnEvent: m.add,
	})
	if err != nil {
		for _, lk := range links {
			lk.Close()
		}
		return nil, err
	}
	m.Member = hm
	ctx, m.cancel = context.WithCancel(ctx)
	l.mu.Lock()
	l.members[id], l.boots[id] = m, boot
	l.mu.Unlock()
	if l.serial != nil {
		l.serial.setRunning(id == "n1", true)
	}
	go func() {
		defer close(m.done)
		hm.Run(ctx)
	}()
	return m, nil
}

// Stop kills the node (all its links close at once) and returns when it
// has stopped. Safe to call twice.
func (m *Member) Stop() {
	m.cancel()
	<-m.done
	l := m.lab
	l.mu.Lock()
	if l.members[m.ID] == m {
		delete(l.members, m.ID)
		if l.serial != nil {
			l.serial.setRunning(m.ID == "n1", false)
		}
	}
	l.mu.Unlock()
}

// NodeEvent matches "node peer -> state".
func NodeEvent(peer, state string) func(heartbeat.Event) bool {
	return func(e heartbeat.Event) bool {
		return e.Kind == heartbeat.EventNode && string(e.Node) == peer && e.To == state
	}
}

// IP runs `ip ARGS...` in node id's namespace (e.g. "addr", "flush", "dev", "eth1").
func (l *Lab) IP(id string, args ...string) error {
	return run(append([]string{"ip", "-n", l.ns(id)}, args...)...)
}
