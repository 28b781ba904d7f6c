package lab

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/resources/fence"
	hanode "github.com/hamirror/hamirror/resources/node"
)

// The failover story's cluster: VMs n1 and n2 run mirrord --config with
// heartbeats on both private NICs, the UART between them (ttyS1) and a
// disk slot on each array; two tgtd arrays (one tgtd each, so one can fail
// alone) hold the legs; the volume is /dev/nbd0 with ext4 mounted at
// /srv/data; the VIP is on the public NIC; the app (labagent seqd) takes
// sequence numbers on VIP:7000 and appends each, fsynced, to /srv/data/seq.
const (
	storyVIP     = "10.77.1.100"
	storyAppPort = "7000"
	storyConfig  = "/etc/hamirror/cluster.yaml"
	storyCluster = "vmstory"
)

// storyYAML is both nodes' cluster file: the documented defaults
// (keepalive, mmp_interval, monitor intervals but the app's) with a ping
// target on the public network (the lab namespace's own address) and
// metrics, read for the takeover breakdown. TCG VMs on a shared CI box
// stall for seconds at times (measured here: 3.8 s at a load of 20 on 2
// cores), so the story gives death (timing.dead 4s) and a silent array
// (volume.io_timeout 10s) twice the defaults' time: a stall must not be
// taken for the fault under test. The outages logged include that.
func storyYAML(l *Lab, legA, legB string) string {
	var nodes strings.Builder
	for _, n := range l.Nodes() {
		fmt.Fprintf(&nodes, `  - id: %s
    address: %s
    serial: /dev/ttyS1
    links:
      - {medium: nic1, interface: priv1, address: %s}
      - {medium: nic2, interface: priv2, address: %s}
`, n.Name, n.Addr(NetPublic), n.Addr(NetPriv1), n.Addr(NetPriv2))
	}
	return fmt.Sprintf(`cluster:
  name: %[8]s
  key_file: /etc/hamirror/cluster.key
  preferred: %[1]s
timing: {keepalive: 200ms, warn: 2s, dead: 4s, initdead: 20s}
nodes:
%[2]sdisks:
  - {name: disk-a, leg: "%[3]s"}
  - {name: disk-b, leg: "%[4]s"}
ping:
  targets: [%[5]s]
  interval: 1s
volume:
  legs: ["%[3]s", "%[4]s"]
  device: /dev/nbd0
  link: /run/hamirror/volume
  io_timeout: 10s
resources:
  - name: data
    type: filesystem
    device: /run/hamirror/volume
    directory: /srv/data
    fstype: ext4
    fsck: auto
  - name: vip
    type: vip
    address: %[6]s/24
    interface: public
  - name: app
    type: exec
    start: "rm -f /run/seqd.pid; labagent seqd -listen :%[7]s -file /srv/data/seq -pidfile /run/seqd.pid >>/run/seqd.log 2>&1 </dev/null &"
    stop: "kill $(cat /run/seqd.pid)"
    monitor: "kill -0 $(cat /run/seqd.pid 2>/dev/null) 2>/dev/null || exit 7"
    monitor_interval: 2s
metrics:
  listen: 127.0.0.1:9105
`, l.Nodes()[0].Name, nodes.String(), legA, legB, ClientAddr(NetPublic), storyVIP, storyAppPort, storyCluster)
}

// story is the running failover story: the lab, its arrays and the client.
type story struct {
	t      *testing.T
	lab    *Lab
	arrays []*Arrays
	client *seqClient
}

