package main

import (
	"context"
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
