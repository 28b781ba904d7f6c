package hamirror

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/resources"
	"github.com/hamirror/hamirror/resources/node"
	"github.com/hamirror/hamirror/testenv/halab"
)

// System is hamirror's node on a halab lab (see the package doc).
type System struct {
	halab.Faults
	// Bin is the folder holding the mirrord and mirrorctl binaries
	// (default: found in PATH).
	Bin string
	// Profile is the timing (DefaultProfile when zero).
	Profile Profile
	// Call reaches a node's control socket (default: this package's own
	// client of the control protocol).
	Call CallFunc
	// Logf reports progress (default: discard).
	Logf func(format string, args ...any)
	// DatabaseSteps adds PostgreSQL's own steps to a move's breakdown
	// (see Breakdown).
	DatabaseSteps bool

	p paths

	mu      sync.Mutex
	fault   halab.Fault  // the last fault injected (Breakdown reads it)
	killed  *halab.Array // the array KillArray killed, until Recover
	kills   int          // arrays killed so far (they alternate)
	daemons map[string]*halab.Daemon
	frozen  map[string]bool // nodes whose mirrord is stopped (not asked)
}

// Available reports why the System cannot run here (nil: it can).
func Available() error {
	if err := halab.Available(); err != nil {
		return err
	}
	if err := halab.PGAvailable(); err != nil {
		return err
	}
	for _, tool := range []string{"tgtd", "nbdfuse", "mkfs.ext4", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not installed: run make deps", tool)
		}
	}
	return nil
}

// Name says which timing runs.
func (s *System) Name() string {
	pr := s.profile()
	switch {
	case pr.Keepalive == 0:
		return "hamirror, defaults (keepalive 200ms, dead 2s)"
	default:
		return fmt.Sprintf("hamirror, %s (keepalive %v, dead %v)", pr.Name, pr.Keepalive, pr.Dead)
	}
}

func (s *System) profile() Profile {
	if s.Profile == (Profile{}) {
		return DefaultProfile()
	}
	return s.Profile
}

func (s *System) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

