package fence

import (
	"testing"

	"github.com/hamirror/hamirror/iscsi"
)

const (
	me, peer, other = 0xaa, 0xbb, 0xcc
	weRO            = iscsi.WriteExclusiveRegistrantsOnly
)

func held(key uint64, t iscsi.ReservationType) iscsi.Reservation {
	return iscsi.Reservation{Held: true, Key: key, Type: t}
}

// The decisions of plan.go, one array at a time: what the array shows,
// what this call did so far, the step next must take.
func TestNext(t *testing.T) {
	none := iscsi.Reservation{}
	ok := progress{joined: true, sessionsOK: true}
	cases := []struct {
		name string
		g    goal
		v    view
		p    progress
		want kind
		key  uint64
	}{
		// Register is deliberate: it registers whatever the array shows.
		{"register: fenced node rejoins", goal{op: opRegister, me: me}, view{[]uint64{peer}, held(peer, weRO), 0}, progress{joined: true}, actRegister, 0},
		{"register: then done", goal{op: opRegister, me: me}, view{[]uint64{me, peer}, held(peer, weRO), 0}, progress{joined: true, registered: true}, actDone, 0},

		// Membership, for every other operation.
		{"key gone, peer holds: fenced", goal{op: opTakeover, me: me, victims: []uint64{peer}}, view{[]uint64{peer}, held(peer, weRO), 0}, progress{joined: true}, actFenced, 0},
		{"key gone, peer holds, check: fenced", goal{op: opCheck, me: me}, view{[]uint64{peer}, held(peer, weRO), 0}, progress{joined: true}, actFenced, 0},
		{"key gone, peer holds, acquire: fenced", goal{op: opAcquire, me: me}, view{[]uint64{peer}, held(peer, weRO), 0}, progress{joined: true}, actFenced, 0},
		{"never joined: register even if peer holds", goal{op: opTakeover, me: me, victims: []uint64{peer}}, view{[]uint64{peer}, held(peer, weRO), 0}, progress{}, actRegister, 0},
		{"array lost its state (PR generation went back): register again", goal{op: opCheck, me: me}, view{nil, none, 0}, progress{joined: true, reset: true}, actRegister, 0},
		{"array restarted, peer re-registered first: not fenced", goal{op: opCheck, me: me, active: true}, view{[]uint64{peer}, none, 2}, progress{joined: true, reset: true}, actRegister, 0},
		{"array restarted, peer reserved first: not fenced", goal{op: opCheck, me: me}, view{[]uint64{peer}, held(peer, weRO), 3}, progress{joined: true, reset: true}, actRegister, 0},
		{"key gone, generation kept, nobody holds (the new owner released): fenced", goal{op: opCheck, me: me, active: true}, view{[]uint64{peer}, none, 9}, progress{joined: true}, actFenced, 0},
		{"key gone, generation kept, release: fenced, nothing to do", goal{op: opRelease, me: me}, view{[]uint64{peer}, none, 9}, progress{joined: true}, actFenced, 0},
		{"registered this call and gone again", goal{op: opAcquire, me: me}, view{[]uint64{peer}, none, 0}, progress{registered: true, sessionsOK: true}, actRefuse, 0},
		{"key there: prove the sessions first", goal{op: opCheck, me: me}, view{[]uint64{me}, none, 0}, progress{joined: true}, actRejoin, 0},

		// Takeover: reserve before preempting anyone.
		{"takeover: nobody holds: reserve first", goal{op: opTakeover, me: me, victims: []uint64{peer}}, view{[]uint64{me, peer}, none, 0}, ok, actReserve, 0},
		{"takeover: victim holds: preempt it", goal{op: opTakeover, me: me, victims: []uint64{peer}}, view{[]uint64{peer, me, peer}, held(peer, weRO), 0}, ok, actPreempt, peer},
		{"takeover: we hold: preempt the victims left", goal{op: opTakeover, me: me, victims: []uint64{peer, other}}, view{[]uint64{me, other}, held(me, weRO), 0}, ok, actPreempt, other},
		{"takeover: done", goal{op: opTakeover, me: me, victims: []uint64{peer}}, view{[]uint64{me, me, other}, held(me, weRO), 0}, ok, actDone, 0},
		{"takeover: a non-victim holds: refuse", goal{op: opTakeover, me: me, victims: []uint64{peer}}, view{[]uint64{me, other}, held(other, weRO), 0}, ok, actRefuse, 0},
		{"takeover: all-registrants reservation (key 0): refuse", goal{op: opTakeover, me: me, victims: []uint64{peer}}, view{[]uint64{me, peer}, held(0, iscsi.WriteExclusiveAllRegistrants), 0}, ok, actRefuse, 0},
		{"takeover: we hold another type: refuse", goal{op: opTakeover, me: me, victims: []uint64{peer}}, view{[]uint64{me}, held(me, iscsi.ExclusiveAccess), 0}, ok, actRefuse, 0},

		// Acquire never preempts.
		{"acquire: nobody holds: reserve", goal{op: opAcquire, me: me}, view{[]uint64{me, peer}, none, 0}, ok, actReserve, 0},
		{"acquire: we hold: done, peer kept", goal{op: opAcquire, me: me}, view{[]uint64{me, peer}, held(me, weRO), 0}, ok, actDone, 0},
		{"acquire: registered peer holds WE-RO (kept on its clean stop): done", goal{op: opAcquire, me: me, peers: []uint64{peer}}, view{[]uint64{me, peer}, held(peer, weRO), 0}, ok, actDone, 0},
		{"acquire: peer holds another type: refuse", goal{op: opAcquire, me: me, peers: []uint64{peer}}, view{[]uint64{me, peer}, held(peer, iscsi.WriteExclusive), 0}, ok, actRefuse, 0},
		{"acquire: a key of no peer holds WE-RO: refuse", goal{op: opAcquire, me: me, peers: []uint64{peer}}, view{[]uint64{me, peer, other}, held(other, weRO), 0}, ok, actRefuse, 0},
		{"acquire: all-registrants reservation (key 0): refuse", goal{op: opAcquire, me: me, peers: []uint64{peer}}, view{[]uint64{me, peer}, held(0, iscsi.WriteExclusiveAllRegistrants), 0}, ok, actRefuse, 0},

		// Release.
		{"release: ours: release", goal{op: opRelease, me: me, peers: []uint64{peer}}, view{[]uint64{me, peer}, held(me, weRO), 0}, ok, actRelease, 0},
		{"release: ours, a peer is fenced off: keep it", goal{op: opRelease, me: me, peers: []uint64{peer}}, view{[]uint64{me, me}, held(me, weRO), 0}, ok, actKeep, 0},
		{"release: ours, one of two peers is fenced off: keep it", goal{op: opRelease, me: me, peers: []uint64{peer, other}}, view{[]uint64{me, peer}, held(me, weRO), 0}, ok, actKeep, 0},
		{"release: stale holder, a peer is fenced off: keep it", goal{op: opRelease, me: me, peers: []uint64{peer}}, view{[]uint64{me}, held(me, weRO), 0}, progress{joined: true, sessionsOK: true, released: 1}, actKeep, 0},
		{"release: still ours after RELEASE: stale holder", goal{op: opRelease, me: me}, view{[]uint64{me, peer}, held(me, weRO), 0}, progress{joined: true, sessionsOK: true, released: 1}, actReleaseStale, 0},
		{"release: still ours after taking it back: refuse", goal{op: opRelease, me: me}, view{[]uint64{me}, held(me, weRO), 0}, progress{joined: true, sessionsOK: true, released: 2, stale: true}, actRefuse, 0},
		{"release: not held: done", goal{op: opRelease, me: me}, view{[]uint64{me, peer}, none, 0}, ok, actDone, 0},
		{"release: peer holds: done", goal{op: opRelease, me: me}, view{[]uint64{me, peer}, held(peer, weRO), 0}, ok, actDone, 0},
		{"release: fenced: say so", goal{op: opRelease, me: me}, view{[]uint64{peer}, held(peer, weRO), 0}, progress{joined: true}, actFenced, 0},
		{"release: never joined: done", goal{op: opRelease, me: me}, view{[]uint64{peer}, held(peer, weRO), 0}, progress{}, actDone, 0},

		// Check.
		{"check standby: registered is enough", goal{op: opCheck, me: me}, view{[]uint64{me, peer}, held(peer, weRO), 0}, ok, actDone, 0},
		{"check active: holding", goal{op: opCheck, me: me, active: true}, view{[]uint64{me, peer}, held(me, weRO), 0}, ok, actDone, 0},
		{"check active: reservation gone: reserve again", goal{op: opCheck, me: me, active: true}, view{[]uint64{me, peer}, none, 0}, ok, actReserve, 0},
		{"check active: registered peer holds WE-RO: done", goal{op: opCheck, me: me, active: true, peers: []uint64{peer}}, view{[]uint64{me, peer}, held(peer, weRO), 0}, ok, actDone, 0},
		{"check active: a key of no peer holds: refuse", goal{op: opCheck, me: me, active: true, peers: []uint64{peer}}, view{[]uint64{me, peer, other}, held(other, weRO), 0}, ok, actRefuse, 0},
		{"check active: peer holds another type: refuse", goal{op: opCheck, me: me, active: true, peers: []uint64{peer}}, view{[]uint64{me, peer}, held(peer, iscsi.ExclusiveAccess), 0}, ok, actRefuse, 0},
	}
	for _, c := range cases {
		a := next(c.g, c.v, c.p)
		if a.kind != c.want || a.key != c.key {
			t.Errorf("%s: next = %+v, want kind %d key %x", c.name, a, c.want, c.key)
		}
		if (a.kind == actRefuse) != (a.err != nil) {
			t.Errorf("%s: refusal without a reason, or a reason without refusal: %+v", c.name, a)
		}
	}
}

