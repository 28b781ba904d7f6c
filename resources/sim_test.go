package resources

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/testenv/scenario"
)

// sim drives the Group machines of two (or more) nodes on a fake clock,
// from the scripts in testdata/scenarios. It is a fake for a pure test:
//   - membership is a miniature of heartbeat's rules, not
//     heartbeat.Machine (whose own scenarios test the real thing): node
//     states from the silence of the network and of the disk slots
//     (alive, suspect, partitioned, dead, unknown within initdead), the
//     same election order (an active node stays active unless ineligible
//     or a better-ranked live node also claims it; nobody is elected
//     while a peer is suspect or unknown; the preferred node, then the
//     smallest ID, among eligible live nodes), and app blobs carried by
//     every beat, disk slots included; a peer's restart shows as its app
//     state gone for one step (its frames carry a new boot), then back;
//   - agents are in-memory resources that answer at once unless a script
//     holds, hangs or fails them;
//   - the array keeps only the registered keys and the reservation
//     holder: a fence preempts the victims' keys, a fenced node's disk
//     slot and volume writes fail (its volume reports Fenced), and its own
//     fence attempts get RESERVATION CONFLICT until it registers again
//     (mirrord's start, EffectReregister: carried out at once, in effect
//     order, like the node's synchronous Register; it fails like a fence
//     when `fail N fence` makes the arrays unreachable).
//
// Every decision is the real Group's. After every step the sim checks
// the invariant the whole design exists for: at most one node holds a
// running volume with a registered key (never two writers).
type sim struct {
	t         *testing.T
	where     string
	now       time.Time
	timing    heartbeat.Timing
	cfg       Config
	preferred heartbeat.NodeID
	order     []heartbeat.NodeID
	nodes     map[heartbeat.NodeID]*simNode
	cut       map[string]bool // "network", "disks"
	reg       map[heartbeat.NodeID]bool
	holder    heartbeat.NodeID
	shut      map[heartbeat.NodeID]bool // random histories: asked to shut down
}

type simNode struct {
	id         heartbeat.NodeID
	g          *Group
	up, frozen bool
	started    time.Time
	role       heartbeat.Role
	forced     *heartbeat.Role
	eligible   bool
	app        []byte
	heardNet   map[heartbeat.NodeID]time.Time
	heardDisk  map[heartbeat.NodeID]time.Time
	seenApp    map[heartbeat.NodeID][]byte
	seenRole   map[heartbeat.NodeID]heartbeat.Role
	seenElig   map[heartbeat.NodeID]bool
	res        map[string]*fakeRes
	pending    []Effect
	hold       map[string]bool // "fence", "start NAME", "stop NAME", "monitor NAME", "stop-all-now"
	hang       map[string]bool // same keys: never answered
	fenceFails bool
	effects    []Effect
	mark       int
	standby    bool // the persisted flag
	refused    string
	boot       int                      // counts the starts of mirrord
	seenBoot   map[heartbeat.NodeID]int // the boot of each peer's last frame
}

type fakeRes struct {
	typ                 string
	running             bool
	failStart, failStop int // next n starts/stops fail; -1: all
}

const simStep = 100 * time.Millisecond

func newSim(t *testing.T) *sim {
	return &sim{t: t, now: time.Unix(1_700_000_000, 0), timing: heartbeat.DefaultConfig().Timing, cfg: DefaultConfig(),
		nodes: map[heartbeat.NodeID]*simNode{}, cut: map[string]bool{}, reg: map[heartbeat.NodeID]bool{}}
}

func (s *sim) fatalf(format string, a ...any) {
	s.t.Helper()
	s.t.Fatalf("%s: "+format, append([]any{s.where}, a...)...)
}

func (s *sim) errorf(format string, a ...any) {
	s.t.Helper()
	s.t.Errorf("%s: "+format, append([]any{s.where}, a...)...)
}

func (s *sim) node(name string) *simNode {
	n := s.nodes[heartbeat.NodeID(name)]
	if n == nil {
		s.fatalf("no node %s", name)
	}
	return n
}

func (n *simNode) running() bool { return n.up && !n.frozen }

