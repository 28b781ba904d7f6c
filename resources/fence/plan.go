package fence

import (
	"fmt"
	"slices"

	"github.com/hamirror/hamirror/iscsi"
)

// This file holds the decisions, free of I/O: given what one array says
// (its registered keys and its reservation) and what this call has done
// there so far, next names the one step to take. The array loop of
// array.go reads the array, asks next, takes the step and reads again,
// until next says done, so every outcome is checked against a fresh read.
//
// The rules, for this node's key me on one array:
//
//   - Our key gone from an array we had joined, while the array kept its
//     persistent reservation state: another node removed it (a takeover's
//     PREEMPT, whoever holds the reservation now, even nobody after the
//     new owner's clean stop): we were fenced. Stop; never register back
//     on our own. The array kept its state when its PR generation did not
//     go back since our last read: SPC-4 resets the generation to zero
//     only when the array loses its state (power on; a tgtd restart), and
//     every PERSISTENT RESERVE OUT that changes registrations raises it.
//   - Our key gone and the PR generation went back: the array lost its
//     persistent reservation state (tgtd keeps it in memory: a restart
//     empties it), whoever registered or reserved since. Our key gone
//     from an array we never joined (it was unreachable when we
//     registered): join it. Register every writing session. (A fenced
//     node never gets here: Fence.run first reads every array and does
//     nothing anywhere once one of them shows it fenced.)
//   - Our key there: make sure every writing session is registered (tgtd
//     forgets a session's registration when the session ends; restoring it
//     is guarded, see iscsi.Disk.Reregister).
//   - Takeover: hold the reservation before removing anyone, so that at
//     every moment a preempted node sees its key gone AND a reservation
//     held by another: reserve if nobody holds it; preempt a victim that
//     holds it (the reservation moves to us); then preempt the others.
//   - Acquire: reserve if nobody holds it; never preempt. A WE-RO
//     reservation held by a registered peer is enough: under Registrants
//     Only every registrant writes, and the peer kept it on its clean stop
//     because a node it had fenced was not back yet (see Release). Any
//     other reservation is refused.
//   - Release: keep ours while a peer's key is not registered on the
//     array: a fenced peer that has not rejoined, which could write again
//     once nobody holds a reservation. Otherwise release ours; if it is
//     still ours after RELEASE, its holder is a session of ours that tgtd
//     no longer knows (see releaseStale). A reservation we do not hold is
//     left alone.
//   - Check: read only, but repairs what a restart of the array lost: our
//     registrations, and the reservation when this node is active and
//     nobody holds one (a peer's WE-RO reservation is as good as ours).

// op is the operation a call runs on the arrays.
type op int

const (
	opRegister op = iota // clean (re)join: register every writing session
	opTakeover           // fence victims, hold the reservation
	opAcquire            // clean hand-over: hold the reservation, keep the peer
	opRelease            // clean stop: drop the reservation, keep registered
	opCheck              // monitor: still registered (and holding, if active)
)

var opNames = [...]string{opRegister: "register", opTakeover: "takeover", opAcquire: "acquire",
	opRelease: "release", opCheck: "check"}

func (o op) String() string { return opNames[o] }

// goal is what the call wants on every array.
type goal struct {
	op      op
	me      uint64
	victims []uint64 // opTakeover: keys to remove
	peers   []uint64 // every other node's key (Config.Peers)
	active  bool     // opCheck: this node should hold the reservation
}

// view is one read of an array: PERSISTENT RESERVE IN READ KEYS and READ
// RESERVATION.
type view struct {
	keys []uint64
	res  iscsi.Reservation
	gen  uint32 // the PR generation READ KEYS reported
}

// progress is what this call (and earlier ones) did on the array.
type progress struct {
	joined     bool // this node has registered on the array before
	reset      bool // the PR generation went back since our last read: the array lost its reservation state
	registered bool // this call registered every writing session
	sessionsOK bool // every writing session is known to be registered
	released   int  // RELEASEs this call sent
	stale      bool // this call already released a stale reservation
}

// kind is one step.
type kind int

const (
	actDone         kind = iota // nothing left to do
	actFenced                   // this node was fenced: stop
	actRegister                 // register every writing session (REGISTER AND IGNORE EXISTING KEY)
	actRejoin                   // prove or restore each writing session's registration (guarded)
	actReserve                  // RESERVE WE-RO
	actPreempt                  // PREEMPT AND ABORT (or PREEMPT) key
	actRelease                  // RELEASE our WE-RO reservation
	actKeep                     // done: keep our reservation (a peer is fenced off and not back)
	actReleaseStale             // take our stale reservation back, release it, restore our sessions
	actRefuse                   // an error an operator must resolve
)

// action is next's answer.
type action struct {
	kind kind
	key  uint64 // actPreempt: the victim
	err  error  // actRefuse
	note string // why, for the log
}

