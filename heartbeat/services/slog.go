package services

import (
	"context"
	"log/slog"
	"slices"
)

// Handler returns a slog.Handler that copies records at min or above into
// the management log, so what the node's parts log (the group, fencing,
// the volume and the engine) is in every node's history (R20), not only
// in this node's journal. It never blocks the caller: the entry is queued
// (like MembershipEvent's) and written by the services' own goroutine;
// when the queue is full it is dropped, and that is logged. It does not
// pass records on: put it beside the journal's handler (TeeHandler).
//
// The entry's component is the record's "component" attribute, else its
// "part" attribute, else "node". Records of the parts "services" and
// "heartbeat" are skipped: the services write their own entries, and
// membership's reach the log as events (MembershipEvent).
func (s *Services) Handler(min slog.Level) slog.Handler {
	return &noteHandler{s: s, min: min}
}

type noteHandler struct {
	s     *Services
	min   slog.Level
	attrs []slog.Attr
}

func (h *noteHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }

func (h *noteHandler) Handle(_ context.Context, r slog.Record) error {
	component, part := "", ""
	var args []any
	add := func(a slog.Attr) bool {
		switch a.Key {
		case "component":
			component = a.Value.String()
		case "part":
			part = a.Value.String()
		case "node":
			if a.Value.String() != string(h.s.opt.Cluster.Self) { // the entry names its node
				args = append(args, a)
			}
		default:
			args = append(args, a)
		}
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	if part == "services" || part == "heartbeat" {
		return nil
	}
	if component == "" {
		component = part
	}
	if component == "" {
		component = "node"
	}
	h.s.queue(note{level: r.Level, component: component, msg: r.Message, args: args, direct: true})
	return nil
}

func (h *noteHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(slices.Clone(h.attrs), as...)
	return &c
}

// WithGroup keeps the attributes flat: the node's parts use no groups.
func (h *noteHandler) WithGroup(string) slog.Handler { return h }

// TeeHandler sends every record to each handler that is enabled for it.
type TeeHandler []slog.Handler

func (t TeeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return slices.ContainsFunc(t, func(h slog.Handler) bool { return h.Enabled(ctx, l) })
}

func (t TeeHandler) Handle(ctx context.Context, r slog.Record) error {
	var first error
	for _, h := range t {
		if h.Enabled(ctx, r.Level) {
			if err := h.Handle(ctx, r.Clone()); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

func (t TeeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(TeeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithAttrs(as)
	}
	return out
}

func (t TeeHandler) WithGroup(name string) slog.Handler {
	out := make(TeeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithGroup(name)
	}
	return out
}
