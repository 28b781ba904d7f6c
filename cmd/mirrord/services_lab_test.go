package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/mlog"
	"github.com/hamirror/hamirror/heartbeat/registry"
	"github.com/hamirror/hamirror/heartbeat/services"
	"github.com/hamirror/hamirror/heartbeat/traffic"
	"github.com/hamirror/hamirror/testenv/hblab"
)

// svcLab is three real `mirrord services` processes, one per network
// namespace, joined by two private NICs (veths on bridges) that the test
// cuts and heals; nodes are killed with SIGKILL.
type svcLab struct {
	t        *testing.T
	lab      *hblab.Lab
	mirrord  string
	mirrorct string
	dir      string
	procs    map[string]*exec.Cmd
	logs     map[string]*bytes.Buffer
}

var svcNodes = []string{"n1", "n2", "n3"}

func newSvcLab(t *testing.T) *svcLab {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the services lab takes half a minute (make test runs it)")
	}
	if err := hblab.Available(); err != nil {
		t.Skipf("SKIPPED LOUDLY: netns lab unavailable: %v", err)
	}
	md, mc := binaries(t)
	lab, err := hblab.New(hblab.Options{Name: "svc", Nodes: 3, Preferred: "n1",
		// The heartbeat's defaults but a shorter initdead: tighter timings
		// make starved processes (make test runs QEMU beside this) look dead.
		Timing: heartbeat.Timing{Keepalive: 200 * time.Millisecond, Warn: time.Second, Dead: 2 * time.Second, InitDead: 3 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	s := &svcLab{t: t, lab: lab, mirrord: md, mirrorct: mc, dir: t.TempDir(), procs: map[string]*exec.Cmd{}, logs: map[string]*bytes.Buffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			for id := range s.procs {
				var st heartbeat.Status
				if err := control.Call(s.sock(id), "nodes", nil, &st); err == nil {
					for _, n := range st.Nodes {
						t.Logf("%s sees %s %s", id, n.ID, n.State)
					}
					t.Logf("%s refused frames: %+v", id, st.Rejected)
				}
			}
			for id := range s.procs {
				s.kill(id)
			}
			for id, b := range s.logs {
				t.Logf("---- %s ----\n%s", id, b.String())
			}
		}
		for id := range s.procs {
			s.kill(id)
		}
		lab.Close()
	})
	for _, id := range svcNodes {
		s.writeConfig(id)
	}
	return s
}