// start runs a new mirrord on id: a new Group, its key registered.
func (s *sim) start(id heartbeat.NodeID) {
	n := s.nodes[id]
	if n.up {
		s.fatalf("%s is already running", id)
	}
	var peers []heartbeat.NodeID
	for _, p := range s.order {
		if p != id {
			peers = append(peers, p)
		}
	}
	g, err := New(s.cfg, id, Options{Peers: peers, Standby: n.standby}, s.now)
	if err != nil {
		s.fatalf("New: %v", err)
	}
	n.g, n.up, n.frozen, n.started, n.role, n.app = g, true, false, s.now, heartbeat.RoleNone, nil
	n.heardNet, n.heardDisk = map[heartbeat.NodeID]time.Time{}, map[heartbeat.NodeID]time.Time{}
	n.seenApp, n.seenRole, n.seenElig = map[heartbeat.NodeID][]byte{}, map[heartbeat.NodeID]heartbeat.Role{}, map[heartbeat.NodeID]bool{}
	n.seenBoot = map[heartbeat.NodeID]int{}
	n.pending = nil
	n.boot++
	s.reg[id] = true // mirrord registers its key at start
	s.drain(n)
}

// step advances the clock by one step: beats, then each node's inputs.
func (s *sim) step() {
	s.now = s.now.Add(simStep)
	for _, a := range s.order {
		na := s.nodes[a]
		for _, b := range s.order {
			nb := s.nodes[b]
			if a == b || !na.running() || !nb.running() {
				continue
			}
			heard := false
			if !s.cut["network"] {
				nb.heardNet[a], heard = s.now, true
			}
			if !s.cut["disks"] && s.reg[a] { // a fenced node's slot writes fail
				nb.heardDisk[a], heard = s.now, true
			}
			switch {
			case !heard:
			case nb.seenBoot[a] != na.boot && nb.seenApp[a] != nil:
				// a new run: what b knew of a belonged to the old one;
				// a's beats count once a has echoed b's nonce (a step)
				nb.seenBoot[a] = na.boot
				nb.seenApp[a], nb.seenRole[a], nb.seenElig[a] = nil, heartbeat.RoleNone, false
			default:
				nb.seenBoot[a] = na.boot
				nb.seenApp[a], nb.seenRole[a], nb.seenElig[a] = na.app, na.role, na.eligible
			}
		}
	}
	for _, id := range s.order {
		n := s.nodes[id]
		if !n.running() {
			continue
		}
		if r := n.fake(TypeVolume); r != nil && r.running && !s.reg[id] {
			n.g.Fenced(s.now, "RESERVATION CONFLICT on a volume write")
		}
		s.decideRole(n)
		n.g.Membership(s.now, s.view(n))
		n.g.Tick(s.now)
		s.drain(n)
	}
	s.checkWriters()
}

// checkWriters: at most one node may hold a running volume with a
// registered key (a frozen node counts: it writes when it thaws).
func (s *sim) checkWriters() {
	var w []string
	for _, id := range s.order {
		n := s.nodes[id]
		if r := n.fake(TypeVolume); n.up && r != nil && r.running && s.reg[id] {
			w = append(w, string(id))
		}
	}
	if len(w) > 1 {
		s.fatalf("two writers: %v run the volume with registered keys", w)
	}
}

// checkGate: when n starts the first resource, every other node that
// still holds its key runs no resource of the group (or is down: the
// volume went with its mirrord). The arrays' reservation would stop a
// mistake at the fence resource; this catches it earlier. Unless n's own
// key is gone: then a peer that took over at the same moment registered
// again and fenced n after n's fence, and the arrays refuse n's start
// (two simultaneous takeovers: the arrays pick the winner).
func (s *sim) checkGate(n *simNode) {
	if !s.reg[n.id] {
		return
	}
	for _, id := range s.order {
		p := s.nodes[id]
		if id == n.id || !p.up || !s.reg[id] {
			continue
		}
		for name, r := range p.res {
			if r.running {
				s.fatalf("%s starts the group while %s, registered, runs %s (its group is %s)", n.id, id, name, p.g.Status().State)
			}
		}
	}
}

