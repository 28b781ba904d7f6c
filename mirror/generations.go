package mirror

import (
	"fmt"
	"time"
)

// Which copy is newest: the rules on data-generation histories, used at
// assembly (decide) and when a leg is added (machine.planAdd). Pure.
//
// A leg's history lists the generations it took part in, oldest first; a
// new generation starts whenever the set of legs receiving writes changes
// or another node takes over. So a leg whose newest generation appears in
// the other's history is behind it; two histories neither of which holds
// the other's newest generation were written separately (split brain).

// histRel is how history a relates to history b.
type histRel int

const (
	histSame     histRel = iota // same newest generation
	histOlder                   // a's newest generation is in b's history: a is behind
	histNewer                   // b's newest generation is in a's history: a is ahead
	histDiverged                // neither: written separately
)

func relate(a, b []generation) histRel {
	la, lb := lastOf(a), lastOf(b)
	switch {
	case la == lb:
		return histSame
	case indexOfGen(b, la) >= 0:
		return histOlder
	case indexOfGen(a, lb) >= 0:
		return histNewer
	}
	return histDiverged
}

func lastOf(g []generation) uint64 {
	if len(g) == 0 {
		return 0
	}
	return g[len(g)-1].ID
}

func indexOfGen(gens []generation, id uint64) int {
	for i, g := range gens {
		if g.ID == id {
			return i
		}
	}
	return -1
}

// KnownState is what a node knows of a volume's newest state: the leg
// states and generation of the last superblock write that changed them.
// The active node publishes it (Options.Publish) and the peer persists it;
// at a takeover the peer passes it back (Options.Known), which lets a lone
// leg that it proves newest start automatically.
type KnownState struct {
	VolumeUUID [16]byte    `json:"volume_uuid"`
	Generation uint64      `json:"generation"` // newest generation ID
	Events     uint64      `json:"events"`     // event counter of that superblock write
	LegStates  [2]string   `json:"leg_states"` // "in_sync", "failed", "out_of_sync", "rebuilding"
	LegUUIDs   [2][16]byte `json:"leg_uuids"`
}

// Validate checks a KnownState decoded from outside (a peer's message).
func (k KnownState) Validate() error {
	if k.VolumeUUID == ([16]byte{}) || k.Generation == 0 {
		return fmt.Errorf("known volume state: volume UUID and generation must be set")
	}
	for i, s := range k.LegStates {
		if _, ok := parseLegState(s); !ok {
			return fmt.Errorf("known volume state: leg %d state %q: want in_sync, failed, out_of_sync or rebuilding", i, s)
		}
	}
	return nil
}

func (k KnownState) String() string {
	return fmt.Sprintf("volume %s generation %s events %d, leg 0 %s, leg 1 %s",
		uuidString(k.VolumeUUID), genString(k.Generation), k.Events, k.LegStates[0], k.LegStates[1])
}

func parseLegState(s string) (legState, bool) {
	for st := legInSync; st <= legStateMax; st++ {
		if st.String() == s {
			return st, true
		}
	}
	return 0, false
}

// assemblyPlan is what Assemble does with the superblocks it found.
type assemblyPlan struct {
	view    *superblock // authoritative volume-wide fields (states, events, generations)
	states  [2]legState // starting leg states
	full    bool        // the out-of-sync leg needs every chunk
	union   [2]bool     // whose on-disk bitmap to merge into the dirty set
	newGen  bool        // start a new data generation at assembly
	leftGen [2]uint64   // for a leg left out: the generation it was last known in
	why     string      // for the log
}

