package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/services"
	"github.com/hamirror/hamirror/resources"
)

// Options are a node's optional collaborators.
type Options struct {
	// Logger receives the node's log (slog); default stderr text.
	Logger *slog.Logger
	// Notify receives systemd notifications ("READY=1", "WATCHDOG=1",
	// "STOPPING=1", "STATUS=..."); default none (cmd/mirrord passes
	// sd_notify).
	Notify func(state string)
	// Override re-applies the command line's overrides to the file at
	// each reload (reload.go), as the caller did before New.
	Override func(*Config)
}

// Node is one running mirrord: membership, the resource group and its
// agents, joined. All decisions are made on one goroutine (the loop), which
// owns the group machine; everything else posts to it.
type Node struct {
	cfg  *Config
	self heartbeat.NodeID
	log  *slog.Logger
	opt  Options

	member *heartbeat.Member
	pinger *heartbeat.Pinger // nil without ping targets
	group  *resources.Group
	agents map[string]resources.Agent // by resource name
	locks  map[string]*sync.Mutex     // one call at a time per agent
	peers  []heartbeat.NodeID
	keys   map[heartbeat.NodeID]uint64 // fencing keys
	arrays *arrays                     // iSCSI sessions, fence agent (nil: no volume)
	vol    *volumeRes                  // the volume resource (nil: no volume)
	know   *knowledgeStore
	seq    *seqStore
	wit    *witness
	svc    *services.Services
	fenceQ chan func() // fence-agent work, in order (register before fence)

	inbox    chan func(now time.Time) // run on the loop goroutine
	loopStep time.Time                // last loop step (watchdog), guarded by mu
	mu       sync.Mutex
	status   resources.Status // the group's status after the last step
	closers  []func() error
	ops      *ops // log level, metrics, reload (ops.go)
}

// post runs f on the loop goroutine. It never blocks the caller for long:
// the inbox is large, and the loop only does quick work.
func (n *Node) post(f func(now time.Time)) {
	n.inbox <- f
}

