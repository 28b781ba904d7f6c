package resources

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// driver runs one Group by hand: operations are answered OK at once
// unless held.
type driver struct {
	t    *testing.T
	g    *Group
	now  time.Time
	held []Effect
	hold func(Effect) bool
	seen []Effect
}

func newDriver(t *testing.T) *driver {
	c := DefaultConfig()
	for _, s := range []string{"fence", "volume", "fs:filesystem", "vip", "db:postgresql"} {
		name, typ, ok := strings.Cut(s, ":")
		if !ok {
			typ = name
		}
		r, _ := DefaultResource(name, typ)
		c.Resources = append(c.Resources, r)
	}
	d := &driver{t: t, now: time.Unix(1_700_000_000, 0), hold: func(Effect) bool { return false }}
	g, err := New(c, "n1", Options{Peers: []heartbeat.NodeID{"n2"}}, d.now)
	if err != nil {
		t.Fatal(err)
	}
	d.g = g
	d.drain()
	return d
}

func (d *driver) drain() {
	ok := drainEffects(d.g, func(e Effect) {
		d.seen = append(d.seen, e)
		switch e.Kind {
		case EffectFence, EffectStart, EffectStop, EffectMonitor, EffectStopAllNow:
			if d.hold(e) {
				d.held = append(d.held, e)
			} else {
				d.g.Done(d.now, Result{Op: e.Op})
			}
		}
	})
	if !ok {
		d.t.Fatal("effects never stop")
	}
}

// run brings the group up with a dead peer.
func (d *driver) run() {
	d.g.Membership(d.now, View{Role: heartbeat.RoleActive, Peers: []PeerView{{ID: "n2", State: heartbeat.NodeDead}}})
	d.drain()
	if s := d.g.Status().State; s != GroupRunning {
		d.t.Fatalf("group %s, want running", s)
	}
}

func (d *driver) last(kind EffectKind) (Effect, bool) {
	for i := len(d.seen) - 1; i >= 0; i-- {
		if d.seen[i].Kind == kind {
			return d.seen[i], true
		}
	}
	return Effect{}, false
}

func (d *driver) saw(msg string) bool {
	return slices.ContainsFunc(d.seen, func(e Effect) bool { return strings.Contains(e.Msg, msg) })
}

