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

// sessionGrace bounds how long Start waits for the arrays' sessions to
// log in (they are opened in the background at mirrord start): a group
// started right after mirrord (both nodes up together) would otherwise
// find no array reachable and fail its start.
const sessionGrace = 5 * time.Second

func (f fenceResource) Start(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, sessionGrace)
	for _, a := range f.as.list {
		if a.vol.WaitReady(wctx) != nil {
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
