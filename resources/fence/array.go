package fence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/hamirror/hamirror/iscsi"
)

// array is one array and what this node knows about its registration
// there. Its reservation commands run under group, which this node's
// sessions to the array share with the Disks' own re-registration after a
// reconnect (iscsi.Disk.KeepRegistered).
type array struct {
	Array
	group *iscsi.RegistrationGroup

	// joined is set once this node registered here (guarded by group):
	// from then on, our key gone from the array while it kept its
	// reservation state means we were fenced.
	joined bool
	// lastGen is the PR generation of our last read here that listed our
	// key (seen: there was one); a smaller one later means the array lost
	// its state since.
	lastGen uint32
	seen    bool
}

// observe records a read's PR generation and returns what the decisions
// need to know of this array's past. Only a read listing our key moves
// the reference, so a generation that went back stays visible until we
// are registered again. Called with group held.
func (a *array) observe(v view, me uint64) progress {
	p := progress{joined: a.joined, reset: a.seen && v.gen < a.lastGen}
	if slices.Contains(v.keys, me) {
		a.lastGen, a.seen = v.gen, true
	}
	return p
}

// fencedHere reads the array once and says whether it shows this node
// fenced (the decision of next, no step taken). Unreachable or failing
// arrays say no: the operation itself reports them.
func (a *array) fencedHere(g goal) (bool, string) {
	if !a.Volume.Connected() {
		return false, ""
	}
	a.group.Lock()
	defer a.group.Unlock()
	v, err := a.read()
	if err != nil {
		return false, ""
	}
	act := next(g, v, a.observe(v, g.me))
	return act.kind == actFenced, act.note
}

// maxSteps bounds one operation on one array: every step changes what the
// next read shows, so a loop that does not settle means another initiator
// keeps changing the reservation at the same time.
const maxSteps = 12

// sessions are the array's writing sessions, the volume's first.
func (a *array) sessions() []*iscsi.Disk {
	if a.DiskHeartbeat == nil {
		return []*iscsi.Disk{a.Volume}
	}
	return []*iscsi.Disk{a.Volume, a.DiskHeartbeat}
}

// do runs g on the array: read, decide (next), act, until done.
func (a *array) do(ctx context.Context, g goal, log *slog.Logger) (out ArrayResult) {
	out.Array = a.Name
	if !a.Volume.Connected() {
		out.Unreachable = true
		return out
	}
	a.group.Lock()
	defer a.group.Unlock()
	fail := func(err error) ArrayResult {
		if unreachable(err) {
			out.Unreachable = true
			return out
		}
		out.Err = fmt.Errorf("fence: %s on %s: %w", g.op, a.Name, err)
		return out
	}
	var p progress
	for range maxSteps {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		v, err := a.read()
		if err != nil {
			return fail(err)
		}
		seen := a.observe(v, g.me)
		p.joined, p.reset = seen.joined, seen.reset
		act := next(g, v, p)
		if act.note != "" && act.kind != actFenced {
			out.Notes = append(out.Notes, act.note)
			log.Info("fence: "+act.note, "array", a.Name, "op", g.op.String())
		}
		switch act.kind {
		case actDone, actKeep:
			out.Keys = v.keys
			out.Kept = act.kind == actKeep
			out.Registered = slices.Contains(v.keys, g.me) && p.sessionsOK || g.op == opRegister
			out.Holder = v.res.Held && v.res.Key == g.me
			return out
		case actFenced:
			out.Keys = v.keys
			log.Warn("fence: this node was fenced", "array", a.Name, "why", act.note)
			return fail(fmt.Errorf("%w (%s)", ErrFenced, act.note))
		case actRefuse:
			return fail(act.err)
		case actRegister:
			err = a.register(g.me)
			p.registered, p.sessionsOK = err == nil, err == nil
		case actRejoin:
			var restored int
			restored, err = a.rejoin(g.me)
			out.Restored += restored
			p.sessionsOK = err == nil
		case actReserve:
			err = a.Volume.Reserve(g.me, iscsi.WriteExclusiveRegistrantsOnly)
		case actPreempt:
			var aborted bool
			aborted, err = a.Volume.PreemptAbort(g.me, act.key, iscsi.WriteExclusiveRegistrantsOnly)
			if err == nil {
				out.Preempted = append(out.Preempted, act.key)
				out.Aborted = aborted
				if !aborted {
					log.Info("fence: the array refused PREEMPT AND ABORT; PREEMPT did it", "array", a.Name, "victim", FormatKey(act.key))
				}
			}
		case actRelease:
			p.released++
			err = a.Volume.Release(g.me, iscsi.WriteExclusiveRegistrantsOnly)
		case actReleaseStale:
			p.stale = true
			err = a.releaseStale(g.me)
		}
		if err != nil {
			return fail(err)
		}
	}
	return fail(fmt.Errorf("the reservation did not settle after %d steps (another initiator keeps changing it)", maxSteps))
}

