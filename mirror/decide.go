package mirror

import (
	"fmt"
	"time"
)

// assemblyPlan is what Assemble does with the superblocks it found.
type assemblyPlan struct {
	view   *superblock // authoritative volume-wide fields (states, events, generations)
	states [2]legState // starting leg states
	full   bool        // the out-of-sync leg needs every chunk
	union  [2]bool     // whose on-disk bitmap to merge into the dirty set
	newGen bool        // start a new data generation at assembly
	why    string      // for the log
}

// decide chooses the source leg from the superblocks (indexed by slot; nil
// = leg missing). It is pure. Rules (DESIGN.md "Assembly"):
//   - one leg: it serves alone (new generation) if it was in sync;
//   - same newest generation: the higher event count has the newer view of
//     both legs' states; dirty bits of both legs are resynced;
//   - one leg's newest generation is in the other's history: the other is
//     newer and the source; the stale leg receives the chunks marked since
//     it left, or everything when bits were cleared after it left or it is
//     not the leg the source remembers in that slot;
//   - otherwise both were written separately: split brain, refused unless
//     the operator names the leg to keep (the other is fully resynced).
//
// keep (0 or 1) is the operator's choice, used only where the rules above
// refuse (split brain, no in-sync leg): the kept leg becomes the source and
// the other is fully resynced. -1 never forces anything.
func decide(sbs [2]*superblock, names [2]string, keep int, node string) (assemblyPlan, error) {
	var p assemblyPlan
	if keep < -1 || keep > 1 {
		return p, fmt.Errorf("keep leg %d: must be 0, 1 or -1 (decide automatically)", keep)
	}
	if sbs[0] == nil && sbs[1] == nil {
		return p, fmt.Errorf("no leg to assemble: %w", ErrNoLeg)
	}
	// One leg present.
	for i := range 2 {
		if sbs[1-i] != nil {
			continue
		}
		if keep == 1-i {
			return p, fmt.Errorf("cannot keep leg %d: it is missing", keep)
		}
		s := sbs[i]
		p.view, p.newGen, p.union[i] = s, true, true
		p.states[i], p.states[1-i] = legInSync, legFailed
		if s.LegStates[i] != legInSync && keep != i {
			return p, fmt.Errorf("leg %d (%s) is %s: it was being rebuilt from leg %d, which is missing; refusing to serve stale data (force it with --keep-leg %d)",
				i, names[i], s.LegStates[i], 1-i, i)
		}
		p.why = fmt.Sprintf("leg %d missing: running degraded on leg %d", 1-i, i)
		return p, nil
	}
	a, b := sbs[0], sbs[1]
	src := -1
	full, pair := false, false
	switch la, lb := a.lastGen(), b.lastGen(); {
	case la == lb:
		p.view = a
		if b.Events > a.Events {
			p.view = b
		}
		st := p.view.LegStates
		p.union = [2]bool{true, true}
		switch {
		case st[0] == legInSync && st[1] == legInSync:
			src, pair = 0, true
			p.why = "same generation"
		case st[0] == legInSync || st[1] == legInSync:
			src = 0
			if st[0] != legInSync {
				src = 1
			}
			full = st[1-src] == legFailed // should not happen in one generation: be safe
			p.why = fmt.Sprintf("same generation, leg %d is %s", 1-src, st[1-src])
		default:
			if keep < 0 {
				return p, fmt.Errorf("neither leg is recorded in sync (leg 0 %s, leg 1 %s); choose the leg to keep with --keep-leg", st[0], st[1])
			}
		}
	case a.genIndex(lb) >= 0:
		src, p.view, p.union = 0, a, [2]bool{true, true}
		full = a.genIndex(lb) < a.genIndex(a.BitmapGen) || a.LegUUIDs[1] != b.LegUUID
		p.why = "leg 1 is stale (its generation is in leg 0's history)"
		if a.LegStates[0] != legInSync && a.LegStates[1] == legInSync && a.LegUUIDs[1] == b.LegUUID {
			// Leg 0 was being rebuilt from leg 1 and got the newer
			// superblock first: its own view names leg 1 the source.
			src, full = 1, false
			p.why = "leg 0 has the newer superblock but records itself out of sync: leg 1 is the source"
		}
	case b.genIndex(la) >= 0:
		src, p.view, p.union = 1, b, [2]bool{true, true}
		full = b.genIndex(la) < b.genIndex(b.BitmapGen) || b.LegUUIDs[0] != a.LegUUID
		p.why = "leg 0 is stale (its generation is in leg 1's history)"
		if b.LegStates[1] != legInSync && b.LegStates[0] == legInSync && b.LegUUIDs[0] == a.LegUUID {
			src, full = 0, false
			p.why = "leg 1 has the newer superblock but records itself out of sync: leg 0 is the source"
		}
	default:
		if keep < 0 {
			return p, splitBrain(sbs, names)
		}
	}
	if src >= 0 && p.view.LegStates[src] != legInSync && keep < 0 {
		return p, fmt.Errorf("leg %d (%s) is the newer leg but is itself %s; the leg it was rebuilt from is gone; force with --keep-leg",
			src, names[src], p.view.LegStates[src])
	}
	if keep >= 0 && keep != src && src >= 0 && p.view.LegStates[src] == legInSync {
		// The automatic decision stands: KeepLeg only settles what it
		// cannot (a split brain, no in-sync leg). This keeps a zero
		// Options.KeepLeg from ever overwriting the newer leg.
		p.why += fmt.Sprintf(" (KeepLeg %d ignored: no split brain)", keep)
		keep = src
	}
	if keep >= 0 && keep != src {
		// Operator's choice after a split brain or against the automatic
		// decision: the other leg is overwritten entirely.
		src, full, pair, p.newGen = keep, true, false, true
		p.view = sbs[keep]
		p.union = [2]bool{}
		p.why = fmt.Sprintf("operator keeps leg %d", keep)
	}
	p.states[src] = legInSync
	p.states[1-src] = legOutOfSync
	if pair && !full && src == 0 {
		p.states[1] = legInSync // both in sync: dirty bits are resynced 0 -> 1
	}
	p.full = full
	if p.view.LastWriter != node {
		p.newGen = true
	}
	return p, nil
}

func splitBrain(sbs [2]*superblock, names [2]string) *SplitBrainError {
	e := &SplitBrainError{}
	for i, s := range sbs {
		l := SplitBrainLeg{Name: names[i], Slot: i, Events: s.Events, LastWriter: s.LastWriter, Updated: time.Unix(0, s.Updated)}
		for _, g := range s.Gens {
			l.Generations = append(l.Generations, genString(g.ID))
		}
		e.Legs[i] = l
	}
	return e
}
