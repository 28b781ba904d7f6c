package mlog

import (
	"context"
	"log/slog"
	"slices"
)

// Handler returns a slog.Handler that writes records at MinLevel or above
// to the management log and passes every record on to next (nil: none).
// The "component" attribute becomes the entry's component; other
// attributes become fields (groups as "group.key"). So a component that
// logs with slog also logs to the management log with one call:
//
//	logger := slog.New(l.Handler(slog.Default().Handler(), slog.LevelInfo)).With("component", "mirror")
//	logger.Warn("leg failed", "leg", 1)
func (l *Log) Handler(next slog.Handler, min slog.Level) slog.Handler {
	return &handler{l: l, next: next, min: min}
}

type handler struct {
	l      *Log
	next   slog.Handler
	min    slog.Level
	attrs  []prefixed // from WithAttrs, with the groups open then
	groups []string
}

type prefixed struct {
	prefix string
	attr   slog.Attr
}

func (h *handler) prefix() string {
	p := ""
	for _, g := range h.groups {
		if p != "" {
			p += "."
		}
		p += g
	}
	return p
}

func (h *handler) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= h.min || (h.next != nil && h.next.Enabled(ctx, level))
}

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	if h.next != nil && h.next.Enabled(ctx, r.Level) {
		h.next.Handle(ctx, r)
	}
	if r.Level < h.min {
		return nil
	}
	var fs []Field
	component := ""
	add := func(prefix string, a slog.Attr) {
		if a.Key == "component" && prefix == "" {
			component = a.Value.String()
			return
		}
		fs = appendAttr(fs, prefix, a)
	}
	for _, a := range h.attrs {
		add(a.prefix, a.attr)
	}
	prefix := h.prefix()
	r.Attrs(func(a slog.Attr) bool { add(prefix, a); return true })
	_, err := h.l.Write(ctx, r.Level, component, r.Message, fs...)
	return err
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = slices.Clone(h.attrs)
	for _, a := range as {
		c.attrs = append(c.attrs, prefixed{h.prefix(), a})
	}
	if h.next != nil {
		c.next = h.next.WithAttrs(as)
	}
	return &c
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.groups = append(slices.Clone(h.groups), name)
	if h.next != nil {
		c.next = h.next.WithGroup(name)
	}
	return &c
}
