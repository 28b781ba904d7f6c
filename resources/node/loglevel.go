package node

import (
	"context"
	"log/slog"
	"strings"

	"github.com/spf13/viper"
)

// LogConfig is the log section:
//
//	log:
//	  level: info     # debug, info, warn or error; a reload (SIGHUP) applies it at once
type LogConfig struct {
	// Level is the least severe level the node logs (default info).
	Level slog.Level
}

// decodeLog reads the log section.
func decodeLog(v *viper.Viper) (LogConfig, error) {
	var f struct {
		Level string `mapstructure:"level"`
	}
	c := LogConfig{Level: slog.LevelInfo}
	if err := decodeSection(v, "log", &f); err != nil {
		return c, err
	}
	if f.Level == "" {
		return c, nil
	}
	switch strings.ToLower(f.Level) {
	case "debug", "info", "warn", "error":
		if err := c.Level.UnmarshalText([]byte(f.Level)); err != nil {
			return c, keyErr("log.level", "%q: %v", f.Level, err)
		}
		return c, nil
	}
	return c, keyErr("log.level", "%q: want debug, info, warn or error", f.Level)
}

// levelHandler passes on the records at or above a level that can change
// while the node runs (log.level, applied by a reload). The handler it
// wraps decides the rest: give it a low level (cmd/mirrord: debug) so
// that log.level alone decides.
type levelHandler struct {
	next  slog.Handler
	level slog.Leveler
}

func (h levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level.Level() && h.next.Enabled(ctx, l)
}

func (h levelHandler) Handle(ctx context.Context, r slog.Record) error { return h.next.Handle(ctx, r) }

func (h levelHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return levelHandler{next: h.next.WithAttrs(attrs), level: h.level}
}

func (h levelHandler) WithGroup(name string) slog.Handler {
	return levelHandler{next: h.next.WithGroup(name), level: h.level}
}
