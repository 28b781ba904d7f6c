package node

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/mirror"
	"github.com/hamirror/hamirror/resources/fence"
)

// The node's iSCSI sessions: one per array (iscsi.PurposeVolume), open for
// the whole run and lent to the mirror (the leg), the disk heartbeat (its
// slots) and the fence agent (the reservation commands). One session
// carries all three because targets bind registrations to it: tgtd to the
// session itself, and LIO refuses the reservation holder's writes from
// any other session of the same initiator, so a disk heartbeat on a
// session of its own would fall silent on the active node. A session is
// never replaced; an iSCSI Disk reconnects by itself, and one opened while
// its array is down logs in when it answers.

// array is one array as this node reaches it.
type array struct {
	name string
	spec string      // the volume leg on it
	vol  *iscsi.Disk // the node's session to it
}

// arrays are the node's arrays and the fence agent over them.
type arrays struct {
	log   *slog.Logger
	list  []*array
	fence *fence.Fence

	mu sync.Mutex
	// usable are the arrays fenced (or acquired) for the running takeover:
	// only their legs may join the volume. An array that was unreachable
	// during the fence still has the old owner registered: its leg stays
	// out until a later fence succeeds there (BeforeReAdd).
	usable map[string]bool
	// opened is when the sessions were opened (their first logins follow).
	opened time.Time
	// victims of the last takeover (nil: a clean hand-over).
	victims []uint64
	// mayWrite, set by the node, returns the keys of the peers that may
	// still write now (not alive with a clean group): the fence start and
	// a re-add fence them, whatever the last takeover recorded (a restart
	// of the fence resource forgets it). nil: the recorded victims.
	mayWrite func() []uint64
}

// victimsNow are the peers to fence off an array before its leg is used.
func (as *arrays) victimsNow() []uint64 {
	if as.mayWrite != nil {
		return as.mayWrite()
	}
	as.mu.Lock()
	defer as.mu.Unlock()
	return as.victims
}

// iscsiConfig is the initiator configuration for purpose p.
func (c *Config) iscsiConfig(p iscsi.Purpose) iscsi.Config {
	ic := iscsi.Config{
		InitiatorName: c.ISCSI.InitiatorName, User: c.ISCSI.ChapUser, SecretFile: c.ISCSI.ChapSecretFile,
		TargetUser: c.ISCSI.TargetUser, TargetSecretFile: c.ISCSI.TargetSecretFile, Timeout: c.ISCSI.Timeout,
		Purpose: p,
	}
	if ic.Timeout == 0 && c.Volume != nil {
		// The initiator gives up a little before the engine's I/O timeout,
		// so a leg fails with the iSCSI error that names the cause.
		ic.Timeout = max(c.Volume.IOTimeout*9/10, 500*time.Millisecond)
	}
	return ic
}

// openArrays opens (in the background) the sessions of every volume leg
// and builds the fence agent over them.
func openArrays(c *Config, keys map[heartbeat.NodeID]uint64, log *slog.Logger) (*arrays, error) {
	as := &arrays{log: log, usable: map[string]bool{}, opened: time.Now()}
	fail := func(err error) (*arrays, error) {
		as.close()
		return nil, err
	}
	for i, spec := range c.Volume.Legs {
		if !iscsi.IsLegSpec(spec) {
			return fail(fmt.Errorf("volume.legs[%d] %q is not an iscsi:// leg: the failover node fences through SCSI-3 persistent reservations on the arrays (a file or device leg can only be served by `mirrord volume`)", i, spec))
		}
		a := &array{name: fmt.Sprintf("array-%c", 'a'+i), spec: spec}
		var err error
		if a.vol, err = iscsi.OpenLegInBackground(spec, c.iscsiConfig(iscsi.PurposeVolume)); err != nil {
			return fail(fmt.Errorf("volume.legs[%d]: %w", i, err))
		}
		as.list = append(as.list, a)
	}
	fc := fence.Config{Key: keys[c.Heartbeat.Self], Log: log}
	for id, k := range keys {
		if id != c.Heartbeat.Self {
			fc.Peers = append(fc.Peers, k)
		}
	}
	for _, a := range as.list {
		fc.Arrays = append(fc.Arrays, fence.Array{Name: a.name, Volume: a.vol})
	}
	f, err := fence.New(fc)
	if err != nil {
		return fail(err)
	}
	as.fence = f
	return as, nil
}

func (as *arrays) bySpec(spec string) *array {
	for _, a := range as.list {
		if a.spec == spec {
			return a
		}
	}
	return nil
}

// loginWait bounds how long the start-up registration waits for the
// sessions' first logins: they take milliseconds when the arrays answer;
// an array down at start joins when it answers (join's late).
const loginWait = 5 * time.Second

