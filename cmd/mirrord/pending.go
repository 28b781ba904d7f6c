package main

import (
	"time"

	"github.com/hamirror/hamirror/mirror"
)

// A leg that cannot be opened when mirrord starts (its array is down, its
// file missing) is left out of the volume, which has then no leg object
// for that slot to probe or reopen. mirrord remembers the leg's name as
// pending for the slot, so that status shows it, `mirrorctl leg add N`
// reopens it by name, and — with --auto-readd, for iscsi:// legs — a
// background loop keeps trying to open it and adds it when its array
// answers (the mirror's own AutoReAdd covers legs that failed later).

// assignPending maps the legs that could not be opened to the slots the
// assembled volume has no leg in.
func (d *daemon) assignPending(missing []string) map[int]string {
	st := d.vol.Status()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pending = map[int]string{}
	for _, spec := range missing {
		for slot := range 2 {
			if _, taken := d.pending[slot]; st.Legs[slot].Path == "" && !taken {
				d.pending[slot] = spec
				break
			}
		}
	}
	return d.pending
}

// pendingSpec is the name of the leg that could not be opened for slot,
// or "".
func (d *daemon) pendingSpec(slot int) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pending[slot]
}

func (d *daemon) clearPending(slot int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.pending, slot)
}

// joinWhenReachable tries every interval to open the pending leg of slot
// and adds it to the volume (a resync of what changed meanwhile starts).
// It ends when the leg is added (by it or by an operator) or mirrord
// stops. A leg that opens but is refused (another volume's disk, say) is
// retried with exponential backoff, up to 64 intervals.
func (d *daemon) joinWhenReachable(slot int, spec string, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	backoff, skip := 1, 0
	for {
		select {
		case <-d.stop:
			return
		case <-tick.C:
		}
		if d.pendingSpec(slot) != spec {
			return
		}
		if skip > 0 {
			skip--
			continue
		}
		l, err := mirror.OpenLeg(spec, d.legOpt)
		if err != nil {
			continue // still unreachable
		}
		if err := d.vol.AddLeg(slot, l); err != nil {
			l.Close()
			select {
			case <-d.stop:
				return
			default:
			}
			d.log.Warn("leg answers but cannot be added; will retry", "slot", slot, "leg", spec, "err", err)
			backoff = min(backoff*2, 64)
			skip = backoff - 1
			continue
		}
		d.clearPending(slot)
		d.log.Info("leg answered: added; resync started", "slot", slot, "leg", spec)
		return
	}
}