func (n *simNode) fake(typ string) *fakeRes {
	for _, r := range n.res {
		if r.typ == typ {
			return r
		}
	}
	return nil
}

func (s *sim) peerState(n *simNode, p heartbeat.NodeID) heartbeat.NodeState {
	t := s.timing
	fresh := func(at time.Time, d time.Duration) bool { return !at.IsZero() && s.now.Sub(at) < d }
	net, disk := n.heardNet[p], n.heardDisk[p]
	switch {
	case fresh(net, t.Warn):
		return heartbeat.NodeAlive
	case fresh(net, t.Dead):
		return heartbeat.NodeSuspect
	case fresh(disk, t.Dead):
		return heartbeat.NodePartitioned
	case net.IsZero() && disk.IsZero() && s.now.Sub(n.started) < t.InitDead:
		return heartbeat.NodeUnknown
	}
	return heartbeat.NodeDead
}

func (s *sim) ranks(a, b heartbeat.NodeID) bool {
	if (a == s.preferred) != (b == s.preferred) {
		return a == s.preferred
	}
	return a < b
}

// decideRole is the fake membership's election (see sim).
func (s *sim) decideRole(n *simNode) {
	if n.forced != nil {
		n.role = *n.forced
		return
	}
	var active []heartbeat.NodeID
	waiting := false
	for _, p := range s.order {
		if p == n.id {
			continue
		}
		st := s.peerState(n, p)
		if live(st) && n.seenRole[p] == heartbeat.RoleActive {
			active = append(active, p)
		}
		waiting = waiting || st == heartbeat.NodeSuspect || st == heartbeat.NodeUnknown
	}
	if n.role == heartbeat.RoleActive {
		if !n.eligible || slices.ContainsFunc(active, func(p heartbeat.NodeID) bool { return s.ranks(p, n.id) }) {
			n.role = heartbeat.RoleStandby
		}
		return
	}
	if len(active) > 0 {
		n.role = heartbeat.RoleStandby
		return
	}
	if waiting {
		return
	}
	var winner heartbeat.NodeID
	if n.eligible {
		winner = n.id
	}
	for _, p := range s.order {
		if p != n.id && live(s.peerState(n, p)) && n.seenElig[p] && (winner == "" || s.ranks(p, winner)) {
			winner = p
		}
	}
	if winner == n.id {
		n.role = heartbeat.RoleActive
	} else {
		n.role = heartbeat.RoleStandby
	}
}

func (s *sim) view(n *simNode) View {
	v := View{Role: n.role}
	for _, p := range s.order {
		if p == n.id {
			continue
		}
		pv := PeerView{ID: p, State: s.peerState(n, p), App: n.seenApp[p]}
		if live(pv.State) {
			pv.Role = n.seenRole[p]
		}
		v.Peers = append(v.Peers, pv)
	}
	return v
}

// drain carries out a node's effects until it has none left.
func (s *sim) drain(n *simNode) {
	ok := drainEffects(n.g, func(e Effect) {
		n.effects = append(n.effects, e)
		if testing.Verbose() {
			s.t.Logf("%s %v %s: %s", s.where, s.now.Format("15:04:05.0"), n.id, e)
		}
		s.apply(n, e)
	})
	if !ok {
		s.fatalf("%s: effects never stop", n.id)
	}
}

// drainEffects hands g's effects to each until g has none left; false if
// they never stop (a loop between the machine and its answers).
func drainEffects(g *Group, each func(Effect)) bool {
	for range 1000 {
		effs := g.Ready()
		if len(effs) == 0 {
			return true
		}
		for _, e := range effs {
			each(e)
		}
	}
	return false
}

func opKey(e Effect) string {
	switch e.Kind {
	case EffectFence:
		return "fence"
	case EffectStopAllNow:
		return "stop-all-now"
	}
	return strings.SplitN(e.String(), " ", 2)[0] + " " + e.Resource
}