func TestStatusJSON(t *testing.T) {
	d := newDriver(t)
	d.run()
	d.now = d.now.Add(11 * time.Second)
	d.hold = func(e Effect) bool { return e.Kind == EffectMonitor && e.Resource == "db" }
	d.g.Tick(d.now)
	d.drain()
	d.g.Done(d.now, Result{Op: d.held[0].Op, Outcome: Failed, Err: "connection refused"})
	d.drain()
	st := d.g.Status()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"state":"running"`, `"name":"db","type":"postgresql","state":"running","failures":1,"last_error":"monitor failed: connection refused"`, `"role":"active"`, `"migration_threshold":3`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("status JSON lacks %s:\n%s", want, b)
		}
	}
	var back Status
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("mirrorctl cannot read it back: %v", err)
	}
	if !reflect.DeepEqual(normal(back), normal(st)) {
		t.Errorf("JSON round trip:\n got %+v\nwant %+v", back, st)
	}
	if st.Resources[4].LastMonitor != d.now {
		t.Errorf("db last monitored %v, want %v", st.Resources[4].LastMonitor, d.now)
	}
}

// normal drops the monotonic clock reading and location for comparison.
func normal(s Status) Status {
	s.Resources = slices.Clone(s.Resources)
	for i := range s.Resources {
		s.Resources[i].LastMonitor = s.Resources[i].LastMonitor.UTC().Round(0)
	}
	return s
}

func TestResultOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Outcome
	}{
		{nil, OK},
		{fmt.Errorf("pg_ctl: %w", ErrNotRunning), NotRunning},
		{fmt.Errorf("assemble: %w", context.DeadlineExceeded), TimedOut},
		{fmt.Errorf("write: %w: %w", ErrFenced, fmt.Errorf("leg 0")), Fenced},
		{fmt.Errorf("mount: exit status 32"), Failed},
	} {
		r := ResultOf(7, tc.err)
		if r.Op != 7 || r.Outcome != tc.want || (tc.err != nil) != (r.Err != "") {
			t.Errorf("ResultOf(%v) = %+v, want %v", tc.err, r, tc.want)
		}
	}
}

// The volume knowledge and the ack are published as soon as they change.
func TestVolumeKnowledgeIsPublished(t *testing.T) {
	d := newDriver(t)
	k := VolumeKnowledge{Seq: 4, Generation: 0xabc, Events: 99, LegStates: [2]LegState{LegInSync, LegFailed}}
	d.g.SetVolume(d.now, k)
	d.drain()
	e, ok := d.last(EffectPublish)
	if !ok || e.App.Volume != k {
		t.Fatalf("published %+v, want volume %+v", e.App, k)
	}
	if a, err := UnmarshalAppState(e.Data); err != nil || a.Volume != k {
		t.Fatalf("published bytes decode to %+v (%v)", a, err)
	}
	d.g.SetAck(d.now, 12)
	d.drain()
	if e, _ = d.last(EffectPublish); e.App.Ack != 12 {
		t.Errorf("ack published %d, want 12", e.App.Ack)
	}
	n := len(d.seen)
	d.g.SetAck(d.now, 12)
	d.drain()
	if len(d.seen) != n {
		t.Errorf("an unchanged state was published again: %v", d.seen[n:])
	}
}

// A peer whose app blob cannot be decoded counts as unknown: an alive
// peer with an unreadable state is waited for, never assumed stopped.
func TestUnreadablePeerStateIsWaitedFor(t *testing.T) {
	d := newDriver(t)
	d.g.Membership(d.now, View{Role: heartbeat.RoleActive, Peers: []PeerView{{ID: "n2", State: heartbeat.NodeAlive, Role: heartbeat.RoleStandby, App: []byte("HG\x09garbage")}}})
	d.drain()
	if !d.saw("the group state n2 publishes cannot be read") {
		t.Errorf("no log about the unreadable state")
	}
	if _, started := d.last(EffectStart); started {
		t.Fatal("started the group while the peer's state is unreadable")
	}
	if w := d.g.Status().Waiting; !strings.Contains(w, "n2 is alive and has published no group state yet") {
		t.Errorf("waiting = %q", w)
	}
	stopped, _ := AppState{State: GroupStopped, Eligible: true}.Marshal()
	d.g.Membership(d.now, View{Role: heartbeat.RoleActive, Peers: []PeerView{{ID: "n2", State: heartbeat.NodeAlive, Role: heartbeat.RoleStandby, App: stopped}}})
	d.drain()
	if s := d.g.Status().State; s != GroupRunning {
		t.Errorf("group %s once the peer's state is readable and stopped, want running", s)
	}
	if _, fenced := d.last(EffectFence); fenced {
		t.Error("fenced an alive, cleanly stopped peer")
	}
}

// Cleanup cannot end the fenced state while everything is still being
// stopped; afterwards it does and re-registers.
func TestCleanupWhileFencedStopIsRunning(t *testing.T) {
	d := newDriver(t)
	d.run()
	d.hold = func(e Effect) bool { return e.Kind == EffectStopAllNow }
	d.g.Fenced(d.now, "RESERVATION CONFLICT")
	d.drain()
	if d.g.Idle() {
		t.Error("idle while stopping everything")
	}
	if err := d.g.Cleanup(d.now, ""); err == nil || !strings.Contains(err.Error(), "still stopping everything") {
		t.Fatalf("cleanup during the stop: %v", err)
	}
	d.g.Done(d.now, Result{Op: d.held[0].Op})
	d.drain()
	if st := d.g.Status(); st.State != GroupFenced || st.Eligible || !strings.Contains(st.Reason, "RESERVATION CONFLICT") {
		t.Fatalf("status %+v, want fenced, ineligible, with the reason", st)
	}
	if !d.g.Idle() {
		t.Error("not idle once fenced and stopped")
	}
	if err := d.g.Cleanup(d.now, ""); err != nil {
		t.Fatal(err)
	}
	d.drain()
	if _, ok := d.last(EffectReregister); !ok {
		t.Error("cleanup of the fenced state did not re-register")
	}
	if e, _ := d.last(EffectSetEligible); !e.Eligible {
		t.Error("not eligible after cleanup")
	}
}

// A peer that membership leaves out of a view counts as unknown: it is
// fenced before the group starts, never assumed stopped.
func TestPeerLeftOutIsUnknown(t *testing.T) {
	d := newDriver(t)
	d.g.Membership(d.now, View{Role: heartbeat.RoleActive, Peers: []PeerView{{ID: "n3", State: heartbeat.NodeAlive}}})
	d.drain()
	if !d.saw("membership reports n3, which is not a configured peer") {
		t.Error("no alarm about a stranger in the view")
	}
	if e, ok := d.last(EffectFence); !ok || joinIDs(e.Victims) != "n2" {
		t.Errorf("fence %v (%v), want n2 fenced first", e.Victims, ok)
	}
	for _, bad := range []Options{{}, {Peers: []heartbeat.NodeID{"n1"}}, {Peers: []heartbeat.NodeID{"n2", "n2"}}} {
		if _, err := New(d.g.cfg, "n1", bad, d.now); err == nil {
			t.Errorf("New accepted peers %v", bad.Peers)
		}
	}
}

// Refused commands change nothing.
func TestRefusedCommands(t *testing.T) {
	d := newDriver(t)
	if err := d.g.Move(d.now); err == nil {
		t.Error("move accepted on a node that does not run the group")
	}
	d.run()
	if err := d.g.Move(d.now); err == nil || !strings.Contains(err.Error(), "n2 is dead") {
		t.Errorf("move with a dead peer: %v", err)
	}
	if err := d.g.Restart(d.now, "nope"); err == nil {
		t.Error("restart of an unknown resource accepted")
	}
	d.drain()
	if st := d.g.Status(); st.State != GroupRunning || !st.Eligible || st.Moving {
		t.Errorf("status after refusals %+v", st)
	}
}

// Volume knowledge the node hands over can never stop the group state
// from being published: knowledge that cannot be encoded (a leg state the
// codec does not know) and knowledge older than what is published (two
// SetVolume calls delivered out of order) are refused with an alarm; the
// newest good knowledge stays published and later state changes go out.
func TestBadVolumeKnowledgeDoesNotFreezeThePublishedState(t *testing.T) {
	d := newDriver(t)
	d.run()
	good := VolumeKnowledge{Seq: 5, Generation: 7, LegStates: [2]LegState{LegInSync, LegInSync}}
	d.g.SetVolume(d.now, good)
	d.drain()
	d.g.SetVolume(d.now, VolumeKnowledge{Seq: 6, Generation: 8, LegStates: [2]LegState{LegInSync, legStateMax + 1}})
	d.drain()
	d.g.Fenced(d.now, "RESERVATION CONFLICT")
	d.drain()
	if e, ok := d.last(EffectPublish); !ok || e.App.State != GroupFenced || e.App.Volume != good {
		t.Fatalf("after unencodable knowledge, last published %+v; want fenced with the knowledge of Seq 5", e.App)
	}
	if d.saw("cannot encode") || !d.saw("leg state") {
		t.Error("unencodable knowledge was not refused with an alarm naming the leg state")
	}
	d.g.SetVolume(d.now, VolumeKnowledge{Seq: 4, Generation: 6, LegStates: [2]LegState{LegInSync, LegFailed}})
	d.drain()
	if e, _ := d.last(EffectPublish); e.App.Volume != good {
		t.Fatalf("older knowledge (Seq 4) replaced Seq 5: published %+v", e.App.Volume)
	}
	if !d.saw("older") {
		t.Error("no alarm about the older knowledge")
	}
}

// A peer this node fenced counts as a zombie (this node keeps the group
// while it claims the active role) until it is seen clean and not
// claiming the role, or restarted: its app state gone from the view, then
// back, and no claim of the active role (its new run may be yielding to
// this node right now: forgetting it then would stop the group here).
func TestRestartedPeerIsForgotten(t *testing.T) {
	d := newDriver(t)
	d.run() // n2 dead: fenced, then the group started
	app := func(s GroupState) []byte {
		b, err := AppState{State: s, Eligible: true}.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	view := func(role heartbeat.Role, b []byte) {
		t.Helper()
		from := len(d.seen)
		self := heartbeat.RoleActive // membership: whoever the peer leaves the role to
		if role == heartbeat.RoleActive {
			self = heartbeat.RoleStandby
		}
		d.g.Membership(d.now, View{Role: self, Peers: []PeerView{{ID: "n2", State: heartbeat.NodeAlive, Role: role, App: b}}})
		d.drain()
		if slices.ContainsFunc(d.seen[from:], func(e Effect) bool { return e.Kind == EffectStop }) {
			t.Fatalf("stopped the group (peer %s, app %v):%s", role, b, listEffects(d.seen[from:]))
		}
	}
	view(heartbeat.RoleActive, app(GroupRunning)) // the zombie thaws
	if !d.saw("n2 claims the active role but this node fenced it") {
		t.Error("no alarm about the zombie")
	}
	view(heartbeat.RoleNone, nil)                  // it restarted
	view(heartbeat.RoleActive, app(GroupStopping)) // elected in its new run, then...
	view(heartbeat.RoleStandby, app(GroupStopping))
	if !d.saw("n2 restarted: its mirrord registered its key again") {
		t.Error("the restarted peer is still counted as fenced")
	}
	from := len(d.seen)
	d.g.Membership(d.now, View{Role: heartbeat.RoleStandby, Peers: []PeerView{{ID: "n2", State: heartbeat.NodeAlive, Role: heartbeat.RoleActive, App: app(GroupStopped)}}})
	d.drain()
	if !slices.ContainsFunc(d.seen[from:], func(e Effect) bool { return e.Kind == EffectStop }) {
		t.Errorf("the group does not stop for the restarted peer, elected active:%s", listEffects(d.seen[from:]))
	}
}

// An agent's error may hold anything (a command's output: newlines,
// terminal escapes): the reason published to the peer carries it without
// control characters, which the peer's decoder refuses.
func TestReasonIsPublishedPrintable(t *testing.T) {
	d := newDriver(t)
	d.run()
	d.hold = func(e Effect) bool { return e.Kind == EffectStop }
	if err := d.g.Standby(d.now, true); err != nil {
		t.Fatal(err)
	}
	d.drain()
	d.g.Done(d.now, Result{Op: d.held[0].Op, Outcome: Failed, Err: "pg_ctl: server does not shut down\n\x1b[2JHINT:\tretry"})
	d.drain()
	e, ok := d.last(EffectPublish)
	if !ok || e.App.State != GroupBlocked {
		t.Fatalf("published %+v, want blocked", e.App)
	}
	a, err := UnmarshalAppState(e.Data)
	if err != nil {
		t.Fatalf("the peer cannot read the published state: %v", err)
	}
	if !printable(a.Reason) || !strings.Contains(a.Reason, "pg_ctl: server does not shut down") {
		t.Errorf("reason %q: want the agent's error without control characters", a.Reason)
	}
}

// A clean standby peer counts as yielding only once it has heard this
// node's claim: over links slower than timing.warn both nodes may claim
// at once, each seeing the other's old standby (its term lags).
func TestStandbyWithAnOlderTermIsNotYielding(t *testing.T) {
	d := newDriver(t)
	stopped, err := AppState{State: GroupStopped, Eligible: true}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	started := func() bool {
		return slices.ContainsFunc(d.seen, func(e Effect) bool { return e.Kind == EffectStart || e.Kind == EffectFence })
	}
	view := func(peerTerm uint64) {
		d.now = d.now.Add(100 * time.Millisecond)
		d.g.Membership(d.now, View{Role: heartbeat.RoleActive, Term: 2,
			Peers: []PeerView{{ID: "n2", State: heartbeat.NodeAlive, Role: heartbeat.RoleStandby, Term: peerTerm, App: stopped}}})
		d.g.Tick(d.now)
		d.drain()
	}
	view(1)
	if started() {
		t.Fatalf("started while the peer's standby predates this node's claim:%s", listEffects(d.seen))
	}
	view(2)
	if !started() {
		t.Fatalf("did not start once the peer heard the claim:%s", listEffects(d.seen))
	}
}

// A peer that runs the group and gives up the active role (ipfail moves
// the role; it stays eligible) publishes "stopping" one heartbeat frame
// after its standby. This node, proposed active in between, must not
// yield to it as to a runner that keeps the group (it turned
// ineligible, the runner was the only candidate left and took the role
// back: in the lab the role and the group flapped every dead time). A
// runner that still runs after YieldGrace is yielded to.
func TestRunnerThatJustGaveUpTheRoleIsNotYieldedTo(t *testing.T) {
	d := newDriver(t)
	running, err := AppState{State: GroupRunning, Eligible: true}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	view := func(self, peer heartbeat.Role, after time.Duration) {
		d.now = d.now.Add(after)
		d.g.Membership(d.now, View{Role: self, Term: 2,
			Peers: []PeerView{{ID: "n2", State: heartbeat.NodeAlive, Role: peer, Term: 2, App: running}}})
		d.g.Tick(d.now)
		d.drain()
	}
	view(heartbeat.RoleStandby, heartbeat.RoleActive, 0)
	view(heartbeat.RoleActive, heartbeat.RoleStandby, 100*time.Millisecond)
	if d.saw("yielding to it") || !d.g.isEligible() {
		t.Fatalf("yielded to a runner that gave up the role %v ago:%s", 100*time.Millisecond, listEffects(d.seen))
	}
	view(heartbeat.RoleActive, heartbeat.RoleStandby, YieldGrace)
	if !d.saw("yielding to it") || d.g.isEligible() {
		t.Fatalf("did not yield to a runner that still runs %v after giving up the role:%s", YieldGrace, listEffects(d.seen))
	}
}