func (s *System) bin(name string) string {
	if s.Bin != "" {
		return filepath.Join(s.Bin, name)
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return name
}

// Socket is node id's control socket (unix:PATH, a host path).
func (s *System) Socket(id string) string {
	return "unix:" + filepath.Join(s.Lab.Node(id).Dir(), "mirrord.sock")
}

// CallNode sends a control operation to node id's mirrord.
func (s *System) CallNode(id, op string, args, result any) error {
	c := s.Call
	if c == nil {
		c = call
	}
	return c(s.Socket(id), op, args, result)
}

// Status is node id's status.
func (s *System) Status(id string) (*Status, error) {
	s.mu.Lock()
	frozen := s.frozen[id]
	s.mu.Unlock()
	if frozen {
		return nil, fmt.Errorf("%s's mirrord is stopped (SIGSTOP)", id)
	}
	var st Status
	if err := s.CallNode(id, "status", nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// ConfigPath is the lab's cluster file.
func (s *System) ConfigPath() string { return s.p.cfg }

// Setup writes the cluster file and key, creates the mirror on the two
// arrays and makes the filesystem and the database on it (in n1).
func (s *System) Setup(ctx context.Context, l *halab.Lab) error {
	if err := Available(); err != nil {
		return err
	}
	if len(l.Arrays()) != 2 {
		return fmt.Errorf("hamirror: the lab has %d arrays; the volume needs 2", len(l.Arrays()))
	}
	s.Lab, s.p = l, labPaths(l)
	s.daemons, s.frozen = map[string]*halab.Daemon{}, map[string]bool{}
	if err := os.WriteFile(s.p.key, []byte("halab-cluster-key-"+filepath.Base(l.Dir)), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(s.p.cfg, []byte(clusterFile(l, s.p, s.profile())), 0o644); err != nil {
		return err
	}
	for _, n := range l.Nodes() {
		if _, err := node.LoadConfig(s.p.cfg, heartbeat.NodeID(n.ID)); err != nil {
			return fmt.Errorf("the lab's cluster file does not validate: %w", err)
		}
	}
	n1 := l.Node("n1")
	a := l.Arrays()
	if out, err := n1.Run(ctx, s.bin("mirrorctl"), "create", a[0].URL(), a[1].URL()); err != nil {
		return fmt.Errorf("mirrorctl create: %w: %s", err, out)
	}
	if out, err := n1.Sh(ctx, s.setupUp()); err != nil {
		return fmt.Errorf("serving the new volume once: %w: %s", err, out)
	}
	err := n1.InitDB(ctx, s.p.pgdata)
	if out, derr := n1.Sh(ctx, setupDown(s.p.srv)); derr != nil && err == nil {
		err = fmt.Errorf("stopping the set-up volume: %w: %s", derr, out)
	}
	return err
}

// setupUp serves the new volume once with `mirrord volume` (no cluster
// yet), attaches it the way the volume resource does (nbdfuse and a loop
// device) and mounts a fresh ext4 filesystem on it; setupDown undoes it
// and stops mirrord cleanly.
func (s *System) setupUp() string {
	a := s.Lab.Arrays()
	log := filepath.Join(s.Lab.Node("n1").Dir(), "log", "setup-volume.log")
	return fmt.Sprintf(`set -e
D=/run/hamirror-setup; mkdir -p $D/mnt %[4]s
%[1]s volume --leg %[2]q --leg %[3]q --listen unix:$D/nbd.sock --control unix:$D/ctl.sock >%[5]s 2>&1 </dev/null &
echo $! > $D/mirrord.pid
for i in $(seq 300); do [ -S $D/nbd.sock ] && break; sleep 0.1; done
nbdfuse $D/mnt/volume --unix $D/nbd.sock >/dev/null 2>&1 </dev/null &
echo $! > $D/nbdfuse.pid
for i in $(seq 300); do [ -s $D/mnt/volume ] && break; sleep 0.1; done
mkfs.ext4 -q -F $D/mnt/volume
mount -o loop $D/mnt/volume %[4]s
`, s.bin("mirrord"), a[0].URL(), a[1].URL(), s.p.srv, log)
}

func setupDown(srv string) string {
	return fmt.Sprintf(`D=/run/hamirror-setup
umount %s; umount $D/mnt
for p in $(cat $D/nbdfuse.pid) $(cat $D/mirrord.pid); do
  kill -TERM $p 2>/dev/null
  for i in $(seq 300); do kill -0 $p 2>/dev/null || break; sleep 0.1; done
done
! kill -0 $(cat $D/mirrord.pid) 2>/dev/null
`, srv)
}

// prepare gives a freshly booted node its state directory.
func (s *System) prepare(ctx context.Context, n *halab.Node) error {
	state := filepath.Join(n.Dir(), "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		return err
	}
	_, err := n.Sh(ctx, fmt.Sprintf("ln -sfn %s %s", state, stateLink))
	return err
}

// StartNode runs mirrord on node id (booting the node first if it is
// down) and returns at once.
func (s *System) StartNode(ctx context.Context, id string) error {
	n := s.Lab.Node(id)
	if !n.Up() {
		if err := n.Start(ctx); err != nil {
			return err
		}
	}
	if err := s.prepare(ctx, n); err != nil {
		return err
	}
	os.Remove(strings.TrimPrefix(s.Socket(id), "unix:"))
	d, err := n.StartDaemon("mirrord", s.bin("mirrord"), "--config", s.p.cfg, "--node", id, "--control", s.Socket(id))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.daemons[id] = d
	s.mu.Unlock()
	return nil
}

// Daemon returns node id's running mirrord (nil if none was started).
func (s *System) Daemon(id string) *halab.Daemon {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.daemons[id]
}

// Start runs mirrord on both nodes and returns once PostgreSQL answers
// through the VIP (the ledger table made).
func (s *System) Start(ctx context.Context) error {
	for _, id := range []string{"n1", "n2"} {
		if err := s.StartNode(ctx, id); err != nil {
			return err
		}
	}
	if _, err := s.WaitRunning(ctx, 90*time.Second); err != nil {
		return err
	}
	return s.Lab.CreateLedger(ctx, net.JoinHostPort(halab.VIP, strconv.Itoa(halab.PGPort)))
}

// WaitRunning waits until one node runs the group, the other is a
// standby that sees it alive, and PostgreSQL answers through the VIP; it
// returns the active node.
func (s *System) WaitRunning(ctx context.Context, timeout time.Duration) (string, error) {
	var active string
	err := s.Wait(ctx, timeout, func() error {
		a, err := s.Active(ctx)
		if err != nil {
			return err
		}
		active = a
		return nil
	})
	if err != nil {
		return "", err
	}
	return active, s.Lab.WaitPG(ctx, net.JoinHostPort(halab.VIP, strconv.Itoa(halab.PGPort)), timeout, nil)
}

// Wait polls ok every 50 ms until it returns nil; on timeout it returns
// ok's last error, with both nodes' group states.
func (s *System) Wait(ctx context.Context, timeout time.Duration, ok func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ok()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v: %w (%s)", timeout, err, s.describe())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// describe summarises both nodes for an error message.
func (s *System) describe() string {
	var parts []string
	for _, id := range []string{"n1", "n2"} {
		st, err := s.Status(id)
		if err != nil {
			parts = append(parts, fmt.Sprintf("%s: %v", id, err))
			continue
		}
		d := fmt.Sprintf("%s: role %s, group %s", id, st.Cluster.Role, st.Group.State)
		if st.Group.Current != "" {
			d += " (" + st.Group.Current + ")"
		}
		if st.Group.Reason != "" {
			d += ", reason: " + st.Group.Reason
		}
		if st.Group.Waiting != "" {
			d += ", waiting: " + st.Group.Waiting
		}
		parts = append(parts, d)
	}
	return strings.Join(parts, "; ")
}

// Active names the node whose group runs, while the other is a live
// standby or down.
func (s *System) Active(ctx context.Context) (string, error) {
	var running []string
	for _, id := range []string{"n1", "n2"} {
		if !s.Lab.Node(id).Up() {
			continue
		}
		st, err := s.Status(id)
		if err != nil {
			continue
		}
		if st.Group.State == "running" {
			running = append(running, id)
		}
	}
	if len(running) != 1 {
		return "", fmt.Errorf("the group runs on %v, want exactly one node", running)
	}
	return running[0], nil
}

func (s *System) setFault(f halab.Fault) {
	s.mu.Lock()
	s.fault = f
	s.mu.Unlock()
}

// Kill crashes node id (halab.Faults.Kill).
func (s *System) Kill(ctx context.Context, id string) error {
	s.setFault(halab.FaultKill)
	return s.Faults.Kill(ctx, id)
}

// PublicDown pulls node id's public cable (halab.Faults.PublicDown):
// with Profile.Ping, the node hands the group over.
func (s *System) PublicDown(ctx context.Context, id string) error {
	s.setFault(halab.FaultPublicDown)
	return s.Faults.PublicDown(ctx, id)
}

// KillArray kills one of the lab's arrays (a and b in turn) under the
// active node id: its volume fails that leg and runs on the other.
func (s *System) KillArray(_ context.Context, id string) error {
	arrays := s.Lab.Arrays()
	s.mu.Lock()
	a := arrays[s.kills%len(arrays)]
	s.kills++
	s.fault, s.killed = halab.FaultArrayKill, a
	s.mu.Unlock()
	return a.Kill()
}

// Freeze stops node id's mirrord (SIGSTOP), and nothing else: the
// database and the filesystem go on above a volume that no longer
// answers, as with a hung daemon.
func (s *System) Freeze(_ context.Context, id string) error {
	d := s.Daemon(id)
	if d == nil {
		return fmt.Errorf("no mirrord runs on %s", id)
	}
	s.mu.Lock()
	s.frozen[id] = true
	s.fault = halab.FaultFreeze
	s.mu.Unlock()
	return s.Lab.Node(id).Freeze(d.Pid())
}

// Thaw continues node id's mirrord after Freeze.
func (s *System) Thaw(id string) error {
	d := s.Daemon(id)
	if d == nil {
		return fmt.Errorf("no mirrord runs on %s", id)
	}
	err := s.Lab.Node(id).Thaw(d.Pid())
	s.mu.Lock()
	delete(s.frozen, id)
	s.mu.Unlock()
	return err
}

// Recover brings node id back as a standby after a fault: a crashed node
// boots and starts mirrord; a frozen mirrord is continued (it finds
// itself fenced and stops everything) and restarted; a cut public cable
// is plugged back; a node whose mirrord exited starts it again; an
// array KillArray killed is restarted (id stays the active node). It
// returns once the node is a live standby (its peer, after KillArray)
// and the active node's volume is back in sync.
func (s *System) Recover(ctx context.Context, id string) error {
	s.mu.Lock()
	killed, fault := s.killed, s.fault
	s.killed = nil
	s.mu.Unlock()
	if killed != nil {
		// An array killed under id: restart it; id's volume re-adds its
		// leg and resyncs, the peer stays the standby.
		if err := killed.Restart(); err != nil {
			return fmt.Errorf("restarting array %s: %w", killed.Name, err)
		}
		return s.WaitStandby(ctx, halab.Peer(id), 90*time.Second)
	}
	n := s.Lab.Node(id)
	if err := s.Lab.CutLink(id, halab.LinkPublic, false); err != nil {
		return err
	}
	if !n.Up() {
		// WaitDown: the node's processes are gone, and with them its
		// hold on the volume's loop device, which its crash released.
		if err := n.WaitDown(); err != nil {
			return err
		}
		if err := s.StartNode(ctx, id); err != nil {
			return err
		}
	} else if d := s.Daemon(id); d != nil && !exited(d) {
		if fault == halab.FaultPublicDown {
			// It handed the group over and is a standby again by itself
			// once its cable is back: with ping targets a lost carrier
			// is the node's ping score, not a failure of its VIP, so no
			// failure count keeps it out (no cleanup here).
			return s.WaitStandby(ctx, id, 90*time.Second)
		}
		if err := s.Thaw(id); err != nil {
			return err
		}
		if err := s.RestartNode(ctx, id); err != nil {
			return err
		}
	} else if err := s.StartNode(ctx, id); err != nil {
		return err
	}
	return s.WaitStandby(ctx, id, 90*time.Second)
}

// exited reports whether d has exited.
func exited(d *halab.Daemon) bool {
	select {
	case <-d.Done():
		return true
	default:
		return false
	}
}

// RestartNode stops node id's mirrord (SIGTERM, then SIGKILL after a
// minute) and starts it again.
func (s *System) RestartNode(ctx context.Context, id string) error {
	if err := s.StopNode(id, time.Minute); err != nil {
		return err
	}
	return s.StartNode(ctx, id)
}

// StopNode sends SIGTERM to node id's mirrord and waits up to grace for
// it to exit (then SIGKILL).
func (s *System) StopNode(id string, grace time.Duration) error {
	d := s.Daemon(id)
	if d == nil {
		return nil
	}
	// A node whose group is blocked stays on the first SIGTERM (and says
	// so); a second one makes it exit, leaving what runs.
	d.Signal(syscall.SIGTERM)
	select {
	case <-d.Done():
	case <-time.After(grace):
		s.logf("hamirror: %s's mirrord did not exit within %v of SIGTERM; sending another", id, grace)
		d.Stop(10 * time.Second)
	}
	s.mu.Lock()
	delete(s.daemons, id)
	s.mu.Unlock()
	return nil
}

// WaitStandby waits until node id is a standby that runs nothing and the
// peer runs the group with its volume in sync.
func (s *System) WaitStandby(ctx context.Context, id string, timeout time.Duration) error {
	peer := halab.Peer(id)
	return s.Wait(ctx, timeout, func() error {
		st, err := s.Status(id)
		if err != nil {
			return err
		}
		if st.Group.State != "stopped" || st.Cluster.Role != "standby" {
			return fmt.Errorf("%s: group %s, role %s", id, st.Group.State, st.Cluster.Role)
		}
		if ps, _ := st.Peer(peer); ps != "alive" {
			return fmt.Errorf("%s sees %s %s", id, peer, ps)
		}
		pst, err := s.Status(peer)
		if err != nil {
			return err
		}
		if pst.Group.State != "running" || !pst.Volume.InSync() {
			return fmt.Errorf("%s: group %s, volume %+v", peer, pst.Group.State, pst.Volume)
		}
		return nil
	})
}

// Stop stops mirrord on both nodes (the group stops where it runs; the
// loop devices of a mirrord that had to be killed go with its node, at
// Lab.Close).
func (s *System) Stop(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, id := range []string{"n1", "n2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if d := s.Daemon(id); d != nil {
				s.Lab.Node(id).Thaw(d.Pid())
			}
			s.StopNode(id, time.Minute)
		}()
	}
	wg.Wait()
	return nil
}

// Signal sends sig to node id's mirrord.
func (s *System) Signal(id string, sig syscall.Signal) error {
	d := s.Daemon(id)
	if d == nil {
		return errors.New("no mirrord on " + id)
	}
	return d.Signal(sig)
}

// LogSince returns the lines node id's mirrord logged at or after t.
func (s *System) LogSince(id string, t time.Time) ([]string, error) {
	lines, err := halab.ReadLines(filepath.Join(s.Lab.Node(id).Dir(), "log", "mirrord.log"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range lines {
		if at, ok := logTime(l); ok && !at.Before(t) {
			out = append(out, l)
		}
	}
	return out, nil
}

// PGData is the database's data directory (on the filesystem, mounted in
// the active node).
func (s *System) PGData() string { return s.p.pgdata }

// MigrationThreshold is the group's migration threshold in the lab's
// cluster file.
func (s *System) MigrationThreshold() int {
	if t := s.profile().MigrationThreshold; t != 0 {
		return t
	}
	return resources.DefaultConfig().MigrationThreshold
}

// InitDead is the lab's initdead.
func (s *System) InitDead() time.Duration {
	if d := s.profile().InitDead; d != 0 {
		return d
	}
	return heartbeat.DefaultConfig().Timing.InitDead
}