// join is the start-up registration (a clean join): it waits up to
// loginWait for every session's first login, registers this node's key
// on every array that answers, and calls late with each array that was
// unreachable once its session logs in: the caller registers there too
// if that is still safe (nothing of the group runs here).
func (as *arrays) join(ctx context.Context, late func(array string)) {
	wctx, cancel := context.WithTimeout(ctx, loginWait)
	for _, a := range as.list {
		a.vol.WaitReady(wctx)
	}
	cancel()
	res := as.register(ctx)
	for _, a := range as.list {
		if !contains(res.Unreachable(), a.name) && a.vol.Ready() {
			continue
		}
		go func() {
			for ctx.Err() == nil {
				if a.vol.WaitReady(ctx) == nil {
					late(a.name)
					return
				}
			}
		}()
	}
}

// register is the clean (re)join: this node's key on every array.
func (as *arrays) register(ctx context.Context) fence.Result {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := as.fence.Register(ctx)
	if err != nil {
		as.log.Warn("registering the fencing key", "result", res.String(), "err", err)
		return res
	}
	as.log.Info("fencing key registered", "result", res.String())
	return res
}

// forget drops what the last takeover or acquire made usable.
func (as *arrays) forget() {
	as.mu.Lock()
	defer as.mu.Unlock()
	clear(as.usable)
	as.victims = nil
}

// takeover fences victims off every reachable array and records which
// arrays may carry the volume.
func (as *arrays) takeover(ctx context.Context, victims []uint64) error {
	res, err := as.fence.Takeover(ctx, victims...)
	as.record(res, err, victims)
	if err != nil {
		return fmt.Errorf("fencing: %s: %w", res.String(), err)
	}
	as.log.Warn("fenced", "result", res.String())
	return nil
}

// acquire is the clean hand-over's fence step (no victim).
func (as *arrays) acquire(ctx context.Context) error {
	res, err := as.fence.Acquire(ctx)
	as.record(res, err, nil)
	if err != nil {
		return fmt.Errorf("reservation: %s: %w", res.String(), err)
	}
	return nil
}

func (as *arrays) record(res fence.Result, err error, victims []uint64) {
	as.mu.Lock()
	defer as.mu.Unlock()
	clear(as.usable)
	as.victims = victims
	if err != nil {
		return
	}
	for _, name := range res.Fenced() {
		as.usable[name] = true
	}
	unreachable := res.Unreachable()
	for _, a := range as.list {
		if !contains(unreachable, a.name) {
			as.usable[a.name] = true
		}
	}
}

// openLeg is the engine's Options.OpenLeg: the node's own volume session,
// only once it logged in and only on an array fenced for this takeover.
// An array that was unreachable at the takeover's fence and answers now
// is fenced first (the engine opens a leg missing at assembly this way
// before re-adding it, and reads its superblock before BeforeReAdd).
func (as *arrays) openLeg(spec string) (mirror.Leg, error) {
	a := as.bySpec(spec)
	if a == nil {
		return nil, fmt.Errorf("%s is not a leg of this cluster's volume", spec)
	}
	if !a.vol.Ready() {
		return nil, fmt.Errorf("%s (%s) has not answered yet: %w", a.name, spec, iscsi.ErrNotConnected)
	}
	if !as.isUsable(a) {
		if err := as.refence(); err != nil {
			return nil, fmt.Errorf("%s (%s) was unreachable at this takeover's fence and could not be fenced now: %w", a.name, spec, err)
		}
		if !as.isUsable(a) {
			return nil, fmt.Errorf("%s (%s) was not fenced for this takeover (it was unreachable): its leg joins once it is", a.name, spec)
		}
	}
	return sharedLeg{a.vol}, nil
}

func (as *arrays) isUsable(a *array) bool {
	as.mu.Lock()
	defer as.mu.Unlock()
	return as.usable[a.name]
}

// refence repeats the running group's fence step on every reachable
// array: every peer that may still write preempted again (victimsNow),
// or (none: a clean hand-over) the reservation acquired again.
func (as *arrays) refence() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if victims := as.victimsNow(); len(victims) > 0 {
		return as.takeover(ctx, victims)
	}
	return as.acquire(ctx)
}

// beforeReAdd is the engine's Options.BeforeReAdd: an array that comes
// back is fenced (again) before its leg joins the volume.
func (as *arrays) beforeReAdd(slot int, leg mirror.Leg) error {
	if err := as.refence(); err != nil {
		return err
	}
	for _, a := range as.list {
		if sl, ok := leg.(sharedLeg); ok && sl.Disk == a.vol {
			if !as.isUsable(a) {
				return fmt.Errorf("%s (%s) could not be fenced: its leg stays out", a.name, a.spec)
			}
			return nil
		}
	}
	return fmt.Errorf("leg %s is not one of this node's sessions", leg.Name())
}

func (as *arrays) close() {
	for _, a := range as.list {
		if a.vol != nil {
			a.vol.Close()
		}
	}
}

// sharedLeg is a volume session lent to the engine: the node keeps it
// open for the whole run (its registration is bound to it), so the
// engine's Close does not close it.
type sharedLeg struct{ *iscsi.Disk }

func (sharedLeg) Close() error { return nil }

var _ mirror.AsyncLeg = sharedLeg{}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