// next decides the next step on one array.
func next(g goal, v view, p progress) action {
	mine := slices.Contains(v.keys, g.me)
	heldByOther := v.res.Held && v.res.Key != g.me
	if g.op == opRegister {
		if !p.registered {
			return action{kind: actRegister}
		}
		return action{kind: actDone}
	}
	if !mine {
		removed := p.joined && !p.reset // someone took our key off an array that kept its state
		switch {
		case g.op == opRelease:
			// Nothing of ours to release; a fenced node's stop is done.
			if removed {
				return action{kind: actFenced}
			}
			return action{kind: actDone}
		case removed:
			return action{kind: actFenced, note: fmt.Sprintf("our key is gone from an array that kept its reservation state (PR generation %d); %s", v.gen, holderNow(v.res))}
		case p.registered:
			// Registered this very call and gone again: a takeover raced us.
			return action{kind: actRefuse, err: fmt.Errorf("our registration vanished right after REGISTER")}
		case p.joined:
			return action{kind: actRegister, note: fmt.Sprintf("our registration is gone and the PR generation went back (now %d): the array lost its reservation state (restarted?); registering again", v.gen)}
		}
		return action{kind: actRegister, note: "joining the array"}
	}
	if !p.sessionsOK {
		return action{kind: actRejoin}
	}
	switch g.op {
	case opTakeover:
		switch {
		case !v.res.Held:
			return action{kind: actReserve}
		case heldByOther && slices.Contains(g.victims, v.res.Key):
			return action{kind: actPreempt, key: v.res.Key}
		case heldByOther:
			return action{kind: actRefuse, err: fmt.Errorf("%s holds the reservation and is not being fenced: refusing to take over "+
				"(clear it on the array if that key belongs to no node of this cluster)", keyHolder(v.res))}
		}
		for _, k := range v.keys {
			if k != g.me && slices.Contains(g.victims, k) {
				return action{kind: actPreempt, key: k}
			}
		}
		return holdsWERO(v)
	case opAcquire:
		switch {
		case !v.res.Held:
			return action{kind: actReserve}
		case heldByOther && peerWERO(g, v):
			return action{kind: actDone, note: fmt.Sprintf("%s keeps its WE-RO reservation (it stopped while a node it fenced was away); "+
				"registered, this node writes under it", keyHolder(v.res))}
		case heldByOther:
			return action{kind: actRefuse, err: fmt.Errorf("%s holds a %s reservation and is not a registered peer holding WE-RO; "+
				"clear it on the array if that key belongs to no node of this cluster", keyHolder(v.res), v.res.Type)}
		}
		return holdsWERO(v)
	case opRelease:
		switch {
		case !v.res.Held || heldByOther:
			return action{kind: actDone}
		case len(missing(g.peers, v.keys)) > 0:
			return action{kind: actKeep, note: fmt.Sprintf("keeping the reservation: peer key %s is not registered (fenced, not rejoined); "+
				"without a reservation it could write again", formatKeys(missing(g.peers, v.keys)))}
		case p.released == 0:
			return action{kind: actRelease}
		case !p.stale:
			return action{kind: actReleaseStale, note: "the reservation outlived RELEASE: its holder is a session the array dropped (tgtd); taking it back to release it"}
		}
		return action{kind: actRefuse, err: fmt.Errorf("the reservation stays ours after RELEASE")}
	case opCheck:
		switch {
		case !g.active:
			return action{kind: actDone}
		case !v.res.Held:
			return action{kind: actReserve, note: "the reservation is gone (array restarted?): reserving again"}
		case heldByOther && peerWERO(g, v):
			return action{kind: actDone}
		case heldByOther:
			return action{kind: actRefuse, err: fmt.Errorf("%s holds the reservation while this node is active", keyHolder(v.res))}
		}
		return holdsWERO(v)
	}
	return action{kind: actRefuse, err: fmt.Errorf("unknown operation %d", g.op)}
}

// peerWERO: the reservation is WE-RO, held by a peer whose key is
// registered, so every registrant, this node too, may write.
func peerWERO(g goal, v view) bool {
	return v.res.Type == iscsi.WriteExclusiveRegistrantsOnly && v.res.Key != 0 &&
		slices.Contains(g.peers, v.res.Key) && slices.Contains(v.keys, v.res.Key)
}

// missing are the keys of want that keys does not list.
func missing(want, keys []uint64) []uint64 {
	var m []uint64
	for _, k := range want {
		if !slices.Contains(keys, k) {
			m = append(m, k)
		}
	}
	return m
}

// holdsWERO: done when our reservation has the type hamirror holds.
func holdsWERO(v view) action {
	if v.res.Type != iscsi.WriteExclusiveRegistrantsOnly {
		return action{kind: actRefuse, err: fmt.Errorf("this node holds a %s reservation, not WE-RO: release it (sg_persist) and start again", v.res.Type)}
	}
	return action{kind: actDone}
}

// holderNow says who holds the reservation, for a fenced node's log.
func holderNow(r iscsi.Reservation) string {
	if !r.Held {
		return "nobody holds the reservation now (the new owner released it)"
	}
	return keyHolder(r) + " holds the reservation"
}

func keyHolder(r iscsi.Reservation) string {
	if r.Key == 0 {
		return fmt.Sprintf("an all-registrants (%s) reservation", r.Type)
	}
	return "key " + FormatKey(r.Key)
}