func (s *sim) apply(n *simNode, e Effect) {
	switch e.Kind {
	case EffectFence, EffectStart, EffectStop, EffectMonitor, EffectStopAllNow:
		if e.Kind == EffectStart && e.Resource == s.cfg.Resources[0].Name {
			s.checkGate(n)
		}
		switch k := opKey(e); {
		case n.hang[k]:
		case n.hold[k]:
			n.pending = append(n.pending, e)
		default:
			n.g.Done(s.now, s.answer(n, e, OK))
		}
	case EffectSetEligible:
		n.eligible = e.Eligible
	case EffectPersist:
		n.standby = e.Standby
	case EffectPublish:
		got, err := UnmarshalAppState(e.Data)
		if err != nil || !reflect.DeepEqual(got, e.App) {
			s.fatalf("%s published %+v, which decodes to %+v (%v)", n.id, e.App, got, err)
		}
		if len(e.Data) > MaxAppStateBytes {
			s.fatalf("%s's app state is %d bytes", n.id, len(e.Data))
		}
		n.app = e.Data
	case EffectReregister:
		if !n.fenceFails { // unreachable arrays: the key stays as it was
			s.reg[n.id] = true
		}
	}
}

// answer carries out an operation on the fake agents and array. want is
// what the script asks for; OK means "what the fakes do".
func (s *sim) answer(n *simNode, e Effect, want Outcome) Result {
	r := Result{Op: e.Op, Outcome: want}
	if want != OK {
		r.Err = "simulated: " + want.String()
		return r
	}
	fail := func(o Outcome, msg string) Result { return Result{Op: e.Op, Outcome: o, Err: msg} }
	res := n.res[e.Resource]
	switch e.Kind {
	case EffectFence:
		switch {
		case !s.reg[n.id]:
			return fail(Fenced, "RESERVATION CONFLICT: this node's key is not registered")
		case n.fenceFails:
			return fail(Failed, "no array reachable")
		}
		for _, v := range e.Victims {
			s.reg[v] = false
		}
		s.holder = n.id
	case EffectStart:
		switch {
		case res.failStart != 0:
			if res.failStart > 0 {
				res.failStart--
			}
			return fail(Failed, "simulated start failure")
		case (res.typ == TypeFence || res.typ == TypeVolume) && !s.reg[n.id]:
			return fail(Fenced, "RESERVATION CONFLICT")
		case res.typ == TypeFence && s.holder != "" && s.holder != n.id && s.reg[s.holder]:
			return fail(Failed, "RESERVATION CONFLICT: "+string(s.holder)+" holds the reservation")
		case res.typ == TypeFence:
			s.holder = n.id
		}
		res.running = true
	case EffectStop:
		if res.failStop != 0 {
			if res.failStop > 0 {
				res.failStop--
			}
			return fail(Failed, "simulated stop failure")
		}
		res.running = false
		if res.typ == TypeFence && s.holder == n.id {
			s.holder = ""
		}
	case EffectMonitor:
		switch {
		case res.typ == TypeFence && res.running && !s.reg[n.id]:
			return fail(Fenced, "this node's key was preempted")
		case !res.running:
			return fail(NotRunning, "not running")
		}
	case EffectStopAllNow:
		for _, r := range n.res {
			r.running = false
		}
	}
	return r
}

func (s *sim) tick(d time.Duration) {
	for end := s.now.Add(d); s.now.Before(end); {
		s.step()
	}
}

func dur(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return d
}

