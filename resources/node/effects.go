package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/resources"
)

// effect carries out one of the group's effects. Agent calls run on their
// own goroutines (one call at a time per agent) and post their result
// back; everything else is quick and done here.
func (n *Node) effect(now time.Time, e resources.Effect) {
	switch e.Kind {
	case resources.EffectFence:
		n.log.Warn("fencing", "victims", e.Victims)
		n.runOp(e, "fence", func(ctx context.Context) error {
			done := make(chan error, 1)
			if n.fenceQ == nil {
				return n.fencePeers(ctx, e.Victims)
			}
			n.fenceQ <- func() { done <- n.fencePeers(ctx, e.Victims) }
			return <-done
		})
	case resources.EffectStart:
		n.log.Info("starting", "resource", e.Resource)
		if n.vol != nil && e.Resource == n.vol.name {
			n.prepareVolume(n.member.View())
		}
		n.runAgent(e, func(ctx context.Context, a resources.Agent) error { return a.Start(ctx) })
	case resources.EffectStop:
		n.log.Info("stopping", "resource", e.Resource)
		n.runAgent(e, func(ctx context.Context, a resources.Agent) error { return a.Stop(ctx) })
	case resources.EffectMonitor:
		n.runAgent(e, func(ctx context.Context, a resources.Agent) error { return a.Monitor(ctx) })
	case resources.EffectStopAllNow:
		n.log.Error("FENCED: stopping every resource at once")
		n.runOp(e, "stop-all-now", n.stopAllNow)
	case resources.EffectSetEligible:
		n.member.SetEligible(e.Eligible)
	case resources.EffectPersist:
		if err := saveStandby(n.cfg.Heartbeat.StateDir, e.Standby); err != nil {
			n.log.Error("cannot persist the standby flag", "err", err)
		}
	case resources.EffectPublish:
		if err := n.member.SetAppState(e.Data); err != nil {
			n.log.Error("cannot publish the app state", "err", err)
		}
	case resources.EffectReregister:
		// Queued before any fence the group asks for next, so the clean
		// rejoin happens first.
		if n.fenceQ != nil {
			n.fenceQ <- func() { n.arrays.register(context.Background()) }
		}
	case resources.EffectAlarm:
		n.log.Error("ALARM: " + e.Msg)
	case resources.EffectLog:
		n.log.Info(e.Msg)
	}
}

// runAgent calls the agent of e.Resource under e.Timeout on its own
// goroutine and answers the group with the result.
func (n *Node) runAgent(e resources.Effect, f func(context.Context, resources.Agent) error) {
	a, ok := n.agents[e.Resource]
	if !ok {
		n.post(func(now time.Time) {
			n.group.Done(now, resources.ResultOf(e.Op, fmt.Errorf("no agent for resource %q", e.Resource)))
		})
		return
	}
	lock := n.locks[e.Resource]
	n.runOp(e, e.Resource, func(ctx context.Context) error {
		lock.Lock()
		defer lock.Unlock()
		return f(ctx, a)
	})
}

// runOp runs one operation under e.Timeout and answers the group.
func (n *Node) runOp(e resources.Effect, what string, f func(context.Context) error) {
	go func() {
		timeout := e.Timeout
		if timeout <= 0 {
			timeout = time.Minute
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		t0 := time.Now()
		err := f(ctx)
		cancel()
		n.ops.starts.opDone(e, t0, time.Since(t0), err)
		if err != nil && e.Kind != resources.EffectMonitor {
			n.log.Warn("operation failed", "op", e.String(), "after", time.Since(t0).Round(time.Millisecond), "err", err)
		} else if e.Kind != resources.EffectMonitor {
			n.log.Info("done", "op", e.String(), "after", time.Since(t0).Round(time.Millisecond))
		}
		n.post(func(now time.Time) {
			if e.Kind == resources.EffectFence && err == nil && n.vol != nil {
				n.vol.fenced = true // every other writer is fenced: no MMP wait
			}
			n.group.Done(now, resources.ResultOf(e.Op, err))
		})
	}()
}

// fencePeers fences victims off every reachable array.
func (n *Node) fencePeers(ctx context.Context, victims []heartbeat.NodeID) error {
	if n.arrays == nil {
		// No shared storage: nothing a dead peer could still write to.
		// Like keepalived, the group (a VIP, a service) moves anyway.
		n.log.Warn("no volume in the cluster file: nothing to fence; taking over without fencing", "peers", victims)
		return nil
	}
	keys := make([]uint64, 0, len(victims))
	for _, v := range victims {
		k, ok := n.keys[v]
		if !ok {
			return fmt.Errorf("no fencing key for %s", v)
		}
		keys = append(keys, k)
	}
	return n.arrays.takeover(ctx, keys)
}

// stopAllNow stops every resource at once after this node was fenced:
// its writes are refused already, so nothing is flushed; processes are
// killed, addresses dropped, mounts released. All stops run in parallel
// (each agent's lock still holds: a call in progress is waited for).
func (n *Node) stopAllNow(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, 0, len(n.agents))
	var mu sync.Mutex
	for name, a := range n.agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lock := n.locks[name]
			lock.Lock()
			defer lock.Unlock()
			var err error
			if k, ok := a.(interface{ Kill(context.Context) error }); ok {
				err = k.Kill(ctx)
			} else {
				err = a.Stop(ctx)
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