// read is one view of the array.
func (a *array) read() (view, error) {
	gen, keys, err := a.Volume.ReadKeys()
	if err != nil {
		return view{}, err
	}
	res, err := a.Volume.ReadReservation()
	if err != nil {
		return view{}, err
	}
	return view{keys: keys, res: res, gen: gen}, nil
}

// register registers every writing session (a deliberate join) and has
// each keep its registration across reconnects.
//
// A disk-heartbeat session that is not logged in (reconnecting, or not
// yet connected at all: iscsi.OpenInBackground) is only asked to keep the
// registration: it registers at its login, before it carries I/O, guarded
// by our key being registered through the volume's session.
func (a *array) register(key uint64) error {
	for _, d := range a.sessions() {
		if d != a.Volume && !d.Connected() {
			d.KeepRegistered(key, a.group)
			continue
		}
		if err := d.EnsureRegistered(key); err != nil {
			return err
		}
		d.KeepRegistered(key, a.group)
	}
	a.joined = true
	return nil
}

// rejoin proves each writing session registered. A session the array
// forgot is restored by logging it in again (iscsi.Disk.RestoreByRelogin):
// the new session registers, guarded by our key still being registered,
// before it carries any I/O, so a takeover racing the restore can never
// let a write of ours through. Until then its writes get RESERVATION
// CONFLICT or fail with the dropped session; the restore is counted in
// Restored.
func (a *array) rejoin(key uint64) (restored int, err error) {
	a.joined = true
	for _, d := range a.sessions() {
		if d != a.Volume && !d.Connected() {
			d.KeepRegistered(key, a.group) // registered at its login (see register)
			continue
		}
		registered, err := d.IsRegistered(key)
		if err != nil {
			return restored, err
		}
		if !registered {
			d.RestoreByRelogin(key, a.group)
			restored++
			continue
		}
		d.KeepRegistered(key, a.group)
	}
	return restored, nil
}

// releaseStale releases a reservation that RELEASE from the volume's
// session did not: its holder is a registration of ours the array keeps
// for a session that no longer exists (tgtd binds registrations and the
// reservation to sessions; after a reconnect the old session's stale
// registration still holds it, and RELEASE from the new session is a
// no-op). PREEMPT of our own key makes the volume's session the holder
// (and removes our other registrations), RELEASE drops it, and the other
// writing sessions are registered again (guarded: our key stays registered
// through the volume's session).
func (a *array) releaseStale(key uint64) error {
	if err := a.Volume.Preempt(key, key, iscsi.WriteExclusiveRegistrantsOnly); err != nil {
		return err
	}
	if err := a.Volume.Release(key, iscsi.WriteExclusiveRegistrantsOnly); err != nil {
		return err
	}
	_, err := a.rejoin(key)
	return err
}

// unreachable says an error means "the array did not answer", not "the
// array refused".
func unreachable(err error) bool {
	return errors.Is(err, iscsi.ErrDisconnected) || errors.Is(err, iscsi.ErrTimeout) || errors.Is(err, iscsi.ErrClosed)
}