// run executes one scenario line.
func (s *sim) run(a []string) {
	switch a[0] {
	case "cluster": // cluster N...: the first is preferred; default group
		for _, id := range a[1:] {
			s.order = append(s.order, heartbeat.NodeID(id))
			s.nodes[heartbeat.NodeID(id)] = &simNode{id: heartbeat.NodeID(id)}
		}
		s.preferred = s.order[0]
		s.resources([]string{"fence", "volume", "fs:filesystem", "vip", "db:postgresql"})
	case "preferred":
		s.preferred = heartbeat.NodeID(a[1])
	case "resources": // resources NAME[:TYPE]...
		s.resources(a[1:])
	case "config": // config KEY=VALUE...
		s.config(a[1:])
	case "start":
		for _, id := range a[1:] {
			s.start(heartbeat.NodeID(id))
		}
	case "kill", "crash", "exit": // power off / mirrord dies (the volume with it) / clean exit
		for _, id := range a[1:] {
			n := s.node(id)
			if a[0] == "exit" && !n.g.Idle() {
				s.errorf("%s exits while its group is %s", id, n.g.Status().State)
			}
			n.up = false
			for _, r := range n.res {
				if a[0] == "kill" || r.typ == TypeFence || r.typ == TypeVolume {
					r.running = false
				}
			}
		}
	case "freeze", "thaw":
		s.node(a[1]).frozen = a[0] == "freeze"
	case "cut", "heal":
		s.cut[a[1]] = a[0] == "cut"
	case "tick":
		s.tick(dur(a[1]))
	case "mark":
		for _, n := range s.nodes {
			n.mark = len(n.effects)
		}
	case "hold", "release", "hang", "unhang": // hold N KEY...: answers wait for `agent`; hang: never come
		n := s.node(a[1])
		key := strings.Join(a[2:], " ")
		switch a[0] {
		case "hang", "unhang":
			n.hang = setKey(n.hang, key, a[0] == "hang")
		default:
			n.hold = setKey(n.hold, key, a[0] == "hold")
		}
	case "agent": // agent N KEY... OUTCOME: answer the oldest held operation
		n := s.node(a[1])
		key, want := strings.Join(a[2:len(a)-1], " "), a[len(a)-1]
		o, ok := map[string]Outcome{"ok": OK, "failed": Failed, "timeout": TimedOut, "not-running": NotRunning, "fenced": Fenced}[want]
		if !ok {
			s.fatalf("unknown outcome %q", want)
		}
		k := slices.IndexFunc(n.pending, func(e Effect) bool { return opKey(e) == key })
		if k < 0 {
			s.fatalf("%s has no pending %q (pending: %v)", n.id, key, n.pending)
		}
		e := n.pending[k]
		n.pending = slices.Delete(n.pending, k, k+1)
		n.g.Done(s.now, s.answer(n, e, o))
		s.drain(n)
	case "fail": // fail N start|stop RES [COUNT|always]; fail N fence
		n := s.node(a[1])
		if a[2] == "fence" {
			n.fenceFails = true
			return
		}
		count := 1
		if len(a) > 4 {
			count = -1
			if a[4] != "always" {
				count = atoi(a[4])
			}
		}
		r := s.fakeRes(n, a[3])
		if a[2] == "start" {
			r.failStart = count
		} else {
			r.failStop = count
		}
	case "unfail": // unfail N fence
		s.node(a[1]).fenceFails = false
	case "break": // break N RES: the resource dies under the agent
		s.fakeRes(s.node(a[1]), a[2]).running = false
	case "propose": // propose N ROLE|off: override the fake membership
		n := s.node(a[1])
		n.forced = nil
		if a[2] != "off" {
			r := map[string]heartbeat.Role{"active": heartbeat.RoleActive, "standby": heartbeat.RoleStandby, "none": heartbeat.RoleNone}[a[2]]
			n.forced = &r
		}
	case "cmd", "refuse": // cmd N COMMAND [ARG]: an operator command; refuse: it must fail
		n := s.node(a[1])
		err := s.command(n, a[2:])
		switch {
		case a[0] == "cmd" && err != nil:
			s.errorf("%s %v: %v", n.id, a[2:], err)
		case a[0] == "refuse" && err == nil:
			s.errorf("%s %v was accepted, want a refusal", n.id, a[2:])
		case err != nil:
			n.refused = err.Error()
		}
		s.drain(n)
	case "expect":
		s.expect(a[1:])
	default:
		s.fatalf("unknown command %q", a[0])
	}
}

func setKey(m map[string]bool, k string, on bool) map[string]bool {
	if m == nil {
		m = map[string]bool{}
	}
	m[k] = on
	return m
}

func (s *sim) fakeRes(n *simNode, name string) *fakeRes {
	r := n.res[name]
	if r == nil {
		s.fatalf("no resource %s", name)
	}
	return r
}

