package node

import (
	"context"
	"log/slog"
	"sync/atomic"
)

// lateHandler forwards records to a handler set after the loggers were
// handed out: the node's parts get their loggers before the cluster
// services (and so the management log) exist. Until set, it takes
// nothing.
type lateHandler struct {
	target *atomic.Pointer[slog.Handler]
	attrs  []slog.Attr
}

func newLateHandler() *lateHandler {
	return &lateHandler{target: new(atomic.Pointer[slog.Handler])}
}

func (h *lateHandler) set(t slog.Handler) { h.target.Store(&t) }

func (h *lateHandler) load() slog.Handler {
	if p := h.target.Load(); p != nil {
		return *p
	}
	return nil
}

func (h *lateHandler) Enabled(ctx context.Context, l slog.Level) bool {
	t := h.load()
	return t != nil && t.Enabled(ctx, l)
}

func (h *lateHandler) Handle(ctx context.Context, r slog.Record) error {
	t := h.load()
	if t == nil {
		return nil
	}
	if len(h.attrs) > 0 {
		t = t.WithAttrs(h.attrs)
	}
	return t.Handle(ctx, r)
}

func (h *lateHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}

// WithGroup: the node's parts use no groups (the management log's
// handler keeps attributes flat).
func (h *lateHandler) WithGroup(string) slog.Handler { return h }
