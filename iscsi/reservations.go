package iscsi

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// This file holds the reservation helpers a fence agent needs on top of
// the raw PERSISTENT RESERVE commands of pr.go: registering where the
// target lacks REGISTER AND IGNORE EXISTING KEY, PREEMPT AND ABORT with
// the PREEMPT fallback, a per-session "am I registered" probe, and keeping
// a session registered across reconnects on targets that bind
// registrations to sessions (tgtd).

// ErrRegistrationUncertain: restoring a session's registration raced with
// another initiator's reservation change four times in a row, so it could
// not be proven that this node had not been preempted meanwhile. Nothing
// was left registered; the caller may try again.
var ErrRegistrationUncertain = errors.New("iscsi: could not restore the registration safely (the reservation changed at the same time)")

// EnsureRegistered registers key for this I_T nexus whatever it had
// (REGISTER AND IGNORE EXISTING KEY). Where the target does not implement
// that service action (ILLEGAL REQUEST) it registers with REGISTER, from
// no key or, if the nexus already holds key, from key itself.
//
// A RESERVATION CONFLICT here (SPC-4 allows none for REGISTER AND IGNORE
// EXISTING KEY) means another initiator holds an SPC-2 reservation
// (RESERVE(6)/(10)) on the LUN; the error says so.
func (d *Disk) EnsureRegistered(key uint64) error { return d.ensureRegisteredOn(nil, key) }

func (d *Disk) ensureRegisteredOn(s *session, key uint64) error {
	err := d.prOut(s, "REGISTER AND IGNORE EXISTING KEY", prOutRegisterAndIgnore, 0, 0, key)
	if errors.Is(err, ErrIllegalRequest) {
		if err = d.prOut(s, "REGISTER", prOutRegister, 0, 0, key); errors.Is(err, ErrReservationConflict) {
			err = d.prOut(s, "REGISTER", prOutRegister, 0, key, key)
		}
	}
	if errors.Is(err, ErrReservationConflict) {
		return fmt.Errorf("%w: the LUN refuses registration; another initiator probably holds an SPC-2 reservation "+
			"(RESERVE(6)/(10)) on it: release that reservation on the array", err)
	}
	return err
}

// unregisterOn drops this nexus's registration (the reservation goes
// with it if the nexus held one).
func (d *Disk) unregisterOn(s *session, key uint64) error {
	err := d.prOut(s, "REGISTER AND IGNORE EXISTING KEY", prOutRegisterAndIgnore, 0, 0, 0)
	if errors.Is(err, ErrIllegalRequest) {
		err = d.prOut(s, "REGISTER", prOutRegister, 0, key, 0)
	}
	return err
}

// IsRegistered reports whether this I_T nexus (this session) is
// registered with key. READ KEYS cannot tell (it lists every nexus's keys,
// and tgtd keeps a dropped session's registration listed though it no
// longer applies), so it asks with REGISTER from key to key: a registered
// nexus changes nothing (only the PR generation moves), an unregistered
// one gets RESERVATION CONFLICT (SPC-4 5.14.7).
func (d *Disk) IsRegistered(key uint64) (bool, error) { return d.isRegisteredOn(nil, key) }

func (d *Disk) isRegisteredOn(s *session, key uint64) (bool, error) {
	if key == 0 {
		return false, fmt.Errorf("iscsi: %s: reservation key 0 is not a key", d.name)
	}
	err := d.prOut(s, "REGISTER", prOutRegister, 0, key, key)
	if errors.Is(err, ErrReservationConflict) {
		return false, nil
	}
	return err == nil, err
}

// PreemptAbort removes the registrations of victim (and takes over its
// reservation with type t, if it held one) with PREEMPT AND ABORT, which
// also aborts the victim's commands still queued at the target. A target
// that does not implement PREEMPT AND ABORT (ILLEGAL REQUEST; tgtd 1.0.85
// among them) gets plain PREEMPT: the victim's queued commands may then
// still complete, but every later one gets RESERVATION CONFLICT. aborted
// reports which of the two did the work.
func (d *Disk) PreemptAbort(key, victim uint64, t ReservationType) (aborted bool, err error) {
	paErr := d.PreemptAndAbort(key, victim, t)
	if paErr == nil {
		return true, nil
	}
	if !errors.Is(paErr, ErrIllegalRequest) {
		return false, paErr
	}
	return false, d.Preempt(key, victim, t)
}

// RegistrationGroup serialises the reservation changes of one node's
// sessions to one LUN (its volume and disk-heartbeat sessions): hold it
// around every PERSISTENT RESERVE OUT those sessions send, and give it to
// KeepRegistered. Restoring a registration is only proven safe when no
// other PR change of ours runs at the same time.
type RegistrationGroup struct{ mu sync.Mutex }

// Lock takes the group.
func (g *RegistrationGroup) Lock() { g.mu.Lock() }