// newStory boots two VMs, starts one tgtd per array, makes the volume
// and its ext4 from n1 (mirrorctl create, mirrord volume, mkfs), starts
// mirrord --config on both nodes and waits for n1 (preferred) to run the
// group; then the client starts.
func newStory(t *testing.T) *story {
	t.Helper()
	if testing.Short() {
		t.Skip("QEMU lab skipped in -short mode")
	}
	if err := Prerequisites(); err != nil {
		t.Fatalf("QEMU failover story: %v", err)
	}
	if _, err := exec.LookPath("tgtd"); err != nil {
		t.Fatal("QEMU failover story: tgtd not installed (make deps: apt package tgt)")
	}
	dir, err := os.MkdirTemp("", "hmstory-") // short: QEMU's unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	begin := time.Now()
	l, err := Start(ctx, Config{
		Dir:      dir,
		Nodes:    []NodeConfig{{Name: "n1"}, {Name: "n2"}},
		Deadline: time.Now().Add(10 * time.Minute),
		Logf:     t.Logf,
	})
	if err != nil {
		t.Fatalf("starting the story's lab: %v (logs in %s)", err, dir)
	}
	s := &story{t: t, lab: l}
	t.Cleanup(func() { s.close(dir) })
	t.Logf("2 VMs booted in %v", time.Since(begin).Round(time.Millisecond))
	for i, name := range []string{"a", "b"} {
		a, err := l.StartArraysOn(ctx, ArrayPortalPort(3261+i), 128<<20, name)
		if err != nil {
			t.Fatal(err)
		}
		s.arrays = append(s.arrays, a)
	}
	legA, legB := s.arrays[0].URL("a"), s.arrays[1].URL("b")
	n1 := l.Nodes()[0]
	run(t, n1, fmt.Sprintf("mirrorctl create %s %s >/dev/null", legA, legB))
	run(t, n1, MirrordStartFlags("", legA, legB))
	run(t, n1, "mkfs.ext4 -q /dev/nbd0")
	run(t, n1, MirrordStop)
	t.Logf("volume made and formatted (%v since boot began)", time.Since(begin).Round(time.Millisecond))

	key := make([]byte, 32)
	rand.Read(key)
	cfg := storyYAML(l, legA, legB)
	for _, n := range l.Nodes() {
		if err := n.Put(ctx, "/etc/hamirror/cluster.key", []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := n.Put(ctx, storyConfig, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		run(t, n, "mkdir -p /var/lib/hamirror && mirrorctl config check "+storyConfig+" --node "+n.Name+" >/dev/null")
	}
	for _, n := range l.Nodes() { // both at once, as after a power-up
		run(t, n, "mirrord --config "+storyConfig+" >>/run/mirrord.log 2>&1 </dev/null &")
	}
	s.waitRunning(n1, 2*time.Minute)
	t.Logf("the group runs on %s, %v after boot began", n1.Name, time.Since(begin).Round(time.Millisecond))
	s.client = startSeqClient(l, storyVIP+":"+storyAppPort)
	if _, err := s.client.waitAckAfter(time.Time{}, 30*time.Second); err != nil {
		t.Fatalf("the client cannot reach the app through the VIP: %v", err)
	}
	return s
}

// close stops the client, dumps the nodes' logs if the test failed, and
// tears the lab down.
func (s *story) close(dir string) {
	if s.client != nil {
		s.client.stop()
	}
	if s.t.Failed() {
		for _, n := range s.lab.Nodes() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, err := n.Run(ctx, "tail -60 /run/mirrord.log; echo ---; cat /run/seqd.log; echo ---; dmesg | tail -15")
			cancel()
			if err == nil {
				s.t.Logf("mirrord log, seqd log and dmesg of %s:\n%s", n.Name, res.Output())
			}
			s.t.Logf("console of %s:\n%s", n.Name, tail(n.ConsoleLog(), 30))
		}
	}
	s.lab.Close()
	for _, a := range s.arrays {
		a.Stop()
	}
	if s.t.Failed() {
		s.t.Logf("story lab logs kept in %s", dir)
	} else {
		os.RemoveAll(dir)
	}
}

// status is node n's `mirrorctl status --json`.
func (s *story) status(n *Node) (hanode.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := n.Run(ctx, "mirrorctl status --json")
	if err != nil {
		return hanode.Status{}, err
	}
	if res.Exit != 0 && res.Exit != 2 { // 2: something needs attention (not running here, a peer down...)
		return hanode.Status{}, res.Err()
	}
	var st hanode.Status
	if err := json.Unmarshal([]byte(res.Stdout), &st); err != nil {
		return st, fmt.Errorf("status of %s: %w\n%s", n.Name, err, res.Stdout)
	}
	return st, nil
}

// waitFor polls n's status until ok says so, for at most d.
func (s *story) waitFor(n *Node, what string, d time.Duration, ok func(hanode.Status) bool) hanode.Status {
	s.t.Helper()
	var last string
	for end := time.Now().Add(d); ; time.Sleep(250 * time.Millisecond) {
		st, err := s.status(n)
		if err == nil && ok(st) {
			return st
		}
		last = fmt.Sprintf("group %s (%s), volume %v, error %v", st.Group.State, st.Group.Reason, st.Volume != nil, err)
		if time.Now().After(end) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			res, _ := n.Run(ctx, "mirrorctl status")
			cancel()
			s.t.Fatalf("%s: not %s within %v; last: %s\n%s", n.Name, what, d, last, res.Output())
		}
	}
}

