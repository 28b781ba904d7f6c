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
// chooses the leg to keep (Options.KeepLeg, `--keep-leg N`).
type SplitBrainError struct {
	Legs [2]SplitBrainLeg
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
	b.WriteString("). Choose the leg to keep with --keep-leg 0 or --keep-leg 1: the other leg is overwritten by a full resync")
	return b.String()
}

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
