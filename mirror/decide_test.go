package mirror

import (
	"errors"
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	u0, u1 := [16]byte{1}, [16]byte{2}
	sb := func(slot int, events uint64, states [2]legState, bitmapGen uint64, gens ...uint64) *superblock {
		s := &superblock{Slot: slot, Events: events, LegStates: states, LegUUIDs: [2][16]byte{u0, u1}, LastWriter: "n", BitmapGen: bitmapGen}
		s.LegUUID = s.LegUUIDs[slot]
		for i, g := range gens {
			s.Gens = append(s.Gens, generation{g, uint64(i)})
		}
		return s
	}
	in := [2]legState{legInSync, legInSync}
	f1 := [2]legState{legInSync, legFailed}
	f0 := [2]legState{legFailed, legInSync}
	reb1 := [2]legState{legInSync, legRebuilding}
	otherUUID := sb(0, 9, f1, 1, 1, 2)
	otherUUID.LegUUIDs[1] = [16]byte{7}
	cases := []struct {
		name    string
		sbs     [2]*superblock
		keep    int
		node    string
		wantErr string // substring; "split" for *SplitBrainError
		src     int    // leg expected in sync (source)
		other   legState
		full    bool
		newGen  bool
	}{
		{"clean pair", [2]*superblock{sb(0, 5, in, 1, 1), sb(1, 5, in, 1, 1)}, -1, "n", "", 0, legInSync, false, false},
		{"crash mid-rebuild: newer view wins", [2]*superblock{sb(0, 7, reb1, 1, 1), sb(1, 6, in, 1, 1)}, -1, "n", "", 0, legOutOfSync, false, false},
		{"rebuild recorded only on the target", [2]*superblock{sb(0, 6, in, 1, 1), sb(1, 7, reb1, 1, 1)}, -1, "n", "", 0, legOutOfSync, false, false},
		{"stale leg 1 gets the marked chunks", [2]*superblock{sb(0, 9, f1, 1, 1, 2), sb(1, 5, in, 1, 1)}, -1, "n", "", 0, legOutOfSync, false, false},
		{"stale leg 0 gets the marked chunks", [2]*superblock{sb(0, 5, in, 1, 1), sb(1, 9, f0, 1, 1, 2)}, -1, "n", "", 1, legOutOfSync, false, false},
		{"bits cleared after the stale leg left: full", [2]*superblock{sb(0, 9, f1, 3, 1, 2, 3), sb(1, 5, in, 1, 1)}, -1, "n", "", 0, legOutOfSync, true, false},
		{"newer leg remembers another leg in the slot: full", [2]*superblock{otherUUID, sb(1, 5, in, 1, 1)}, -1, "n", "", 0, legOutOfSync, true, false},
		{"target got the newer superblock first", [2]*superblock{sb(0, 5, in, 1, 1), sb(1, 9, reb1, 1, 1, 2)}, -1, "n", "", 0, legOutOfSync, false, false},
		{"split brain refused", [2]*superblock{sb(0, 9, f1, 1, 1, 2), sb(1, 9, f0, 1, 1, 3)}, -1, "n", "split", 0, 0, false, false},
		{"split brain, operator keeps leg 1", [2]*superblock{sb(0, 9, f1, 1, 1, 2), sb(1, 9, f0, 1, 1, 3)}, 1, "n", "", 1, legOutOfSync, true, true},
		{"split brain with no common history", [2]*superblock{sb(0, 9, f1, 1, 5), sb(1, 9, f0, 1, 6)}, -1, "n", "split", 0, 0, false, false},
		{"keep ignored without a split brain", [2]*superblock{sb(0, 9, f1, 1, 1, 2), sb(1, 5, in, 1, 1)}, 1, "n", "", 0, legOutOfSync, false, false},
		{"lone in-sync leg runs degraded", [2]*superblock{nil, sb(1, 5, in, 1, 1)}, -1, "n", "", 1, legFailed, false, true},
		{"lone out-of-sync leg refused", [2]*superblock{sb(0, 5, [2]legState{legRebuilding, legInSync}, 1, 1), nil}, -1, "n", "being rebuilt", 0, 0, false, false},
		{"lone out-of-sync leg forced", [2]*superblock{nil, sb(1, 5, reb1, 1, 1)}, 1, "n", "", 1, legFailed, false, true},
		{"cannot keep a missing leg", [2]*superblock{nil, sb(1, 5, in, 1, 1)}, 0, "n", "missing", 0, 0, false, false},
		{"another node takes over: new generation", [2]*superblock{sb(0, 5, in, 1, 1), sb(1, 5, in, 1, 1)}, -1, "other", "", 0, legInSync, false, true},
		{"neither leg in sync refused", [2]*superblock{sb(0, 5, [2]legState{legOutOfSync, legRebuilding}, 1, 1), sb(1, 5, in, 1, 1)}, -1, "n", "neither", 0, 0, false, false},
		{"bad keep value", [2]*superblock{sb(0, 5, in, 1, 1), sb(1, 5, in, 1, 1)}, 2, "n", "must be 0, 1", 0, 0, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := decide(c.sbs, [2]string{"leg0", "leg1"}, c.keep, c.node)
			if c.wantErr != "" {
				var sbe *SplitBrainError
				if c.wantErr == "split" && errors.As(err, &sbe) {
					if !strings.Contains(err.Error(), "--keep-leg") {
						t.Fatalf("split-brain message lacks the remedy: %v", err)
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.states[c.src] != legInSync || p.states[1-c.src] != c.other || p.full != c.full || p.newGen != c.newGen {
				t.Fatalf("plan states %v full %v newGen %v; want leg %d in sync, other %v, full %v, newGen %v (%s)",
					p.states, p.full, p.newGen, c.src, c.other, c.full, c.newGen, p.why)
			}
		})
	}
}