// decide chooses the source leg from the superblocks (indexed by slot; nil
// = leg missing or left out). It is pure. Rules (FORMAT.md "Generations
// and split brain"):
//   - one leg: see decideLone (provably newest, or forced);
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
// refuse (split brain, no in-sync leg, a lone leg not proven newest): the
// kept leg becomes the source and the other is fully resynced. -1 never
// forces anything.
func decide(sbs [2]*superblock, names [2]string, keep int, node string, known *KnownState) (assemblyPlan, error) {
	var p assemblyPlan
	if keep < -1 || keep > 1 {
		return p, fmt.Errorf("keep leg %d: must be 0, 1 or -1 (decide automatically)", keep)
	}
	if sbs[0] == nil && sbs[1] == nil {
		return p, fmt.Errorf("no leg to assemble: %w", ErrNoLeg)
	}
	for i := range 2 {
		if sbs[1-i] == nil {
			return decideLone(sbs[i], i, names, keep, known)
		}
	}
	a, b := sbs[0], sbs[1]
	src := -1
	full, pair := false, false
	switch relate(a.Gens, b.Gens) {
	case histSame:
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
			full = st[1-src] == legFailed // cannot happen in one generation: be safe
			p.why = fmt.Sprintf("same generation, leg %d is %s", 1-src, st[1-src])
		default:
			if keep < 0 {
				return p, fmt.Errorf("neither leg is recorded in sync (leg 0 %s, leg 1 %s); choose the leg to keep with --keep-leg", st[0], st[1])
			}
		}
	case histNewer:
		src, p.view, p.union = 0, a, [2]bool{true, true}
		full = a.genIndex(b.lastGen()) < a.genIndex(a.BitmapGen) || a.LegUUIDs[1] != b.LegUUID
		p.why = "leg 1 is stale (its generation is in leg 0's history)"
		if a.LegStates[0] != legInSync && a.LegStates[1] == legInSync && a.LegUUIDs[1] == b.LegUUID {
			// Leg 0 was being rebuilt from leg 1 and got the newer
			// superblock first: its own view names leg 1 the source.
			src, full = 1, false
			p.why = "leg 0 has the newer superblock but records itself out of sync: leg 1 is the source"
		}
	case histOlder:
		src, p.view, p.union = 1, b, [2]bool{true, true}
		full = b.genIndex(a.lastGen()) < b.genIndex(b.BitmapGen) || b.LegUUIDs[0] != a.LegUUID
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
		p.view = forcedView(sbs[keep], keep)
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

// decideLone: leg i alone (the other missing, unreadable or left out). It
// runs automatically only when provably the newest copy: its own
// superblock records it in sync and the other leg failed (so every write
// since went to it), or known (the peer's persisted knowledge of the
// volume) names this leg's newest generation with this leg in sync.
// Otherwise the other leg may hold newer data: refuse, unless the
// operator keeps this leg (keep == i), which starts a new generation.
func decideLone(s *superblock, i int, names [2]string, keep int, known *KnownState) (assemblyPlan, error) {
	p := assemblyPlan{view: s, newGen: true, union: [2]bool{i == 0, i == 1}}
	p.states[i], p.states[1-i] = legInSync, legFailed
	if keep == 1-i {
		return p, fmt.Errorf("cannot keep leg %d: it is missing", keep)
	}
	if s.LegStates[1-i] == legInSync {
		p.leftGen[1-i] = s.lastGen() // it was in sync in this generation
	}
	if keep == i {
		p.view = forcedView(s, i)
		p.why = fmt.Sprintf("operator keeps leg %d (leg %d missing)", i, 1-i)
		return p, nil
	}
	e := &LoneLegError{Slot: i, Leg: legView(s, names[i], i), Missing: names[1-i], States: [2]string{s.LegStates[0].String(), s.LegStates[1].String()}}
	if known != nil && known.VolumeUUID != s.VolumeUUID {
		e.Reason = fmt.Sprintf("the peer's knowledge is about another volume (%s) and was ignored; ", uuidString(known.VolumeUUID))
		known = nil
	}
	e.Known = known
	switch s.LegStates[i] {
	case legInSync:
	case legFailed:
		e.Reason += fmt.Sprintf("leg %d records itself failed (the operator failed it): leg %d took the writes since", i, 1-i)
		return p, e
	default:
		e.Reason += fmt.Sprintf("leg %d is %s: it was being rebuilt from leg %d, which is missing; serving it would serve stale data", i, s.LegStates[i], 1-i)
		return p, e
	}
	if known != nil {
		idx := s.genIndex(known.Generation)
		older := len(s.Gens) == maxGenerations && known.Events < s.Gens[0].Events // beyond the kept history
		switch {
		case idx < 0 && !older:
			e.Reason += fmt.Sprintf("the peer knows generation %s, which leg %d never took part in: the leg is stale", genString(known.Generation), i)
			return p, e
		case idx == len(s.Gens)-1 && known.LegStates[i] == legInSync.String() && known.LegUUIDs[i] == s.LegUUID && s.Events >= known.Events:
			p.why = fmt.Sprintf("leg %d missing: the peer's knowledge (%s) proves leg %d newest", 1-i, known, i)
			return p, nil
		}
	}
	if s.LegStates[1-i] == legFailed {
		p.why = fmt.Sprintf("leg %d missing: leg %d's own superblock records it failed", 1-i, i)
		return p, nil
	}
	e.Reason += fmt.Sprintf("leg %d's superblock records leg %d in sync, so leg %d may have been written after leg %d left", i, 1-i, 1-i, i)
	return p, e
}

func legView(s *superblock, name string, slot int) SplitBrainLeg {
	l := SplitBrainLeg{Name: name, Slot: slot, Events: s.Events, LastWriter: s.LastWriter, Updated: time.Unix(0, s.Updated)}
	for _, g := range s.Gens {
		l.Generations = append(l.Generations, genString(g.ID))
	}
	return l
}

func splitBrain(sbs [2]*superblock, names [2]string) *SplitBrainError {
	e := &SplitBrainError{}
	for i, s := range sbs {
		e.Legs[i] = legView(s, names[i], i)
	}
	return e
}

// forcedView is the view a leg the operator keeps continues from. A leg
// that was not in sync in its newest generation (being rebuilt) does not
// hold that generation's data: the generation is dropped from the history
// it continues with, so a leg that does hold it is later seen as diverged
// (a split brain, never overwritten silently) rather than as stale.
func forcedView(s *superblock, slot int) *superblock {
	if s.LegStates[slot] == legInSync || len(s.Gens) < 2 {
		return s
	}
	v := *s
	v.Gens = v.Gens[:len(v.Gens)-1]
	return &v
}
