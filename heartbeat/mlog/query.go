package mlog

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// Query selects entries of the local log.
type Query struct {
	Since time.Time        `json:"since,omitzero"`
	Node  heartbeat.NodeID `json:"node,omitempty"`
	// After, if set, returns only entries appended after this cursor (as
	// `mirrorctl log --follow` polls), in time order within the batch.
	After *Cursor `json:"after,omitempty"`
	// Limit keeps the newest Limit matches (0: DefaultLimit).
	Limit int `json:"limit,omitempty"`
}

// DefaultLimit bounds an answer (it must fit one control message).
const DefaultLimit = 10000

// Result is the answer to a Query.
type Result struct {
	Self    heartbeat.NodeID         `json:"self"`
	Entries []Entry                  `json:"entries"`
	Next    Cursor                   `json:"next"`    // pass as After to follow
	Spooled map[heartbeat.NodeID]int `json:"spooled"` // entries waiting in the spool per unreachable peer
	Omitted int                      `json:"omitted,omitempty"`
}

// Less orders entries for display: by time, then node, then sequence.
func Less(a, b Entry) int {
	if c := a.Time.Compare(b.Time); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Node, b.Node); c != 0 {
		return c
	}
	return cmp.Compare(a.Seq, b.Seq)
}

// Query returns the merged history held by this node.
func (l *Log) Query(q Query) (Result, error) {
	var c Cursor
	if q.After != nil {
		c = *q.After
	}
	all, next, err := l.store.scan(c)
	if err != nil {
		return Result{}, err
	}
	res := Result{Self: l.opt.Self, Next: next, Spooled: map[heartbeat.NodeID]int{}}
	for _, e := range all {
		if (q.Node != "" && e.Node != q.Node) || (!q.Since.IsZero() && e.Time.Before(q.Since)) {
			continue
		}
		res.Entries = append(res.Entries, e)
	}
	slices.SortFunc(res.Entries, Less)
	limit := q.Limit
	if limit <= 0 || limit > DefaultLimit {
		limit = DefaultLimit
	}
	if len(res.Entries) > limit {
		res.Omitted = len(res.Entries) - limit
		res.Entries = res.Entries[res.Omitted:]
	}
	for _, p := range l.peerList() {
		if es, err := p.spool.entries(); err == nil && len(es) > 0 {
			res.Spooled[p.id] = len(es)
		}
	}
	return res, nil
}

// Entries returns every entry of the local log in time order (tests,
// comparisons between nodes).
func (l *Log) Entries() ([]Entry, error) {
	all, _, err := l.store.scan(Cursor{})
	slices.SortFunc(all, Less)
	return all, err
}

// Stats count the log's replication work.
type Stats struct {
	Spooled   uint64 `json:"spooled"`   // entries put in a spool
	Failures  uint64 `json:"failures"`  // live deliveries that failed
	Exchanges uint64 `json:"exchanges"` // completed exchanges
	Gaps      uint64 `json:"gaps"`      // entries accepted past a hole
}

// Stats returns the counters.
func (l *Log) Stats() Stats {
	l.store.mu.Lock()
	gaps := l.store.gaps
	l.store.mu.Unlock()
	return Stats{Spooled: l.stats.spooled.Load(), Failures: l.stats.failures.Load(), Exchanges: l.stats.exchanges.Load(), Gaps: gaps}
}

// Log writes an entry with slog-style key/value args (values are printed
// with %v), and also sends it to Options.Slog when set. Errors writing the
// log go to Options.Logf: management logging never stops the caller.
func (l *Log) Log(ctx context.Context, level slog.Level, component, msg string, args ...any) {
	if l.opt.Slog != nil {
		l.opt.Slog.Log(ctx, level, msg, append([]any{"component", component}, args...)...)
	}
	if _, err := l.Write(ctx, level, component, msg, kvFields(args)...); err != nil {
		l.opt.Logf("mlog: %v", err)
	}
}

// Info, Warn and Error are Log at that level.
func (l *Log) Info(component, msg string, args ...any) {
	l.Log(context.Background(), slog.LevelInfo, component, msg, args...)
}

func (l *Log) Warn(component, msg string, args ...any) {
	l.Log(context.Background(), slog.LevelWarn, component, msg, args...)
}

func (l *Log) Error(component, msg string, args ...any) {
	l.Log(context.Background(), slog.LevelError, component, msg, args...)
}

// Fields turns slog-style arguments (key, value pairs and slog.Attr) into
// entry fields, as Log does.
func Fields(args ...any) []Field { return kvFields(args) }

func kvFields(args []any) []Field {
	var fs []Field
	for len(args) > 0 {
		switch a := args[0].(type) {
		case slog.Attr:
			fs = appendAttr(fs, "", a)
			args = args[1:]
		case string:
			if len(args) == 1 {
				fs = append(fs, Field{Key: "!BADKEY", Value: a})
				args = nil
				continue
			}
			fs = append(fs, Field{Key: a, Value: fmt.Sprint(args[1])})
			args = args[2:]
		default:
			fs = append(fs, Field{Key: "!BADKEY", Value: fmt.Sprint(a)})
			args = args[1:]
		}
	}
	return fs
}

func appendAttr(fs []Field, prefix string, a slog.Attr) []Field {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return fs
	}
	key := a.Key
	if prefix != "" {
		key = prefix + "." + key
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			fs = appendAttr(fs, key, g)
		}
		return fs
	}
	return append(fs, Field{Key: key, Value: a.Value.String()})
}