// Unlock releases the group.
func (g *RegistrationGroup) Unlock() { g.mu.Unlock() }

// Reregister restores this session's registration with key, but only
// while key is still registered on the LUN through another I_T nexus of
// this node, so a node that was preempted never registers itself back:
//
//  1. a session still registered (SPC-4 targets keep registrations across
//     sessions) is left alone: true;
//  2. READ KEYS without key: the node was preempted (or never registered):
//     false, nothing sent;
//  3. otherwise REGISTER AND IGNORE EXISTING KEY, then READ KEYS again:
//     the PR generation must have moved by exactly one (ours), so no
//     PREEMPT can have slipped in between the two reads; if it moved by
//     more, the registration is undone and the check repeated.
//
// The caller must hold the RegistrationGroup of this node's sessions to
// the LUN, so that key is only ever registered by a proven step. Never
// call it on a session that carries writes: a PREEMPT between step 3's
// READ KEYS and REGISTER leaves the session registered until the undo,
// and its writes sent meanwhile land after the preempting node's takeover
// finished. Use RestoreByRelogin there: KeepRegistered runs the same
// steps on a new session before it carries any I/O.
func (d *Disk) Reregister(key uint64) (bool, error) {
	ok, _, err := d.reregisterOn(nil, key)
	return ok, err
}

const reregisterAttempts = 4

// reregisterOn is Reregister on session s; restored says that a
// registration was added (false when it was there already).
func (d *Disk) reregisterOn(s *session, key uint64) (ok, restored bool, err error) {
	if ok, err := d.isRegisteredOn(s, key); err != nil || ok {
		return ok, false, err
	}
	for attempt := range reregisterAttempts {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 10 * time.Millisecond)
		}
		gen, keys, err := d.readKeysOn(s)
		if err != nil {
			return false, false, err
		}
		if !slices.Contains(keys, key) {
			return false, false, nil
		}
		if err := d.ensureRegisteredOn(s, key); err != nil {
			return false, false, err
		}
		gen2, keys2, err := d.readKeysOn(s)
		if err == nil && gen2 == gen+1 && slices.Contains(keys2, key) {
			return true, true, nil
		}
		// Something else changed the registrations between our reads (the
		// peer may have preempted us): undo ours, then look again.
		if uerr := d.unregisterOn(s, key); uerr != nil {
			return false, false, fmt.Errorf("iscsi: %s: undoing an unproven registration: %w", d.name, uerr)
		}
		if err != nil {
			return false, false, err
		}
	}
	return false, false, fmt.Errorf("%s: %w", d.name, ErrRegistrationUncertain)
}

// KeepRegistered makes the Disk restore its registration with key after
// every reconnect, before the new session carries any I/O (the steps of
// Reregister, under g). SPC-4 binds a registration to the I_T nexus
// (initiator name + ISID), so a reconnect keeps it; tgtd binds it to the
// session, so a reconnect after a network blip would otherwise leave the
// session unregistered and its writes refused as if this node had been
// fenced. If key is no longer registered on the LUN (this node was
// preempted while away), the session is not registered and KeepRegistered
// turns itself off: writes get RESERVATION CONFLICT, as they must. Key 0
// turns it off.
func (d *Disk) KeepRegistered(key uint64, g *RegistrationGroup) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.keep.key, d.keep.group = key, g
	if key == 0 {
		d.keep.group = nil
	}
}

// RestoreByRelogin restores a registration the current session lost
// without ever registering a session that carries I/O: it sets
// KeepRegistered(key, g) and drops the session, so the Disk logs in again
// (after ReconnectInterval) and the new session registers, with
// Reregister's guard, before it carries any I/O; or stays unregistered if
// key is gone by then. Commands in flight on the dropped session fail with
// ErrDisconnected. It does not wait; the caller must not hold g while
// waiting for the Disk to reconnect.
func (d *Disk) RestoreByRelogin(key uint64, g *RegistrationGroup) {
	d.KeepRegistered(key, g)
	d.mu.Lock()
	s := d.sess
	d.mu.Unlock()
	if s != nil {
		s.kill(fmt.Errorf("%w: logging in again to restore the session's reservation registration safely", ErrDisconnected))
	}
}

// keptRegistration returns what KeepRegistered asked for.
func (d *Disk) keptRegistration() (uint64, *RegistrationGroup) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.keep.key, d.keep.group
}

// restoreRegistration runs the KeepRegistered steps on a new session s.
func (d *Disk) restoreRegistration(s *session) error {
	key, g := d.keptRegistration()
	if key == 0 {
		return nil
	}
	g.Lock()
	ok, restored, err := d.reregisterOn(s, key)
	g.Unlock()
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case restored:
		d.stats.reregistrations.Add(1)
	case !ok && d.keep.key == key:
		d.keep.key, d.keep.group = 0, nil
		d.stats.registrationsLost.Add(1)
	}
	return nil
}