// writeConfig writes node id's cluster file: the lab's nodes and NICs, a
// state folder of its own, fast services timings, failback on.
func (s *svcLab) writeConfig(id string) {
	c := s.lab.Config
	var b strings.Builder
	fmt.Fprintf(&b, "cluster: {name: %s, key_file: %s, preferred: n1, state_dir: %s}\n", c.Cluster, c.KeyFile, filepath.Join(s.dir, id, "state"))
	fmt.Fprintf(&b, "timing: {keepalive: %v, warn: %v, dead: %v, initdead: %v}\nnodes:\n", c.Timing.Keepalive, c.Timing.Warn, c.Timing.Dead, c.Timing.InitDead)
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "  - id: %s\n    address: %s\n    links:\n", n.ID, n.Address)
		for _, l := range n.Links {
			fmt.Fprintf(&b, "      - {medium: %s, interface: %s, address: %s}\n", l.Medium, l.Interface, l.Address)
		}
	}
	b.WriteString("services: {log_timeout: 500ms, sync_interval: 1s, traffic_interval: 300ms, coordinator_failback: true, interfaces: [eth1, eth2]}\n")
	os.MkdirAll(filepath.Join(s.dir, id, "state"), 0o700)
	if err := os.WriteFile(s.cfgPath(id), []byte(b.String()), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

func (s *svcLab) cfgPath(id string) string { return filepath.Join(s.dir, id, "cluster.yaml") }
func (s *svcLab) sock(id string) string    { return "unix:" + filepath.Join(s.dir, id, "ctl.sock") }
func (s *svcLab) svcDir(id string) string  { return filepath.Join(s.dir, id, "state", "services") }

func (s *svcLab) start(id string) {
	s.t.Helper()
	cmd := exec.Command("ip", "netns", "exec", s.lab.Netns(id), s.mirrord, "services", "--config", s.cfgPath(id), "--node", id, "--control", s.sock(id))
	if s.logs[id] == nil {
		s.logs[id] = &bytes.Buffer{}
	}
	fmt.Fprintf(s.logs[id], "==== start %s\n", time.Now().Format("15:04:05.000"))
	cmd.Stdout, cmd.Stderr = s.logs[id], s.logs[id]
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.procs[id] = cmd
}

// kill SIGKILLs node id's mirrord and reaps it.
func (s *svcLab) kill(id string) {
	if p := s.procs[id]; p != nil {
		p.Process.Signal(syscall.SIGKILL)
		p.Wait()
		delete(s.procs, id)
	}
}

func (s *svcLab) cut(id string, cut bool) {
	for _, m := range []string{"nic1", "nic2"} {
		if err := s.lab.CutNIC(id, m, cut); err != nil {
			s.t.Fatal(err)
		}
	}
}

// note writes an operator's note on node id (mirrorctl log write).
func (s *svcLab) note(id, msg string) {
	s.t.Helper()
	var e mlog.Entry
	if err := control.Call(s.sock(id), "log-write", services.NoteArgs{Message: msg}, &e); err != nil {
		s.t.Fatalf("note on %s: %v", id, err)
	}
}

// notes writes a note on every node listed.
func (s *svcLab) notes(msg string, ids ...string) {
	for _, id := range ids {
		s.note(id, msg+" on "+id)
	}
}

func (s *svcLab) status(id string) (services.Status, error) {
	var st services.Status
	err := control.Call(s.sock(id), "services", nil, &st)
	return st, err
}

func (s *svcLab) eventually(timeout time.Duration, what string, ok func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logKeys returns node id's whole log as "node/seq" keys in time order,
// failing on a duplicate.
func (s *svcLab) logKeys(id string) ([]string, error) {
	var res mlog.Result
	if err := control.Call(s.sock(id), "log", mlog.Query{Limit: mlog.DefaultLimit}, &res); err != nil {
		return nil, err
	}
	var keys []string
	for _, e := range res.Entries {
		k := fmt.Sprintf("%s/%d", e.Node, e.Seq)
		if slices.Contains(keys, k) {
			s.t.Fatalf("%s's log holds %s twice", id, k)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, nil
}

// logsEqual waits until the running nodes' logs hold the same entries and
// no spool is left.
func (s *svcLab) logsEqual(timeout time.Duration, ids ...string) []string {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ref, why := s.logsDiffer(ids)
		if why == "" {
			return ref
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("logs of %s not equal after %v: %s", strings.Join(ids, ", "), timeout, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *svcLab) logsDiffer(ids []string) ([]string, string) {
	var ref []string
	for i, id := range ids {
		k, err := s.logKeys(id)
		if err != nil {
			return nil, err.Error()
		}
		if sp, _ := filepath.Glob(filepath.Join(s.svcDir(id), "mlog", "spool-*")); len(sp) > 0 {
			return nil, fmt.Sprintf("%s still has spools %v", id, sp)
		}
		if i == 0 {
			ref = k
			continue
		}
		if a, b := strings.Join(ref, " "), strings.Join(k, " "); a != b {
			return nil, fmt.Sprintf("%s and %s differ: only on %s: %v; only on %s: %v", ids[0], id, ids[0], minus(ref, k), id, minus(k, ref))
		}
	}
	return ref, ""
}

func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func (s *svcLab) table(id string) (services.Status, bool) {
	st, err := s.status(id)
	return st, err == nil
}

func (s *svcLab) mirrorctl(id string, args ...string) string {
	s.t.Helper()
	out, err := exec.Command(s.mirrorct, append([]string{"--control", s.sock(id)}, args...)...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("mirrorctl %v on %s: %v\n%s", args, id, err, out)
	}
	return string(out)
}

// TestServicesLab runs the cluster services' failure stories on three
// real processes in network namespaces.
func TestServicesLab(t *testing.T) {
	s := newSvcLab(t)
	for _, id := range svcNodes {
		s.start(id)
	}
	s.eventually(30*time.Second, "every node caught up with n1's table, all registered", func() bool {
		for _, id := range svcNodes {
			st, ok := s.table(id)
			if !ok || !st.CaughtUp || st.Table.Coordinator != "n1" || len(st.Table.Nodes) != 3 {
				return false
			}
			for _, n := range st.Table.Nodes {
				if n.Registered.IsZero() || n.State != heartbeat.Normal {
					return false
				}
			}
		}
		return true
	})
	start := len(s.logsEqual(10*time.Second, svcNodes...))
	t.Logf("logs equal after start: %d entries", start)

	// Cut and heal in several orders: entries are spooled on both sides
	// of each cut (every node logs the others' deaths) and exchanged.
	s.cut("n3", true)
	s.notes("n3 cut", svcNodes...)
	time.Sleep(3 * time.Second) // past timing.dead: deaths logged and spooled
	s.cut("n2", true)           // now everyone is alone
	s.notes("n2 and n3 cut", svcNodes...)
	time.Sleep(3 * time.Second)
	s.cut("n3", false)
	s.notes("n3 back, n2 cut", svcNodes...)
	time.Sleep(2 * time.Second)
	s.cut("n2", false)
	s.notes("all back", svcNodes...)
	afterCuts := len(s.logsEqual(20*time.Second, svcNodes...))
	if afterCuts <= start {
		t.Fatalf("the cuts left no entries (%d, then %d)", start, afterCuts)
	}
	t.Logf("logs equal after cuts and heals: %d entries", afterCuts)

	// SIGKILL in the middle of the spool exchange (a few rounds, killing
	// as soon as part of the exchange is done), then a torn last record.
	spools := func() (own, theirs int) {
		o, _ := filepath.Glob(filepath.Join(s.svcDir("n2"), "mlog", "spool-*"))
		for _, p := range []string{"n1", "n3"} {
			if _, err := os.Stat(filepath.Join(s.svcDir(p), "mlog", "spool-n2.log")); err == nil {
				theirs++
			}
		}
		return len(o), theirs
	}
	mid := 0
	for round := range 3 {
		s.cut("n2", true)
		s.notes(fmt.Sprintf("round %d, n2 cut", round), svcNodes...)
		s.eventually(10*time.Second, "spools on both sides of n2's cut", func() bool {
			o, th := spools()
			return o == 2 && th == 2
		})
		s.cut("n2", false)
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if o, th := spools(); o+th < 4 {
				if o+th > 0 {
					mid++
				}
				break
			}
			time.Sleep(500 * time.Microsecond)
		}
		s.kill("n2")
		if round < 2 {
			s.start("n2")
			s.logsEqual(30*time.Second, svcNodes...)
		}
	}
	t.Logf("n2 killed %d of 3 times with the exchange part done", mid)
	segs, _ := filepath.Glob(filepath.Join(s.svcDir("n2"), "mlog", "mlog-*.log"))
	slices.Sort(segs)
	last := segs[len(segs)-1]
	rec, _ := mlog.AppendRecord(nil, mlog.Entry{Node: "n2", Seq: 1 << 40, Time: time.Now(), Message: "torn"})
	f, _ := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(rec[:len(rec)-7])
	f.Close()
	s.start("n2")
	afterKill := s.logsEqual(30*time.Second, svcNodes...)
	for _, k := range afterKill {
		if strings.HasPrefix(k, fmt.Sprintf("n2/%d", uint64(1)<<40)) {
			t.Fatal("the torn record was parsed as an entry")
		}
	}
	t.Logf("logs equal after SIGKILL mid-exchange and a torn record: %d entries", len(afterKill))

	// A killed node's traffic data is served by its backup target, and the
	// node that backed up to it is re-assigned and re-sends everything.
	s.stable(30*time.Second, svcNodes...)
	st, _ := s.table("n1")
	n3target := string(rowOf(st, "n3").BackupTarget)
	var dependant string // the node that backs up to n3
	for _, n := range st.Table.Nodes {
		if n.BackupTarget == "n3" {
			dependant = string(n.ID)
		}
	}
	s.eventually(20*time.Second, n3target+" to hold n3's samples", func() bool {
		st, ok := s.table(n3target)
		return ok && st.Traffic["n3"] > 3
	})
	s.kill("n3")
	s.cut("n3", true)
	s.eventually(20*time.Second, "n3 Failed and "+dependant+" re-assigned", func() bool {
		st, ok := s.table(dependant)
		return ok && rowOf(st, "n3").State == heartbeat.Failed && rowOf(st, heartbeat.NodeID(dependant)).BackupTarget != "n3"
	})
	var ans traffic.Answer
	if err := control.Call(s.sock(dependant), "traffic", services.TrafficArgs{Node: "n3"}, &ans); err != nil {
		t.Fatal(err)
	}
	if ans.State != "Failed" || ans.Source != heartbeat.NodeID(n3target) || len(ans.Samples) == 0 {
		t.Fatalf("traffic of the killed n3: state %s from %s (its backup target is %s), %d samples", ans.State, ans.Source, n3target, len(ans.Samples))
	}
	out := s.mirrorctl(dependant, "traffic", "n3", "--limit", "2")
	if !strings.Contains(out, "state Failed") || !strings.Contains(out, "backup target "+n3target) || !strings.Contains(out, "eth1") {
		t.Errorf("mirrorctl traffic n3:\n%s", out)
	}
	s.twoCopies(20*time.Second, dependant)

	// n3 comes back and is Normal again.
	s.cut("n3", false)
	s.start("n3")
	s.stable(30*time.Second, svcNodes...)

	// Coordinator hand-over and catch-up: kill the coordinator; another
	// takes over with the full table; the old one returns, catches up (it
	// gets the log written while away) and, with coordinator_failback,
	// takes the role back (it ranks first: preferred).
	st, _ = s.table("n1")
	if st.Table.Coordinator != "n1" {
		t.Fatalf("coordinator %s, want the preferred n1 back", st.Table.Coordinator)
	}
	s.kill("n1")
	s.cut("n1", true)
	var term uint64
	var standby heartbeat.NodeID
	s.eventually(20*time.Second, "a standby takes over", func() bool {
		st, ok := s.table("n3")
		term, standby = st.Table.Term, st.Table.Coordinator
		return ok && standby != "n1" && rowOf(st, "n1").State == heartbeat.Failed && len(st.Table.Nodes) == 3
	})
	s.cut("n1", false)
	s.start("n1")
	s.eventually(30*time.Second, "n1 back as coordinator after catching up", func() bool {
		st, ok := s.table("n3")
		return ok && st.Table.Coordinator == "n1" && st.Table.Term > term
	})
	var res mlog.Result
	control.Call(s.sock("n1"), "log", mlog.Query{Node: standby}, &res)
	tookOver := false
	for _, e := range res.Entries {
		tookOver = tookOver || strings.Contains(e.Message, "took over the coordinator role")
	}
	if !tookOver {
		t.Errorf("the returning n1 did not catch up on %s's take-over entry", standby)
	}
	s.logsEqual(30*time.Second, svcNodes...)

	// A node removed for good: whoever backed up to it now backs up
	// elsewhere and that node holds all its data again.
	s.stable(30*time.Second, svcNodes...)
	st, _ = s.table("n1")
	for _, n := range st.Table.Nodes {
		if n.BackupTarget == "n3" {
			dependant = string(n.ID)
		}
	}
	out = s.mirrorctl(dependant, "node", "remove", "n3")
	if !strings.Contains(out, "n3 removed for good") {
		t.Errorf("mirrorctl node remove:\n%s", out)
	}
	s.kill("n3")
	s.eventually(20*time.Second, "n3 out of the table", func() bool {
		st, ok := s.table(dependant)
		return ok && len(st.Table.Nodes) == 2
	})
	s.twoCopies(20*time.Second, dependant)
	s.logsEqual(30*time.Second, "n1", "n2")
	out = s.mirrorctl("n1", "log", "--node", dependant, "--since", "1h")
	if !strings.Contains(out, "removed for good by the operator") {
		t.Errorf("mirrorctl log lacks the removal:\n%s", out)
	}
}

func rowOf(st services.Status, id heartbeat.NodeID) registry.Node {
	r, _ := st.Table.Row(id)
	return r
}

// stable waits until every node listed runs, is caught up, and sees the
// same table with every listed node Normal and registered.
func (s *svcLab) stable(timeout time.Duration, ids ...string) {
	s.t.Helper()
	why := ""
	deadline := time.Now().Add(timeout)
	for {
		why = s.unstable(ids)
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("no stable cluster of %s after %v: %s", strings.Join(ids, ", "), timeout, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *svcLab) unstable(ids []string) string {
	var ref registry.Table
	for i, id := range ids {
		st, err := s.status(id)
		if err != nil || !st.CaughtUp {
			return fmt.Sprintf("%s not caught up (%v)", id, err)
		}
		if i == 0 {
			ref = st.Table
		} else if st.Table.Term != ref.Term || st.Table.Version != ref.Version {
			return fmt.Sprintf("%s has table %d/%d, %s %d/%d", id, st.Table.Term, st.Table.Version, ids[0], ref.Term, ref.Version)
		}
		for _, x := range ids {
			if r := rowOf(st, heartbeat.NodeID(x)); r.State != heartbeat.Normal || r.Registered.IsZero() {
				return fmt.Sprintf("%s sees %s %s (registered %v), coordinator %s", id, x, r.State, r.Registered, st.Table.Coordinator)
			}
		}
	}
	return ""
}

// twoCopies waits until node id's backup target holds all its samples
// (the last few may be in flight) and is not id itself.
func (s *svcLab) twoCopies(timeout time.Duration, id string) {
	s.t.Helper()
	s.eventually(timeout, "two copies of "+id+"'s traffic data", func() bool {
		st, ok := s.table(id)
		target := rowOf(st, heartbeat.NodeID(id)).BackupTarget
		if !ok || target == "" || target == heartbeat.NodeID(id) {
			return false
		}
		tt, ok := s.table(string(target))
		return ok && tt.Traffic[heartbeat.NodeID(id)] > 0 && tt.Traffic[heartbeat.NodeID(id)]+3 >= st.Traffic[heartbeat.NodeID(id)]
	})
}