// waitRunning waits until the group runs on n with every resource running.
func (s *story) waitRunning(n *Node, d time.Duration) hanode.Status {
	s.t.Helper()
	return s.waitFor(n, "running the group", d, func(st hanode.Status) bool {
		if st.Group.State.String() != "running" {
			return false
		}
		for _, r := range st.Group.Resources {
			if r.State.String() != "running" {
				return false
			}
		}
		return true
	})
}

var macRe = regexp.MustCompile(`reply from [0-9.]+ \[([0-9a-fA-F:]{17})\]`)

// vipHolders asks on the public network who answers ARP for the VIP
// (three requests) and returns the names of the nodes that answered.
func (s *story) vipHolders() []string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _ := s.lab.Client(ctx, "busybox", "arping", "-c", "3", "-w", "3", "-I", "br-"+string(NetPublic), storyVIP)
	var names []string
	for _, m := range macRe.FindAllStringSubmatch(out, -1) {
		name := strings.ToLower(m[1])
		for _, n := range s.lab.Nodes() {
			if n.MAC(NetPublic) == name {
				name = n.Name
			}
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// checkRecords fails the test unless n's /srv/data/seq holds every number
// the client saw acknowledged; it returns how many that was.
func (s *story) checkRecords(n *Node) int {
	s.t.Helper()
	acked := s.client.acked()
	content := run(s.t, n, "cat /srv/data/seq")
	if lost := missing(acked, content); len(lost) > 0 {
		s.t.Fatalf("%d of %d acknowledged records are not on the volume %s mounted (first: %v)", len(lost), len(acked), n.Name, lost[:min(len(lost), 10)])
	}
	return len(acked)
}

// checkFencedOff fails the test unless each array holds the reservation
// for winner with loser's key gone (mirrorctl iscsi info, run on winner):
// the loser can never write again until it registers anew.
func (s *story) checkFencedOff(winner, loser *Node) {
	s.t.Helper()
	wk := fmt.Sprintf("0x%016x", fence.DeriveKey(storyCluster, winner.Name))
	lk := fmt.Sprintf("0x%016x", fence.DeriveKey(storyCluster, loser.Name))
	for i, a := range s.arrays {
		url := a.URL(a.names[0])
		out := run(s.t, winner, "mirrorctl iscsi info "+url+" | grep '^pr keys:'")
		if !strings.Contains(out, "held by "+wk) || strings.Contains(out, lk) {
			s.t.Errorf("array %d after %s fenced %s: want the reservation held by %s and no key %s: %s", i, winner.Name, loser.Name, wk, lk, out)
		}
	}
}

// breakdown is the last group start of kind on n as its metrics show it
// (the fence of the peer and each resource's start), for the log.
func (s *story) breakdown(n *Node, kind string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := n.Run(ctx, "wget -qO- http://127.0.0.1:9105/metrics | grep -e '^hamirror_group_start_last_phase_seconds{kind=\""+kind+"\"' -e '^hamirror_group_start_last_duration_seconds{kind=\""+kind+"\"'")
	if err != nil || res.Exit != 0 {
		return "(no metrics)"
	}
	return strings.TrimSpace(res.Stdout)
}

// outage measures what the client saw of a fault injected at fault: from
// its last acknowledgement before to its first after (waiting up to d),
// and logs it with the new owner's start breakdown.
func (s *story) outage(what string, fault time.Time, d time.Duration, owner *Node, kind string) time.Duration {
	s.t.Helper()
	first, err := s.client.waitAckAfter(fault, d)
	if err != nil {
		s.t.Fatalf("%s: %v", what, err)
	}
	last := s.client.lastAckBefore(fault)
	out := first.Sub(last)
	s.t.Logf("OUTAGE %s: %v seen by the client (last acknowledgement %v before the fault, first %v after); %s's %s start:\n%s",
		what, out.Round(time.Millisecond), fault.Sub(last).Round(time.Millisecond), first.Sub(fault).Round(time.Millisecond),
		owner.Name, kind, s.breakdown(owner, kind))
	return out
}
