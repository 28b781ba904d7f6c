package legtest

import (
	"fmt"
	"sync/atomic"
)

// Handle is one open of a leg's storage, as a second OpenLeg of the same
// path or iSCSI LUN gives: a new object over the same bytes. Closing a
// Handle closes only the handle (the storage and other handles stay
// usable); I/O on a closed handle fails with ErrClosed, but a call that
// was already running when Close came completes, as a write already
// issued to a device does. A fake: tests need a second object on one
// in-memory leg.
type Handle struct {
	inner  Leg
	closed atomic.Bool
}

// NewHandle opens a handle on storage.
func NewHandle(storage Leg) *Handle { return &Handle{inner: storage} }

// Closed reports whether Close was called.
func (h *Handle) Closed() bool { return h.closed.Load() }

func (h *Handle) check() error {
	if h.closed.Load() {
		return fmt.Errorf("%s: handle: %w", h.inner.Name(), ErrClosed)
	}
	return nil
}

func (h *Handle) Name() string { return h.inner.Name() }
func (h *Handle) Size() int64  { return h.inner.Size() }

func (h *Handle) ReadAt(p []byte, off int64) error {
	if err := h.check(); err != nil {
		return err
	}
	return h.inner.ReadAt(p, off)
}

func (h *Handle) WriteAt(p []byte, off int64, fua bool) error {
	if err := h.check(); err != nil {
		return err
	}
	return h.inner.WriteAt(p, off, fua)
}

func (h *Handle) Flush() error {
	if err := h.check(); err != nil {
		return err
	}
	return h.inner.Flush()
}

func (h *Handle) Zero(off, length int64, unmap bool) error {
	if err := h.check(); err != nil {
		return err
	}
	return h.inner.Zero(off, length, unmap)
}

// Close closes the handle, not the storage.
func (h *Handle) Close() error {
	h.closed.Store(true)
	return nil
}
