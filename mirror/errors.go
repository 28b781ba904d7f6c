package mirror

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

var (
	// ErrNoMetadata: a leg holds no hamirror metadata (run `mirrorctl create`).
	ErrNoMetadata = errors.New("no hamirror metadata")
	// ErrExists: create (or add) found existing metadata or a file system.
	ErrExists = errors.New("leg is in use")
	// ErrCorrupt: metadata is present but fails its checks.
	ErrCorrupt = errors.New("corrupt hamirror metadata")
	// ErrClosed: the volume was closed.
	ErrClosed = errors.New("volume is closed")
	// ErrTimeout: a leg did not answer within Options.IOTimeout.
	ErrTimeout = errors.New("leg I/O timed out")
	// ErrNoLeg: no leg can serve the request (both failed or out of sync).
	ErrNoLeg = errors.New("no usable leg")
	// ErrRange: an I/O lies outside the volume.
	ErrRange = errors.New("I/O outside the volume")
	// ErrFenced: this node was fenced off the arrays (an iSCSI RESERVATION
	// CONFLICT: the peer preempted its registration). Never a leg failure:
	// the volume stops serving, fails no leg and writes no metadata.
	ErrFenced = errors.New("fenced: this node lost its access to the arrays")
	// ErrInFlight: a leg call into the slot (one that hung before the leg
	// failed) has not returned; the slot cannot be re-added until it has.
	ErrInFlight = errors.New("leg I/O still in flight")
)

// SplitBrainLeg is one leg's side of a split brain.
type SplitBrainLeg struct {
	Name        string    `json:"name"`
	Slot        int       `json:"slot"`
	Events      uint64    `json:"events"`
	LastWriter  string    `json:"last_writer"`
	Updated     time.Time `json:"updated"`
	Generations []string  `json:"generations"` // oldest first, hex IDs
}

// SplitBrainError: both legs were written separately (each has a data
// generation the other lacks). hamirror never merges them; the operator
// chooses the leg to keep (Options.KeepLeg, `--keep-leg N`). From AddLeg
// (Adding set) one side is the running volume and the other the leg being
// added to slot AddSlot.
type SplitBrainError struct {
	Legs    [2]SplitBrainLeg
	Adding  bool
	AddSlot int
}

func (e *SplitBrainError) Error() string {
	var b strings.Builder
	b.WriteString("split brain: both legs were written separately and hold different data; hamirror will not merge them (")
	for i, l := range e.Legs {
		if i > 0 {
			b.WriteString("; ")
		}
		last := "?"
		if n := len(l.Generations); n > 0 {
			last = l.Generations[n-1]
		}
		fmt.Fprintf(&b, "leg %d %s: generation %s, events %d, last written by %q at %s",
			l.Slot, l.Name, last, l.Events, l.LastWriter, l.Updated.UTC().Format(time.RFC3339))
	}
	if e.Adding {
		fmt.Fprintf(&b, "). To keep the running volume's data and overwrite the leg: `mirrorctl leg add %d --force`. To keep the leg's data: stop mirrord and start it with both legs and --keep-leg %d", e.AddSlot, e.AddSlot)
		return b.String()
	}
	b.WriteString("). Choose the leg to keep with --keep-leg 0 or --keep-leg 1: the other leg is overwritten by a full resync")
	return b.String()
}

// LoneLegError: only one leg could be assembled and nothing proves it
// holds the newest data (the other leg may have been written after it
// left). Assemble refuses rather than serve what may be stale data.
type LoneLegError struct {
	Slot    int           // the present leg's slot
	Leg     SplitBrainLeg // what its superblock records
	Missing string        // the other leg's name (or "")
	States  [2]string     // both legs' states as the present leg last recorded them
	Known   *KnownState   // the peer's knowledge, when given
	Reason  string        // why it is not proven newest
}

func (e *LoneLegError) Error() string {
	var b strings.Builder
	missing := e.Missing
	if missing == "" {
		missing = "missing"
	}
	last := "?"
	if n := len(e.Leg.Generations); n > 0 {
		last = e.Leg.Generations[n-1]
	}
	fmt.Fprintf(&b, "leg %d (%s) is alone (leg %d %s) and not provably the newest copy: %s. Leg %d records generation %s, events %d, leg 0 %s and leg 1 %s, last written by %q at %s",
		e.Slot, e.Leg.Name, 1-e.Slot, missing, e.Reason, e.Slot, last, e.Leg.Events, e.States[0], e.States[1], e.Leg.LastWriter, e.Leg.Updated.UTC().Format(time.RFC3339))
	if e.Known != nil {
		fmt.Fprintf(&b, "; the peer knows %s", e.Known)
	}
	fmt.Fprintf(&b, ". Bring leg %d back, or, if you are sure leg %d holds the data to keep, force it with --keep-leg %d (a new generation starts; leg %d is later re-added only if its history allows, else reported as a split brain)",
		1-e.Slot, e.Slot, e.Slot, 1-e.Slot)
	return b.String()
}

// UnreadableLegError: a leg's metadata could not be read at assembly (after
// retries). It is never taken for a missing leg: it may hold newer data.
type UnreadableLegError struct {
	Name     string
	KeepHint int // the slot of the leg that could be kept instead (-1: none readable)
	Err      error
}

func (e *UnreadableLegError) Error() string {
	s := fmt.Sprintf("leg %s: its metadata cannot be read (%v); hamirror will not guess whether it holds newer data. Fix the leg (or its array) and start again", e.Name, e.Err)
	if e.KeepHint >= 0 {
		s += fmt.Sprintf(", or start without it with --keep-leg %d (leg %d's data is kept; this leg is re-added later only if its history allows)", e.KeepHint, e.KeepHint)
	}
	return s
}
func (e *UnreadableLegError) Unwrap() error { return e.Err }

// LegError says which leg failed and why; it wraps the leg's error.
type LegError struct {
	Slot int
	Name string
	Op   string
	Err  error
}

func (e *LegError) Error() string {
	return fmt.Sprintf("leg %d (%s): %s: %v", e.Slot, e.Name, e.Op, e.Err)
}
func (e *LegError) Unwrap() error { return e.Err }
