package fence

import (
	"context"
	"errors"
	"fmt"

	"github.com/hamirror/hamirror/resources"
)

// StartMode says what the fence agent's Start does.
type StartMode int

const (
	// StartAcquire: a clean hand-over (the peer stopped cleanly or there
	// is none): Acquire. The default.
	StartAcquire StartMode = iota
	// StartTakeover: the peer is dead or unknown: Takeover of the victims.
	StartTakeover
)

// SetStart tells the next Start what to do: the group sets StartTakeover
// (victims: default every peer) before starting after a peer's death, and
// StartAcquire for a clean hand-over.
func (f *Fence) SetStart(m StartMode, victims ...uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.start, f.victims = m, victims
}

var _ resources.Agent = (*Fence)(nil)

// Start is resources.Agent's start: Takeover or Acquire, as SetStart said.
func (f *Fence) Start(ctx context.Context) error {
	f.mu.Lock()
	m, victims := f.start, f.victims
	f.mu.Unlock()
	var err error
	if m == StartTakeover {
		_, err = f.Takeover(ctx, victims...)
	} else {
		_, err = f.Acquire(ctx)
	}
	return err
}

// Stop is resources.Agent's stop: Release. A fenced node holds nothing to
// release, so its stop succeeds.
func (f *Fence) Stop(ctx context.Context) error {
	_, err := f.Release(ctx)
	if errors.Is(err, ErrFenced) {
		return nil
	}
	return err
}

// Monitor is resources.Agent's monitor: Check. Registered but not active
// (after Stop, or before Start) is resources.ErrNotRunning; fenced is
// ErrFenced.
func (f *Fence) Monitor(ctx context.Context) error {
	_, err := f.Check(ctx)
	switch {
	case err != nil:
		return err
	case !f.Active():
		return fmt.Errorf("fence: registered, not holding the reservation: %w", resources.ErrNotRunning)
	}
	return nil
}