// A takeover driven step by step against a model of the array's answers
// settles with the victims gone and this node holding WE-RO, and the
// preempted node sees "key gone, reservation held by another" at every
// moment after its key disappeared.
func TestTakeoverOrderNeverLeavesAVictimWithoutAHolder(t *testing.T) {
	v := view{keys: []uint64{peer, peer, me, me}, res: iscsi.Reservation{}}
	g := goal{op: opTakeover, me: me, victims: []uint64{peer}}
	p := progress{joined: true, sessionsOK: true}
	for step := 0; ; step++ {
		if step > maxSteps {
			t.Fatal("takeover did not settle")
		}
		a := next(g, v, p)
		switch a.kind {
		case actDone:
			if v.res.Key != me || len(v.keys) != 2 {
				t.Fatalf("done with %+v", v)
			}
			return
		case actReserve:
			v.res = held(me, weRO)
		case actPreempt:
			var keep []uint64
			for _, k := range v.keys {
				if k != a.key {
					keep = append(keep, k)
				}
			}
			if v.res.Key == a.key {
				v.res.Key = me
			}
			v.keys = keep
		default:
			t.Fatalf("step %d: unexpected %+v", step, a)
		}
		// The victim's own view after this step.
		victim := next(goal{op: opCheck, me: peer, active: true}, v, progress{joined: true, sessionsOK: true})
		gone := true
		for _, k := range v.keys {
			gone = gone && k != peer
		}
		if gone && victim.kind != actFenced {
			t.Fatalf("step %d: the victim's key is gone but it would %+v", step, victim)
		}
	}
}