// call runs f on the loop and waits for its result (control handlers).
func (n *Node) call(ctx context.Context, f func(now time.Time) (any, error)) (any, error) {
	type res struct {
		v   any
		err error
	}
	ch := make(chan res, 1)
	select {
	// The reply goes after the step that carries out what f decided, so
	// a caller reading Status next sees its own change.
	case n.inbox <- func(now time.Time) { v, err := f(now); n.step(now); ch <- res{v, err} }:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Run serves until ctx ends: then the group is handed to a healthy peer
// (SIGTERM on the active node) or stopped, and everything is closed.
func (n *Node) Run(ctx context.Context) error {
	mctx, stopMember := context.WithCancel(context.Background())
	memberDone := make(chan error, 1)
	go func() { memberDone <- n.member.Run(mctx) }()
	defer func() {
		stopMember()
		<-memberDone
		for i := len(n.closers) - 1; i >= 0; i-- {
			n.closers[i]()
		}
	}()
	if n.arrays != nil {
		n.fenceQ = make(chan func(), 16)
		go func() {
			for f := range n.fenceQ {
				f()
			}
		}()
		defer close(n.fenceQ)
		n.fenceQ <- func() {
			n.arrays.join(mctx, func(array string) { n.post(func(time.Time) { n.lateArray(mctx, array) }) })
		}
	}
	n.svc.Start(mctx)
	defer n.svc.Stop()
	n.startMetrics()
	defer n.ops.metrics.close()
	defer n.wit.close()
	n.notify("READY=1")
	tick := time.NewTicker(n.tickEvery())
	defer tick.Stop()
	shutdown := ctx.Done()
	var deadline <-chan time.Time
	var exitBy time.Time // after a shutdown, when to stop waiting for a peer to take over
	for {
		select {
		case f := <-n.inbox:
			now := time.Now()
			f(now)
			n.step(now)
		case now := <-tick.C:
			n.group.Membership(now, n.view(now))
			n.group.Tick(now)
			n.step(now)
		case <-shutdown:
			shutdown = nil
			n.notify("STOPPING=1")
			n.log.Info("stopping: handing the group to a healthy peer, or stopping it here")
			now := time.Now()
			n.group.Shutdown(now)
			n.step(now)
			deadline = time.After(n.shutdownTimeout())
		case <-deadline:
			return fmt.Errorf("mirrord: the group did not stop within %v; resources may still run here (mirrorctl status on the peer)", n.shutdownTimeout())
		}
		if shutdown == nil && n.group.Idle() {
			now := time.Now()
			if exitBy.IsZero() {
				exitBy = now.Add(n.handOverWait())
			}
			if taker, ok := n.handedOver(); ok {
				n.log.Info("group stopped here; exiting", "taken_over_by", taker)
				return nil
			}
			if now.After(exitBy) {
				n.log.Warn("group stopped here; exiting, though no peer has taken it over (standby, or not eligible)")
				return nil
			}
		}
		select {
		case err := <-memberDone:
			memberDone <- err
			if err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("membership stopped: %w", err)
			}
		default:
		}
	}
}

// lateArray (on the loop) registers this node's key on an array whose
// session logged in only after the start-up registration, as long as
// nothing of the group runs here: a node that runs it, or was fenced,
// must not rejoin on its own (a takeover or hand-over registers it where
// needed, and BeforeReAdd fences a returning array first).
func (n *Node) lateArray(ctx context.Context, array string) {
	if st := n.group.Status().State; st != resources.GroupStopped {
		n.log.Warn("array answered after start-up; not registering there while the group is "+st.String(), "array", array)
		return
	}
	n.log.Info("array answered after start-up: registering there", "array", array)
	n.fenceQ <- func() { n.arrays.register(ctx) }
}

// handOverWait bounds how long a node whose group stopped at SIGTERM
// waits for a live peer to take the group over before it exits: the
// peer must hear the final "stopped" state (the next beats carry it)
// before this node falls silent, or it would count this node dead and
// fence it instead of taking over cleanly.
func (n *Node) handOverWait() time.Duration {
	t := n.cfg.Heartbeat.Timing
	return t.Dead + 2*t.Keepalive
}

// handedOver reports whether no peer needs this node any more: a live
// peer started the group (taker), or none is live.
func (n *Node) handedOver() (taker string, ok bool) {
	live := false
	for _, p := range n.member.View().Peers {
		switch p.State {
		case heartbeat.NodeAlive, heartbeat.NodeSuspect, heartbeat.NodePartitioned:
		default:
			continue
		}
		live = true
		// Its group starting, not just its active role: the gate let it
		// start only once it heard this node's group stopped.
		if a, err := resources.UnmarshalAppState(p.App); err == nil && p.HasApp &&
			(a.State == resources.GroupStarting || a.State == resources.GroupRunning) {
			return string(p.ID), true
		}
	}
	return "", !live
}

// tickEvery is how often the loop feeds membership's view and the clock
// to the group: a quarter keepalive, so a takeover starts within that of
// the dead verdict.
func (n *Node) tickEvery() time.Duration {
	return max(n.cfg.Heartbeat.Timing.Keepalive/4, 10*time.Millisecond)
}

// shutdownTimeout bounds the hand-over at SIGTERM (Config.ShutdownTimeout).
func (n *Node) shutdownTimeout() time.Duration { return n.cfg.ShutdownTimeout() }

// view is membership's view translated for the group; the peers' volume
// knowledge in it is persisted and acknowledged on the way.
func (n *Node) view(now time.Time) resources.View {
	hv := n.member.View()
	n.takeKnowledge(now, hv)
	v := resources.View{Role: hv.Role, Term: hv.Term}
	for _, p := range hv.Peers {
		pv := resources.PeerView{ID: p.ID, State: p.State, Role: p.Role, Term: p.Term}
		if p.HasApp {
			pv.App = p.App
		}
		v.Peers = append(v.Peers, pv)
	}
	n.wit.observe(hv)
	return v
}

// step carries out what the group decided.
func (n *Node) step(now time.Time) {
	for _, e := range n.group.Ready() {
		n.effect(now, e)
	}
	st := n.group.Status()
	n.ops.starts.observe(now, st)
	n.mu.Lock()
	n.status, n.loopStep = st, now
	n.mu.Unlock()
}

// Healthy reports whether the loop and membership stepped within maxAge
// (systemd's watchdog is fed only then).
func (n *Node) Healthy(maxAge time.Duration) bool {
	n.mu.Lock()
	last := n.loopStep
	n.mu.Unlock()
	return n.member.Healthy(maxAge) && !last.IsZero() && time.Since(last) <= maxAge
}

// membershipEvent sees every membership event (from the member's
// goroutine): the cluster services log them, and the loop looks at the
// new view at once rather than at its next tick.
func (n *Node) membershipEvent(e heartbeat.Event) {
	if n.svc != nil {
		n.svc.MembershipEvent(e)
	}
	select {
	case n.inbox <- func(now time.Time) { n.group.Membership(now, n.view(now)) }:
	default: // the loop is busy; its next tick takes the view
	}
}

func (n *Node) notify(state string) {
	if n.opt.Notify != nil {
		n.opt.Notify(state)
	}
}

// peerIDs is every other configured node.
func peerIDs(c heartbeat.Config) []heartbeat.NodeID {
	var out []heartbeat.NodeID
	for _, nd := range c.Nodes {
		if nd.ID != c.Self {
			out = append(out, nd.ID)
		}
	}
	slices.Sort(out)
	return out
}