func (s *sim) resources(specs []string) {
	s.cfg.Resources = nil
	for _, spec := range specs {
		name, typ, ok := strings.Cut(spec, ":")
		if !ok {
			typ = name
		}
		r, err := DefaultResource(name, typ)
		if err != nil {
			s.fatalf("%v", err)
		}
		s.cfg.Resources = append(s.cfg.Resources, r)
	}
	for _, n := range s.nodes {
		n.res = map[string]*fakeRes{}
		for _, r := range s.cfg.Resources {
			n.res[r.Name] = &fakeRes{typ: r.Type}
		}
	}
}

func (s *sim) config(kvs []string) {
	for _, kv := range kvs {
		k, v, _ := strings.Cut(kv, "=")
		all := func(set func(*Resource)) {
			for i := range s.cfg.Resources {
				set(&s.cfg.Resources[i])
			}
		}
		switch k {
		case "migration_threshold":
			s.cfg.MigrationThreshold = atoi(v)
		case "failure_timeout":
			s.cfg.FailureTimeout = dur(v)
		case "start_failure_is_fatal":
			s.cfg.StartFailureIsFatal = v == "true"
		case "monitor_interval":
			all(func(r *Resource) { r.MonitorInterval = dur(v) })
		case "start_timeout":
			all(func(r *Resource) { r.StartTimeout = dur(v) })
		case "stop_timeout":
			all(func(r *Resource) { r.StopTimeout = dur(v) })
		default:
			s.fatalf("unknown config key %q", k)
		}
	}
}

