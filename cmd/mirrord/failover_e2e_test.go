package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
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
		s := &hamirror.System{Bin: binDir, Profile: testProfile(), Call: control.Call}
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
		t.Skipf("SKIPPED LOUDLY: the failover lab cannot run here: %s", failover.skip)
	}
	if failover.err != nil {
		t.Fatalf("building the failover lab: %v", failover.err)
	}
	s := failover.sys
	s.Logf = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := s.WaitRunning(ctx, time.Minute); err != nil {
		t.Fatalf("the pair is not running at the start of the case: %v", err)
	}
	return failover.lab, s
}

// closeFailoverLab stops the shared lab (TestMain).
func closeFailoverLab() {
	if failover.sys != nil {
		failover.sys.Stop(context.Background())
	}
	if failover.lab != nil {
		failover.lab.Close()
	}
}

// testProfile is the product's default timing.
func testProfile() hamirror.Profile {
	return hamirror.DefaultProfile()
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
	res, err := halab.Campaign{Lab: l, System: s, Fault: halab.FaultKill, Runs: 1, GiveUp: time.Minute, Logf: t.Logf}.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Runs[0]
	if !r.Recovered {
		t.Fatalf("the client was not served again after %s crashed", r.Victim)
	}
	if len(r.Lost) > 0 {
		t.Fatalf("%d of %d committed rows missing on %s after the takeover: %v", len(r.Lost), r.Committed, r.Survivor, r.Lost)
	}
	t.Logf("outage %v; takeover by %s: %v", r.Outage.Duration, r.Survivor, r.Phases)
	want := []string{"detect", "fence", "assemble", "mount", "VIP", "database ready"}
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

// verifyLegs runs a verify of the volume on node id and fails t on any
// difference between the legs.
func verifyLegs(t *testing.T, s *hamirror.System, id string) {
	t.Helper()
	if err := s.CallNode(id, "verify", map[string]bool{"repair": false}, nil); err != nil {
		t.Fatalf("verify: %v", err)
	}
	var st *hamirror.Status
	err := s.Wait(context.Background(), 2*time.Minute, func() error {
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
