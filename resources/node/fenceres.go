package node

import (
	"context"
	"time"

	"github.com/hamirror/hamirror/resources"
)

// fenceResource is the group's fence resource over the node's arrays. Its
// Start records which arrays may carry the volume (arrays.usable), as the
// takeover's fence step does: a clean start (the peer stopped the group
// and is alive) acquires the reservation and marks the arrays it reached;
// a start while a peer may still write (not alive with a clean group:
// after a takeover, also when the fence alone is restarted) fences it
// again (idempotent on the arrays already done), so an array that became
// reachable since is fenced before its leg is used, never merely
// acquired while the dead peer's key is still registered there. Stop
// releases and forgets which arrays are usable.
type fenceResource struct{ as *arrays }

// firstLoginWait bounds, from the opening of the sessions at mirrord
// start, how long Start waits for each array's first login (the sessions
// log in in the background): a group started right after mirrord (both
// nodes up together) would otherwise fence and assemble without an array
// that is merely slow to answer, and refuse its lone leg as not provably
// the newest (the group then went to the peer). An array that has not
// answered by then is down: the start goes on without it. Within the
// fence's start_timeout (30 s), leaving time for its commands.
const firstLoginWait = 20 * time.Second

func (f fenceResource) Start(ctx context.Context) error {
	deadline := f.as.opened.Add(firstLoginWait)
	wctx, cancel := context.WithDeadline(ctx, deadline)
	for _, a := range f.as.list {
		if a.vol.Ready() {
			continue
		}
		if time.Now().Before(deadline) {
			f.as.log.Info("waiting for the array's first login before fencing", "array", a.name, "at_most", time.Until(deadline).Round(time.Second))
		}
		if err := a.vol.WaitReady(wctx); err != nil {
			f.as.log.Warn("going on without the array: no first login since mirrord started", "array", a.name, "err", err)
			break // go on with the arrays that answered
		}
	}
	cancel()
	if victims := f.as.victimsNow(); len(victims) > 0 {
		return f.as.takeover(ctx, victims)
	}
	// A clean start: nothing of the group runs here (the group starts the
	// fence first, and never while this node is fenced). Rejoin first, as
	// the gate does before a fence: a peer may have preempted this node's
	// key while it was a clean standby, and acquire would then find it
	// fenced and the hand-over would fail.
	f.as.register(ctx)
	return f.as.acquire(ctx)
}

func (f fenceResource) Stop(ctx context.Context) error {
	err := f.as.fence.Stop(ctx)
	f.as.forget()
	return err
}

func (f fenceResource) Monitor(ctx context.Context) error { return f.as.fence.Monitor(ctx) }

var _ resources.Agent = fenceResource{}