func (s *sim) command(n *simNode, a []string) error {
	arg := ""
	if len(a) > 1 {
		arg = a[1]
	}
	switch a[0] {
	case "move":
		return n.g.Move(s.now)
	case "standby", "unstandby":
		return n.g.Standby(s.now, a[0] == "standby")
	case "maintenance":
		return n.g.Maintenance(s.now, arg == "on")
	case "restart":
		return n.g.Restart(s.now, arg)
	case "cleanup":
		return n.g.Cleanup(s.now, arg)
	case "shutdown":
		n.g.Shutdown(s.now)
		return nil
	}
	s.fatalf("unknown operator command %q", a[0])
	return nil
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

// effectMatches: exact for operations and state effects, a substring for
// alarms and logs ("ALARM: TEXT", "log: TEXT").
func effectMatches(e Effect, want string) bool {
	got := e.String()
	for _, p := range []string{"ALARM: ", "log: "} {
		if w, ok := strings.CutPrefix(want, p); ok {
			return strings.HasPrefix(got, p) && strings.Contains(got, w)
		}
	}
	return got == want
}

func (s *sim) sinceMark(n *simNode) []Effect { return n.effects[n.mark:] }

func listEffects(effs []Effect) string {
	var b strings.Builder
	for _, e := range effs {
		fmt.Fprintf(&b, "\n  %s", e)
	}
	return b.String()
}

func (s *sim) expect(a []string) {
	n := s.node(a[0])
	rest := strings.Join(a[2:], " ")
	st := func() Status { return n.g.Status() }
	switch a[1] {
	case "state": // expect N state GROUPSTATE
		if got := st().State.String(); got != a[2] {
			s.errorf("%s's group is %s, want %s (reason %q, waiting %q)", n.id, got, a[2], st().Reason, st().Waiting)
		}
	case "role": // expect N role ROLE
		if got := n.role.String(); got != a[2] {
			s.errorf("%s's role is %s, want %s", n.id, got, a[2])
		}
	case "eligible": // expect N eligible true|false
		if got := strconv.FormatBool(n.eligible); got != a[2] {
			s.errorf("%s eligible = %s, want %s", n.id, got, a[2])
		}
	case "idle": // expect N idle true|false: mirrord may exit now
		if got := strconv.FormatBool(n.g.Idle()); got != a[2] {
			s.errorf("%s idle = %s, want %s (group %s)", n.id, got, a[2], st().State)
		}
	case "standby-file": // expect N standby-file true|false: the persisted flag
		if got := strconv.FormatBool(n.standby); got != a[2] {
			s.errorf("%s's persisted standby = %s, want %s", n.id, got, a[2])
		}
	case "sees": // expect N sees PEER NODESTATE
		if got := s.peerState(n, heartbeat.NodeID(a[2])).String(); got != a[3] {
			s.errorf("%s sees %s %s, want %s", n.id, a[2], got, a[3])
		}
	case "peer": // expect N peer PEER GROUPSTATE: PEER's app state as N decoded it
		app, err := UnmarshalAppState(n.seenApp[heartbeat.NodeID(a[2])])
		if err != nil || app.State.String() != a[3] {
			s.errorf("%s sees %s's group %s (%v), want %s", n.id, a[2], app.State, err, a[3])
		}
	case "resource": // expect N resource RES STATE [failures=K]
		k := slices.IndexFunc(st().Resources, func(r ResourceStatus) bool { return r.Name == a[2] })
		if k < 0 {
			s.fatalf("no resource %s", a[2])
		}
		r := st().Resources[k]
		if r.State.String() != a[3] {
			s.errorf("%s's %s is %s, want %s", n.id, a[2], r.State, a[3])
		}
		if len(a) > 4 {
			if want := strings.TrimPrefix(a[4], "failures="); strconv.Itoa(r.Failures) != want {
				s.errorf("%s's %s has %d failures, want %s", n.id, a[2], r.Failures, want)
			}
		}
	case "runs", "not-runs": // expect N runs RES: the fake resource is up
		if got := s.fakeRes(n, a[2]).running; got != (a[1] == "runs") {
			s.errorf("%s's %s running = %v, want %v", n.id, a[2], got, !got)
		}
	case "registered": // expect N registered true|false: its key on the array
		if got := strconv.FormatBool(s.reg[n.id]); got != a[2] {
			s.errorf("%s's key registered = %s, want %s", n.id, got, a[2])
		}
	case "pending": // expect N pending OPERATION: held, unanswered
		if !slices.ContainsFunc(n.pending, func(e Effect) bool { return e.String() == rest }) {
			s.errorf("%s has no pending %q; pending: %v", n.id, rest, n.pending)
		}
	case "no-pending":
		if len(n.pending) > 0 {
			s.errorf("%s has pending operations %v", n.id, n.pending)
		}
	case "effect", "no-effect": // expect N effect TEXT: since the last mark
		found := slices.ContainsFunc(s.sinceMark(n), func(e Effect) bool { return effectMatches(e, rest) })
		if found != (a[1] == "effect") {
			s.errorf("%s: effect %q found=%v; effects since mark:%s", n.id, rest, found, listEffects(s.sinceMark(n)))
		}
	case "order": // expect N order A, B, C: in this order since the mark
		want := strings.Split(rest, ",")
		k := 0
		for _, e := range s.sinceMark(n) {
			if k < len(want) && effectMatches(e, strings.TrimSpace(want[k])) {
				k++
			}
		}
		if k < len(want) {
			s.errorf("%s: %q not seen in order (matched up to %q); effects since mark:%s", n.id, rest, strings.TrimSpace(want[k]), listEffects(s.sinceMark(n)))
		}
	case "refused": // expect N refused TEXT: the last refusal said so
		if !strings.Contains(n.refused, rest) {
			s.errorf("%s's last refusal %q does not say %q", n.id, n.refused, rest)
		}
	case "waiting": // expect N waiting TEXT
		if !strings.Contains(st().Waiting, rest) {
			s.errorf("%s waits for %q, want %q", n.id, st().Waiting, rest)
		}
	default:
		s.fatalf("unknown expectation %q", a[1])
	}
}

// TestScenarios runs every script in testdata/scenarios: one command per
// line, '#' starts a comment. `go test -v -run TestScenarios/NAME` prints
// every effect with the time it was produced.
func TestScenarios(t *testing.T) {
	scenario.Run(t, "testdata/scenarios/*.txt", func(t *testing.T) func(string, []string) {
		s := newSim(t)
		return func(where string, args []string) {
			s.where = where
			s.run(args)
		}
	})
}
