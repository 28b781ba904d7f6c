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
		{"lone leg that recorded the other failed runs degraded", [2]*superblock{nil, sb(1, 5, f0, 1, 1)}, -1, "n", "", 1, legFailed, false, true},
		{"lone leg that recorded both in sync is refused", [2]*superblock{nil, sb(1, 5, in, 1, 1)}, -1, "n", "--keep-leg 1", 0, 0, false, false},
		{"lone leg recorded both in sync, forced", [2]*superblock{nil, sb(1, 5, in, 1, 1)}, 1, "n", "", 1, legFailed, false, true},
		{"lone out-of-sync leg refused", [2]*superblock{sb(0, 5, [2]legState{legRebuilding, legInSync}, 1, 1), nil}, -1, "n", "being rebuilt", 0, 0, false, false},
		{"lone leg the operator failed is refused", [2]*superblock{nil, sb(1, 5, [2]legState{legInSync, legFailed}, 1, 1)}, -1, "n", "records itself failed", 0, 0, false, false},
		{"lone rebuilding leg refused even with the other failed", [2]*superblock{sb(0, 5, [2]legState{legRebuilding, legFailed}, 1, 1), nil}, -1, "n", "being rebuilt", 0, 0, false, false},
		{"lone out-of-sync leg forced", [2]*superblock{nil, sb(1, 5, reb1, 1, 1)}, 1, "n", "", 1, legFailed, false, true},
		{"cannot keep a missing leg", [2]*superblock{nil, sb(1, 5, in, 1, 1)}, 0, "n", "missing", 0, 0, false, false},
		{"another node takes over: new generation", [2]*superblock{sb(0, 5, in, 1, 1), sb(1, 5, in, 1, 1)}, -1, "other", "", 0, legInSync, false, true},
		{"neither leg in sync refused", [2]*superblock{sb(0, 5, [2]legState{legOutOfSync, legRebuilding}, 1, 1), sb(1, 5, in, 1, 1)}, -1, "n", "neither", 0, 0, false, false},
		{"bad keep value", [2]*superblock{sb(0, 5, in, 1, 1), sb(1, 5, in, 1, 1)}, 2, "n", "must be 0, 1", 0, 0, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := decide(c.sbs, [2]string{"leg0", "leg1"}, c.keep, c.node, nil)
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

// The lone-leg rule with the peer's knowledge (Options.Known).
func TestDecideLoneLegWithKnownState(t *testing.T) {
	vol, u0, u1 := [16]byte{9}, [16]byte{1}, [16]byte{2}
	lone := func(states [2]legState, events uint64, gens ...uint64) *superblock {
		s := &superblock{VolumeUUID: vol, Slot: 0, LegUUID: u0, Events: events, LegStates: states, LegUUIDs: [2][16]byte{u0, u1}, LastWriter: "n"}
		for i, g := range gens {
			s.Gens = append(s.Gens, generation{g, uint64(i + 1)})
		}
		return s
	}
	known := func(gen, events uint64, s0, s1 string) *KnownState {
		return &KnownState{VolumeUUID: vol, Generation: gen, Events: events, LegStates: [2]string{s0, s1}, LegUUIDs: [2][16]byte{u0, u1}}
	}
	in := [2]legState{legInSync, legInSync}
	cases := []struct {
		name    string
		sb      *superblock
		known   *KnownState
		wantErr string
	}{
		{"known names the leg's newest generation, leg in sync", lone(in, 7, 1, 2), known(2, 7, "in_sync", "in_sync"), ""},
		{"known with the other leg failed", lone(in, 8, 1, 2), known(2, 7, "in_sync", "failed"), ""},
		{"known names a generation the leg lacks: stale", lone([2]legState{legInSync, legFailed}, 9, 1, 2), known(3, 12, "failed", "in_sync"), "never took part in"},
		{"known names an older generation: the leg's own record decides", lone(in, 9, 1, 2), known(1, 3, "in_sync", "in_sync"), "--keep-leg 0"},
		{"known says the leg failed in that generation", lone(in, 9, 1, 2), known(2, 9, "failed", "in_sync"), "--keep-leg 0"},
		{"known has more events than the leg", lone(in, 5, 1, 2), known(2, 7, "in_sync", "in_sync"), "--keep-leg 0"},
		{"known of another volume is ignored", lone(in, 7, 1, 2), &KnownState{VolumeUUID: [16]byte{8}, Generation: 2, Events: 7, LegStates: [2]string{"in_sync", "in_sync"}}, "another volume"},
		{"no knowledge, both recorded in sync", lone(in, 7, 1, 2), nil, "may have been written after"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := decide([2]*superblock{c.sb, nil}, [2]string{"leg0", "leg1"}, -1, "n", c.known)
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if p.states != [2]legState{legInSync, legFailed} || !p.newGen {
					t.Fatalf("plan %+v", p)
				}
				return
			}
			var le *LoneLegError
			if !errors.As(err, &le) || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("err %v, want a *LoneLegError saying %q", err, c.wantErr)
			}
			if !strings.Contains(err.Error(), "--keep-leg 0") {
				t.Fatalf("the refusal does not say how to force: %v", err)
			}
		})
	}
}

func TestRelateHistories(t *testing.T) {
	g := func(ids ...uint64) []generation {
		var out []generation
		for _, id := range ids {
			out = append(out, generation{ID: id})
		}
		return out
	}
	cases := []struct {
		a, b []generation
		want histRel
	}{
		{g(1, 2), g(1, 2), histSame},
		{g(1), g(1, 2), histOlder},
		{g(1, 2, 3), g(1, 2), histNewer},
		{g(1, 2), g(1, 3), histDiverged},
		{g(5), g(6), histDiverged},
	}
	for _, c := range cases {
		if got := relate(c.a, c.b); got != c.want {
			t.Errorf("relate(%v, %v) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
