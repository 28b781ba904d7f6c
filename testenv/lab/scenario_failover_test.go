package lab

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	hanode "github.com/hamirror/hamirror/resources/node"
)

// The failover story on real kernels (issue 11's proof, issue 13's VM lab
// story), one lab for three faults in a row, each measured as the client
// sees it through the VIP:
//
//  1. n1 runs the group; its public NIC goes down (the cable pulled): the
//     peer reaches the ping target and n1 does not, so the group moves to
//     n2 in a clean hand-over.
//  2. n2 (now active) freezes (QEMU stop): n1 declares it dead, fences it
//     on both arrays, assembles, mounts ext4 and takes the VIP; when n2 is
//     thawed, its first write gets RESERVATION CONFLICT and it stops
//     everything and drops the VIP; the operator's cleanup brings it back.
//  3. n1 (now active) is killed (QEMU killed: a power cut): n2 fences it,
//     takes over, and every record the client saw acknowledged is there.
func TestFailoverStory(t *testing.T) {
	begin := time.Now()
	s := newStory(t)
	n1, n2 := s.lab.Node("n1"), s.lab.Node("n2")
	var outages []string
	note := func(what string, d time.Duration) {
		outages = append(outages, what+" "+d.Round(time.Millisecond).String())
	}

	if !s.phase(t, "public NIC down moves the group", func() {
		fault := time.Now()
		if err := n1.SetLink(NetPublic, false); err != nil {
			s.t.Fatal(err)
		}
		note("public NIC down", s.outage("public NIC of the active node down", fault, time.Minute, n2, "clean"))
		s.waitRunning(n2, 30*time.Second)
		// Two ways lead here: the peer reaches more ping targets for
		// timing.dead (n1 yields the role and stops the group cleanly), or
		// the VIP's monitor finds no carrier first (its restart fails, a
		// fatal start failure: n1 is ineligible until cleanup).
		st := s.waitFor(n1, "stopped, or failed on the VIP", 30*time.Second, func(st hanode.Status) bool {
			return st.Group.State.String() == "stopped" || st.Group.State.String() == "failed"
		})
		if err := n1.SetLink(NetPublic, true); err != nil {
			s.t.Fatal(err)
		}
		if st.Group.State.String() == "failed" {
			if !strings.Contains(st.Group.Reason, "carrier") {
				s.t.Fatalf("n1's group failed for another reason than the pulled cable: %s", st.Group.Reason)
			}
			s.t.Logf("moved by the VIP monitor (no carrier) before the ping targets decided: %s; cable back, the operator runs cleanup", st.Group.Reason)
			run(s.t, n1, "mirrorctl cleanup >/dev/null")
		} else {
			s.t.Logf("moved by the ping targets (n2 reaches more): n1 stopped the group cleanly and stays eligible")
		}
		s.waitFor(n1, "an eligible standby", 30*time.Second, func(st hanode.Status) bool {
			return st.Group.State.String() == "stopped" && st.Group.Eligible
		})
		if got := s.vipHolders(); !slices.Equal(got, []string{"n2"}) {
			s.t.Errorf("the VIP is answered by %v, want n2 alone", got)
		}
		s.t.Logf("%d acknowledged records on n2", s.checkRecords(n2))
	}) {
		return
	}

	if !s.phase(t, "frozen active node is fenced and stays out", func() {
		fault := time.Now()
		if err := n2.Freeze(); err != nil {
			s.t.Fatal(err)
		}
		thawed := false
		defer func() {
			if !thawed {
				n2.Thaw()
			}
		}()
		note("frozen", s.outage("active node frozen", fault, time.Minute, n1, "takeover"))
		s.waitRunning(n1, 30*time.Second)
		s.checkRecords(n1)
		// Let the new owner write a while before the old one wakes up.
		if _, err := s.client.waitAckAfter(time.Now().Add(time.Second), 10*time.Second); err != nil {
			s.t.Fatal(err)
		}
		thaw := time.Now()
		if err := n2.Thaw(); err != nil {
			s.t.Fatal(err)
		}
		thawed = true
		st := s.waitFor(n2, "fenced", time.Minute, func(st hanode.Status) bool {
			if st.Group.State.String() != "fenced" {
				return false
			}
			for _, r := range st.Group.Resources {
				if r.State.String() == "running" || r.State.String() == "stopping" {
					return false
				}
			}
			return true
		})
		s.t.Logf("n2 thawed: fenced and everything stopped after %v: %s", time.Since(thaw).Round(time.Millisecond), st.Group.Reason)
		// Nothing of the group is left on n2: no VIP, no mount, no app,
		// no NBD device; it learned it from a write refused by an array.
		out := run(s.t, n2, `ip -4 addr show public | grep -c `+storyVIP+`; grep -c ' /srv/data ' /proc/mounts; `+
			`kill -0 $(cat /run/seqd.pid 2>/dev/null) 2>/dev/null && echo app-runs; cat /sys/block/nbd0/size; `+
			`grep -c 'lab:a/1.*RESERVATION CONFLICT' /run/mirrord.log; grep -c 'lab:b/1.*RESERVATION CONFLICT' /run/mirrord.log; true`)
		f := strings.Fields(out)
		if len(f) != 5 || f[0] != "0" || f[1] != "0" || f[2] != "0" || f[3] == "0" || f[4] == "0" {
			s.t.Errorf("after being fenced n2 still holds part of the group, or was not refused by both arrays "+
				"(VIP count, /srv/data mounts, nbd0 size, conflicts from array a, from array b in its log): %q", out)
		}
		if got := s.vipHolders(); !slices.Equal(got, []string{"n1"}) {
			s.t.Errorf("the VIP is answered by %v, want n1 alone", got)
		}
		if _, err := s.client.waitAckAfter(time.Now(), 10*time.Second); err != nil {
			s.t.Errorf("after the thaw: %v", err)
		}
		s.t.Logf("%d acknowledged records on n1", s.checkRecords(n1))
		s.checkFencedOff(n1, n2)

		run(s.t, n2, "mirrorctl cleanup >/dev/null && dmesg -c >/dev/null") // its fenced I/O errors are expected
		s.waitFor(n2, "back as a standby", time.Minute, func(st hanode.Status) bool {
			return st.Group.State.String() == "stopped" && st.Group.Eligible
		})
		s.waitRunning(n1, 10*time.Second)
	}) {
		return
	}

	s.phase(t, "killed active node loses no acknowledged record", func() {
		fault := time.Now()
		n1.Stop()
		note("killed", s.outage("active node killed", fault, 90*time.Second, n2, "takeover"))
		s.waitRunning(n2, 30*time.Second)
		if got := s.vipHolders(); !slices.Equal(got, []string{"n2"}) {
			s.t.Errorf("the VIP is answered by %v, want n2", got)
		}
		s.t.Logf("%d acknowledged records on n2", s.checkRecords(n2))
		s.checkFencedOff(n2, n1)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if res, err := n2.Run(ctx, "dmesg | grep -i -e 'EXT4-fs error' -e 'I/O error' -e 'Buffer I/O'"); err == nil && res.Exit == 0 {
			s.t.Errorf("the kernel of n2 reported errors on the volume:\n%s", res.Stdout)
		}
	})
	t.Logf("outages seen by the client: %s; the story took %v (shared box: figures are noisy)",
		strings.Join(outages, ", "), time.Since(begin).Round(time.Second))
}

// phase runs f as subtest name with s.t set to the subtest; it reports
// whether the subtest passed.
func (s *story) phase(t *testing.T, name string, f func()) bool {
	return t.Run(name, func(t *testing.T) {
		parent := s.t
		s.t = t
		defer func() { s.t = parent }()
		f()
	})
}
