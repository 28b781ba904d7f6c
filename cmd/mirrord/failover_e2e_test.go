package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/testenv/halab"
	"github.com/hamirror/hamirror/testenv/halab/hamirror"
	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

// The failover proof (issue 11): hamirror's node on the network-namespace
// lab (testenv/halab): two nodes, two tgtd arrays, two private links, a
// serial line, a public bridge with the VIP and a client loop that records
// every committed row. One lab serves every case; each case starts from a
// running pair (failoverPair) and leaves one behind.

var failover struct {
	once sync.Once
	lab  *halab.Lab
	sys  *hamirror.System
	err  error
	skip string
}

// failoverPair returns the shared lab with the group running on one node
// and the other a standby, building it on first use.
func failoverPair(t *testing.T) (*halab.Lab, *hamirror.System) {
	t.Helper()
	mirrord, _ := binaries(t)
	failover.once.Do(func() {
		for _, need := range []func() error{hamirror.Available, iscsitarget.TgtdAvailable} {
			if err := need(); err != nil {
				failover.skip = err.Error()
				return
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		l, err := halab.New(ctx, halab.Options{Name: "e2e", LUNSize: 160 << 20, Keep: os.Getenv("HAMIRROR_KEEP_LAB") != "",
			Logf: func(f string, a ...any) {}})
		if err != nil {
			failover.err = err
			return
		}
		failover.lab = l
		s := &hamirror.System{Bin: binDir, Profile: testProfile(), Call: control.Call, DatabaseSteps: true}
		if err := s.Setup(ctx, l); err != nil {
			failover.err = err
			return
		}
		if err := s.Start(ctx); err != nil {
			failover.err = err
			return
		}
		failover.sys = s
		_ = mirrord
	})
	if failover.skip != "" {
		t.Fatalf("the failover lab cannot run here: %s", failover.skip)
	}
	if failover.err != nil {
		t.Fatalf("building the failover lab: %v", failover.err)
	}
	s := failover.sys
	s.Logf = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	active, err := s.WaitRunning(ctx, time.Minute)
	if err != nil {
		t.Fatalf("the pair is not running at the start of the case: %v", err)
	}
	// A case that failed half-way may have left the other node down,
	// fenced or failed: bring it back so that this case starts from a
	// pair (that case has already failed for it).
	standby := halab.Peer(active)
	if err := s.WaitStandby(ctx, standby, 5*time.Second); err != nil {
		t.Logf("%s is not a healthy standby at the start of the case (%v): recovering it", standby, err)
		if err := s.CallNode(standby, "cleanup", nil, nil); err != nil {
			t.Logf("cleanup on %s: %v", standby, err)
		}
		if err := s.Recover(ctx, standby); err != nil {
			t.Fatalf("the pair is not whole at the start of the case: %v", err)
		}
	}
	return failover.lab, s
}

// closeFailoverLab stops the shared lab (TestMain) and says what its
// Close could not remove (a loop device of a node, a namespace...).
func closeFailoverLab() error {
	if failover.sys != nil {
		failover.sys.Stop(context.Background())
	}
	if failover.lab != nil {
		return failover.lab.Close()
	}
	return nil
}

// testProfile is the product's default timing, with the database and
// the VIP checked every second (default 10 s) so that case 4 is short,
// and the client as the nodes' public ping target (every second).
func testProfile() hamirror.Profile {
	p := hamirror.DefaultProfile()
	p.MonitorInterval = time.Second
	p.Ping = true
	return p
}

// TestFailoverPublicCablePulled: the active node's public cable is
// pulled. Its VIP's link has no carrier and its ping target (the client)
// is out of reach while the peer still reaches it: the group moves
// cleanly, without fencing, and the client is served again with every
// committed row. With the cable back the old node is a healthy standby
// by itself (the campaign's Recover waits for that, with no cleanup): no
// failure of its VIP was counted, since its monitor (checked every
// second here) leaves the lost carrier to the ping rounds for a grace
// (two ping intervals plus timing.dead) that the hand-over fits in.
func TestFailoverPublicCablePulled(t *testing.T) {
	l, s := failoverPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	victim, err := s.Active(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := halab.Campaign{Lab: l, System: s, Fault: halab.FaultPublicDown, Runs: 1, GiveUp: time.Minute, Logf: t.Logf}.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Runs[0]
	if r.Victim != victim || !r.Recovered || len(r.Lost) > 0 {
		t.Fatalf("victim %s (active was %s), served again %v, %d of %d committed rows missing", r.Victim, victim, r.Recovered, len(r.Lost), r.Committed)
	}
	if len(r.Phases) < 2 || r.Phases[1].Name != "stopped" {
		t.Errorf("%s's takeover steps %v: want a clean hand-over (detect, stopped, ...), no fence", r.Survivor, r.Phases)
	}
	st, err := s.Status(victim)
	if err != nil {
		t.Fatal(err)
	}
	for _, rs := range st.Group.Resources {
		if rs.Failures != 0 {
			t.Errorf("%s: resource %s counts %d failures after the cable came back (last error %q), want none", victim, rs.Name, rs.Failures, rs.LastError)
		}
	}
	if !st.Group.Eligible {
		t.Errorf("%s is not eligible with its cable back: group %s (%s)", victim, st.Group.State, st.Group.Reason)
	}

	// Status tells why a node scores 0: the standby's cable pulled (it
	// keeps its role: the active node reaches more targets).
	selfPing := func(st *hamirror.Status) (int, string) {
		for _, n := range st.Cluster.Nodes {
			if n.Self && n.Ping != nil {
				return *n.Ping, n.PingNote
			}
		}
		return -1, ""
	}
	if err := l.CutLink(victim, halab.LinkPublic, true); err != nil {
		t.Fatal(err)
	}
	err = s.Wait(ctx, 10*time.Second, func() error {
		st, err := s.Status(victim)
		if err != nil {
			return err
		}
		if score, note := selfPing(st); score != 0 || !strings.Contains(note, "no carrier") {
			return fmt.Errorf("%s's ping %d, note %q", victim, score, note)
		}
		return nil
	})
	l.CutLink(victim, halab.LinkPublic, false)
	if err != nil {
		t.Fatalf("the standby's status does not say its public cable is out: %v", err)
	}
	if err := s.Wait(ctx, 10*time.Second, func() error {
		st, err := s.Status(victim)
		if err != nil {
			return err
		}
		if score, note := selfPing(st); score != 1 || note != "" {
			return fmt.Errorf("%s's ping %d, note %q", victim, score, note)
		}
		return nil
	}); err != nil {
		t.Fatalf("the cable is back: %v", err)
	}
	if err := s.WaitStandby(ctx, victim, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestFailoverStartsOnThePreferredNode: both nodes start, n1 (preferred)
// runs fence, volume, filesystem, VIP and PostgreSQL; the client commits
// through the VIP.
func TestFailoverStartsOnThePreferredNode(t *testing.T) {
	l, s := failoverPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	active, err := s.Active(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.Status(active)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"fence", "volume", "fs", "vip", "db"} {
		if state, _ := st.Resource(r); state != "running" {
			t.Errorf("%s: resource %s is %q, want running", active, r, state)
		}
	}
	c := l.StartClient(halab.ClientOptions{})
	defer c.Stop()
	if err := c.WaitCommits(ctx, 20, time.Now(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestFailoverKillActiveNode (case 1): kill -9 of every process of the
// active node under load: the peer fences it, takes over, the client
// reaches PostgreSQL through the VIP again and every committed row is
// there. The crashed node comes back as the standby.
func TestFailoverKillActiveNode(t *testing.T) {
	l, s := failoverPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	active, err := s.Active(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The volume's loop device, the host's: the killed node's reboot
	// (Recover) finds it gone.
	held, err := l.Node(active).Loops()
	if err != nil || len(held) != 1 {
		t.Fatalf("%s runs the volume on loop devices %v (%v), want one", active, held, err)
	}
	res, err := halab.Campaign{Lab: l, System: s, Fault: halab.FaultKill, Runs: 1, GiveUp: time.Minute, Logf: t.Logf}.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Runs[0]
	if r.Victim != active {
		t.Fatalf("the campaign killed %s, not the active node %s", r.Victim, active)
	}
	waitDetached(t, held[0])
	if now, err := l.Node(r.Survivor).Loops(); err != nil || len(now) != 1 {
		t.Errorf("%s runs the volume on loop devices %v (%v) after the takeover, want one", r.Survivor, now, err)
	}
	if !r.Recovered {
		t.Fatalf("the client was not served again after %s crashed", r.Victim)
	}
	if len(r.Lost) > 0 {
		t.Fatalf("%d of %d committed rows missing on %s after the takeover: %v", len(r.Lost), r.Committed, r.Survivor, r.Lost)
	}
	t.Logf("outage %v; takeover by %s: %v", r.Outage.Duration, r.Survivor, r.Phases)
	want := []string{"detect", "fence", "assemble", "mount", "VIP", "db launched", "redo starts", "redo done",
		"recovery checkpoint", "db accepts", "agent saw it up", "database ready"}
	if len(r.Phases) != len(want) {
		t.Fatalf("%s's takeover steps %v, want %v in that order (its log: %s)", r.Survivor, r.Phases, want, l.Node(r.Survivor).Dir())
	}
	for i, p := range r.Phases {
		if p.Name != want[i] {
			t.Fatalf("%s's takeover steps %v, want %v in that order", r.Survivor, r.Phases, want)
		}
	}
}

// TestFailoverFrozenActiveIsFenced (case 2): the active mirrord is
// stopped (SIGSTOP) past the dead time, then continued: the peer has
// taken over; the old node's first write gets RESERVATION CONFLICT, it
// stops everything and drops the VIP; none of its writes lands on the
// legs (a verify of the running volume finds them identical) and every
// committed row is there.
func TestFailoverFrozenActiveIsFenced(t *testing.T) {
	l, s := failoverPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	victim, err := s.Active(ctx)
	if err != nil {
		t.Fatal(err)
	}
	survivor := halab.Peer(victim)
	c := l.StartClient(halab.ClientOptions{})
	defer c.Stop()
	if err := c.WaitCommits(ctx, 20, time.Now(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	fault := time.Now()
	if err := s.Freeze(ctx, victim); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitOutage(ctx, fault, time.Now(), time.Minute); err != nil {
		s.Thaw(victim)
		t.Fatalf("the client was not served again while %s's mirrord was stopped: %v", victim, err)
	}
	if a, err := s.Active(ctx); err != nil || a != survivor {
		s.Thaw(victim)
		t.Fatalf("active %q (%v), want %s", a, err, survivor)
	}
	if err := s.Thaw(victim); err != nil {
		t.Fatal(err)
	}
	err = s.Wait(ctx, time.Minute, func() error {
		st, err := s.Status(victim)
		if err != nil {
			return err
		}
		if st.Group.State != "fenced" {
			return fmt.Errorf("%s: group %s", victim, st.Group.State)
		}
		for _, r := range st.Group.Resources {
			if r.State != "stopped" {
				return fmt.Errorf("%s: %s is %s", victim, r.Name, r.State)
			}
		}
		if has, err := l.HasAddr(victim, halab.VIP); err != nil || has {
			return fmt.Errorf("%s still holds the VIP (%v)", victim, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the continued node did not stop as fenced: %v", err)
	}
	if held, err := l.Node(victim).Loops(); err != nil || len(held) != 0 {
		t.Errorf("%s stopped as fenced but holds loop devices %v (%v)", victim, held, err)
	}
	if err := c.WaitCommits(ctx, 10, time.Now(), 30*time.Second); err != nil {
		t.Fatalf("the client after the old node stopped: %v", err)
	}
	c.Stop()
	if lost, err := l.Missing(ctx, net.JoinHostPort(halab.VIP, "5432"), c.Committed()); err != nil || len(lost) > 0 {
		t.Fatalf("committed rows missing on %s: %v (%v)", survivor, lost, err)
	}
	verifyLegs(t, s, survivor)
	if err := s.Recover(ctx, victim); err != nil {
		t.Fatal(err)
	}
}

// waitDetached fails t unless loop device l is detached within 10 s of
// its node's processes being gone (the kernel lets go of the dead node's
// filesystem on it a moment later).
func waitDetached(t *testing.T, l halab.Loop) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.Attached() {
		if time.Now().After(deadline) {
			t.Fatalf("the killed node's loop device %v is still attached (losetup -a)", l)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// verifyLegs waits for the volume on node id to be in sync (a takeover
// resyncs the chunks the old owner's bitmap marked), runs a verify and
// fails t on any difference between the legs.
func verifyLegs(t *testing.T, s *hamirror.System, id string) {
	t.Helper()
	var st *hamirror.Status
	err := s.Wait(context.Background(), 2*time.Minute, func() error {
		var err error
		if st, err = s.Status(id); err != nil {
			return err
		}
		if !st.Volume.InSync() {
			return fmt.Errorf("%s: volume %+v", id, st.Volume)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("before the verify: %v", err)
	}
	if err := s.CallNode(id, "verify", map[string]bool{"repair": false}, nil); err != nil {
		t.Fatalf("verify: %v", err)
	}
	err = s.Wait(context.Background(), 2*time.Minute, func() error {
		var err error
		if st, err = s.Status(id); err != nil {
			return err
		}
		if st.Volume == nil || st.Volume.Verify.Running || st.Volume.Verify.DoneBytes == 0 {
			return errors.New("verify running")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if m := st.Volume.Verify.Mismatches; m != 0 {
		t.Fatalf("the legs differ in %d places after the takeover: a write that was not the new owner's landed", m)
	}
}

// logHas reports whether node id logged a line holding every one of
// words at or after since.
func logHas(t *testing.T, s *hamirror.System, id string, since time.Time, words ...string) bool {
	t.Helper()
	lines, err := s.LogSince(id, since)
	if err != nil {
		t.Fatal(err)
	}
next:
	for _, l := range lines {
		for _, w := range words {
			if !strings.Contains(l, w) {
				continue next
			}
		}
		return true
	}
	return false
}

// TestFailoverPartitionIsNoTakeover (case 3): both private links and the
// serial line cut while the disk slots still advance: the standby sees the
// active node partitioned, raises an alarm and never takes over; the
// client keeps committing on the active node throughout.
func TestFailoverPartitionIsNoTakeover(t *testing.T) {
	l, s := failoverPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	active, err := s.Active(ctx)
	if err != nil {
		t.Fatal(err)
	}
	standby := halab.Peer(active)
	c := l.StartClient(halab.ClientOptions{})
	defer c.Stop()
	cut := time.Now()
	heal := func() {
		l.CutSerial(false)
		l.CutLink(standby, halab.LinkPrivate1, false)
		l.CutLink(standby, halab.LinkPrivate2, false)
	}
	defer heal()
	l.CutSerial(true)
	for _, lk := range []halab.Link{halab.LinkPrivate1, halab.LinkPrivate2} {
		if err := l.CutLink(standby, lk, true); err != nil {
			t.Fatal(err)
		}
	}
	err = s.Wait(ctx, 30*time.Second, func() error {
		st, err := s.Status(standby)
		if err != nil {
			return err
		}
		if ps, _ := st.Peer(active); ps != "partitioned" {
			return fmt.Errorf("%s sees %s %s", standby, active, ps)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Three dead times more: the standby never starts anything.
	st, _ := s.Status(standby)
	hold := time.Now().Add(3 * st.Cluster.Timing.Dead)
	for time.Now().Before(hold) {
		st, err := s.Status(standby)
		if err != nil {
			t.Fatal(err)
		}
		if st.Group.State != "stopped" {
			t.Fatalf("%s's group is %s during a partition: a takeover from a live node", standby, st.Group.State)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := c.WaitCommits(ctx, 10, hold, 30*time.Second); err != nil {
		t.Fatalf("the active node stopped serving during the partition: %v", err)
	}
	if !logHas(t, s, standby, cut, "ALARM", "network partition") {
		t.Fatalf("%s raised no partition alarm", standby)
	}
	heal()
	if err := s.WaitStandby(ctx, standby, time.Minute); err != nil {
		t.Fatal(err)
	}
	if a, err := s.Active(ctx); err != nil || a != active {
		t.Fatalf("after the partition healed the group runs on %q (%v), want %s", a, err, active)
	}
}

// killPostgres kills PostgreSQL's postmaster and its children on node id
// (kill -9).
func killPostgres(t *testing.T, l *halab.Lab, s *hamirror.System, id string) {
	t.Helper()
	pid := filepath.Join(s.PGData(), "postmaster.pid")
	if out, err := l.Node(id).Sh(context.Background(), fmt.Sprintf("P=$(head -1 %s); kill -9 $P $(pgrep -P $P)", pid)); err != nil {
		t.Fatalf("killing PostgreSQL on %s: %v: %s", id, err, out)
	}
}

// TestFailoverDatabaseRestartsThenMoves (case 4): PostgreSQL killed is
// restarted on its node; killed migration_threshold times, the group
// moves to the peer. cleanup makes the node a standby again.
func TestFailoverDatabaseRestartsThenMoves(t *testing.T) {
	l, s := failoverPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	active, err := s.Active(ctx)
	if err != nil {
		t.Fatal(err)
	}
	threshold := s.MigrationThreshold()
	for kill := 1; kill < threshold; kill++ {
		killPostgres(t, l, s, active)
		err := s.Wait(ctx, time.Minute, func() error {
			st, err := s.Status(active)
			if err != nil {
				return err
			}
			if state, failures := st.Resource("db"); state != "running" || failures != kill || st.Group.State != "running" {
				return fmt.Errorf("%s: db %s after %d failures, group %s", active, state, failures, st.Group.State)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("kill %d: PostgreSQL was not restarted on %s: %v", kill, active, err)
		}
		if _, err := s.WaitRunning(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	killPostgres(t, l, s, active)
	peer := halab.Peer(active)
	err = s.Wait(ctx, time.Minute, func() error {
		a, err := s.Active(ctx)
		if err != nil {
			return err
		}
		if a != peer {
			return fmt.Errorf("the group runs on %s", a)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after %d kills the group did not move to %s: %v", threshold, peer, err)
	}
	if _, err := s.WaitRunning(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.CallNode(active, "cleanup", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitStandby(ctx, active, time.Minute); err != nil {
		t.Fatal(err)
	}
}

// moveTo runs op on node from and waits until to runs the group; the
// takeover must not fence (a clean hand-over).
func moveTo(t *testing.T, l *halab.Lab, s *hamirror.System, from, to, op string, args any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	since := time.Now()
	c := l.StartClient(halab.ClientOptions{})
	defer c.Stop()
	if op != "" {
		if err := s.CallNode(from, op, args, nil); err != nil {
			t.Fatalf("%s on %s: %v", op, from, err)
		}
	}
	err := s.Wait(ctx, time.Minute, func() error {
		a, err := s.Active(ctx)
		if err != nil {
			return err
		}
		if a != to {
			return fmt.Errorf("the group runs on %s", a)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s on %s: the group did not move to %s: %v", op, from, to, err)
	}
	if err := c.WaitCommits(ctx, 5, time.Now(), time.Minute); err != nil {
		t.Fatal(err)
	}
	c.Stop()
	if lost, err := l.Missing(ctx, net.JoinHostPort(halab.VIP, "5432"), c.Committed()); err != nil || len(lost) > 0 {
		t.Fatalf("committed rows missing after the move: %v (%v)", lost, err)
	}
	if logHas(t, s, to, since, "msg=fencing") {
		t.Fatalf("%s fenced %s on a clean hand-over", to, from)
	}
}

// TestFailoverMoveStandbyAndSIGTERM (case 5): move and standby, each both
// ways, through the control socket, and SIGTERM of the active mirrord:
// each hands the group over without fencing and without losing a
// committed row.
func TestFailoverMoveStandbyAndSIGTERM(t *testing.T) {
	l, s := failoverPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a, err := s.Active(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := halab.Peer(a)
	moveTo(t, l, s, a, b, "move", nil)
	moveTo(t, l, s, b, a, "move", nil)
	moveTo(t, l, s, a, b, "standby", map[string]bool{"on": true})
	if err := s.CallNode(a, "standby", map[string]bool{"on": false}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitStandby(ctx, a, time.Minute); err != nil {
		t.Fatal(err)
	}
	moveTo(t, l, s, b, a, "standby", map[string]bool{"on": true})
	if err := s.CallNode(b, "standby", map[string]bool{"on": false}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitStandby(ctx, b, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Signal(a, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	moveTo(t, l, s, a, b, "", nil)
	select {
	case <-s.Daemon(a).Done():
	case <-time.After(time.Minute):
		t.Fatalf("%s's mirrord did not exit after handing the group over", a)
	}
	if err := s.StartNode(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitStandby(ctx, a, time.Minute); err != nil {
		t.Fatal(err)
	}
}

// TestFailoverStartTogetherAndAlone (case 7): both nodes started together:
// the preferred one (n1) runs the group; one node started alone runs it
// once initdead has passed.
func TestFailoverStartTogetherAndAlone(t *testing.T) {
	_, s := failoverPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"n1", "n2"} {
		if err := s.StartNode(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if a, err := s.WaitRunning(ctx, time.Minute); err != nil || a != "n1" {
		t.Fatalf("started together, the group runs on %q (%v), want the preferred node n1", a, err)
	}
	if err := s.WaitStandby(ctx, "n2", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.StartNode(ctx, "n2"); err != nil {
		t.Fatal(err)
	}
	if a, err := s.WaitRunning(ctx, time.Minute); err != nil || a != "n2" {
		t.Fatalf("started alone, n2 does not run the group: %q (%v)", a, err)
	}
	if initdead := s.InitDead(); time.Since(start) < initdead {
		t.Fatalf("n2 alone ran the group %v after its start, before initdead (%v)", time.Since(start), initdead)
	}
	if err := s.StartNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitStandby(ctx, "n1", time.Minute); err != nil {
		t.Fatal(err)
	}
}

// TestFailoverArrayDeadDuringTakeover (case 6): array b dies under load:
// the active node runs on leg a and the standby holds (persisted,
// acknowledged) that leg b failed. The active node then crashes: the
// standby fences it on array a (b is unreachable), assembles leg a alone
// because it knows that leg is current, and serves every committed row.
// Array b returns: it is fenced, its leg re-added and resynced.
func TestFailoverArrayDeadDuringTakeover(t *testing.T) {
	l, s := failoverPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	victim, err := s.Active(ctx)
	if err != nil {
		t.Fatal(err)
	}
	survivor := halab.Peer(victim)
	c := l.StartClient(halab.ClientOptions{})
	defer c.Stop()
	if err := c.WaitCommits(ctx, 20, time.Now(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	b := l.Arrays()[1]
	if err := b.Kill(); err != nil {
		t.Fatal(err)
	}
	down := true
	defer func() {
		if down {
			b.Restart()
		}
	}()
	err = s.Wait(ctx, time.Minute, func() error {
		st, err := s.Status(victim)
		if err != nil {
			return err
		}
		if st.Volume == nil || st.Volume.Legs[1].State != "failed" {
			return fmt.Errorf("%s: volume %+v", victim, st.Volume)
		}
		pst, err := s.Status(survivor)
		if err != nil {
			return err
		}
		if pv := pst.PeerVolume; pv == nil || !pv.Trusted || pv.Knowledge.LegStates != [2]string{"in_sync", "failed"} {
			return fmt.Errorf("%s holds %+v of %s's volume", survivor, pst.PeerVolume, victim)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("leg b's failure: %v", err)
	}
	if err := c.WaitCommits(ctx, 10, time.Now(), 30*time.Second); err != nil {
		t.Fatalf("degraded on leg a: %v", err)
	}
	fault := time.Now()
	if err := s.Kill(ctx, victim); err != nil {
		t.Fatal(err)
	}
	o, err := c.WaitOutage(ctx, fault, time.Now(), time.Minute)
	if err != nil {
		t.Fatalf("no takeover with array b dead: %v", err)
	}
	t.Logf("outage %v with array b dead", o.Duration)
	if err := c.WaitCommits(ctx, 10, time.Now(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	c.Stop()
	if lost, err := l.Missing(ctx, net.JoinHostPort(halab.VIP, "5432"), c.Committed()); err != nil || len(lost) > 0 {
		t.Fatalf("committed rows missing on %s: %v (%v)", survivor, lost, err)
	}
	if !logHas(t, s, survivor, fault, "msg=fenced", "array-b: unreachable") {
		t.Errorf("%s's takeover does not show array b unreachable at the fence", survivor)
	}
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	down = false
	err = s.Wait(ctx, 2*time.Minute, func() error {
		st, err := s.Status(survivor)
		if err != nil {
			return err
		}
		if !st.Volume.InSync() {
			return fmt.Errorf("%s: volume %+v", survivor, st.Volume)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("array b came back but its leg did not rejoin: %v", err)
	}
	verifyLegs(t, s, survivor)
	if err := s.Recover(ctx, victim); err != nil {
		t.Fatal(err)
	}
}
