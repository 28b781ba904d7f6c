package agents

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// params decodes one resource's type parameters strictly. The first error
// sticks (later calls return zero values and keep it); done adds an error
// for every key nothing asked for. Every error is a *heartbeat.KeyError
// naming "<key>.<param>".
type params struct {
	key  string
	m    map[string]any
	used map[string]bool
	err  error
}

func newParams(key string, m map[string]any) *params {
	return &params{key: key, m: m, used: map[string]bool{}}
}

func (p *params) keyOf(name string) string { return p.key + "." + name }

func (p *params) fail(name, format string, a ...any) {
	if p.err == nil {
		p.err = &heartbeat.KeyError{Key: p.keyOf(name), Msg: fmt.Sprintf(format, a...)}
	}
}

// get returns the raw value of name; ok is false when it is absent (a
// YAML null counts as absent).
func (p *params) get(name string) (any, bool) {
	p.used[name] = true
	v, ok := p.m[name]
	return v, ok && v != nil
}

// done returns the first error, or one naming the unknown keys.
func (p *params) done() error {
	if p.err != nil {
		return p.err
	}
	var unknown []string
	for k := range p.m {
		if !p.used[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		known := make([]string, 0, len(p.used))
		for k := range p.used {
			known = append(known, k)
		}
		slices.Sort(known)
		return &heartbeat.KeyError{Key: p.keyOf(unknown[0]),
			Msg: fmt.Sprintf("unknown key (this type takes %s)", strings.Join(known, ", "))}
	}
	return nil
}

func describe(v any) string {
	switch v.(type) {
	case string:
		return fmt.Sprintf("the string %q", v)
	case []any:
		return "a list"
	case map[string]any:
		return "a map"
	}
	return fmt.Sprintf("%v (%T)", v, v)
}

// str returns a string parameter; an absent optional one is def.
func (p *params) str(name string, required bool, def string) string {
	v, ok := p.get(name)
	if !ok {
		if required {
			p.fail(name, "is missing")
		}
		return def
	}
	s, isStr := v.(string)
	if !isStr {
		p.fail(name, "must be a string, got %s", describe(v))
		return def
	}
	if s == "" && required {
		p.fail(name, "is empty")
	}
	if strings.ContainsRune(s, 0) {
		p.fail(name, "contains a NUL byte")
	}
	return s
}

// path returns an absolute, clean file-system path.
func (p *params) path(name string, required bool, def string) string {
	s := p.str(name, required, def)
	if s == "" {
		return s
	}
	if !filepath.IsAbs(s) {
		p.fail(name, "must be an absolute path, got %q", s)
		return def
	}
	return filepath.Clean(s)
}

// integer returns an integer parameter within [min, max].
func (p *params) integer(name string, def, min, max int) int {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	var n int
	switch x := v.(type) {
	case int:
		n = x
	case int64:
		n = int(x)
	case uint64:
		if x > math.MaxInt32 {
			p.fail(name, "must be between %d and %d, got %d", min, max, x)
			return def
		}
		n = int(x)
	case float64:
		if x != math.Trunc(x) || x < math.MinInt32 || x > math.MaxInt32 {
			p.fail(name, "must be a whole number, got %v", x)
			return def
		}
		n = int(x)
	default:
		p.fail(name, "must be an integer, got %s", describe(v))
		return def
	}
	if n < min || n > max {
		p.fail(name, "must be between %d and %d, got %d", min, max, n)
		return def
	}
	return n
}

// duration returns a Go duration string ("200ms", "5s") within [min, max].
func (p *params) duration(name string, def, min, max time.Duration) time.Duration {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	s, isStr := v.(string)
	if !isStr {
		p.fail(name, "must be a duration such as \"500ms\" or \"5s\", got %s", describe(v))
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		p.fail(name, "must be a duration such as \"500ms\" or \"5s\": %v", err)
		return def
	}
	if d < min || d > max {
		p.fail(name, "must be between %v and %v, got %v", min, max, d)
		return def
	}
	return d
}

// boolean returns a true/false parameter.
func (p *params) boolean(name string, def bool) bool {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	b, isBool := v.(bool)
	if !isBool {
		p.fail(name, "must be true or false, got %s", describe(v))
		return def
	}
	return b
}

// command returns an argv: a YAML list of strings runs as is (no shell),
// a string runs through /bin/sh -c.
func (p *params) command(name string, required bool) []string {
	v, ok := p.get(name)
	if !ok {
		if required {
			p.fail(name, "is missing: give a command as a string (run by /bin/sh -c) or a list (argv)")
		}
		return nil
	}
	switch x := v.(type) {
	case string:
		if strings.TrimSpace(x) == "" {
			p.fail(name, "is empty")
			return nil
		}
		if strings.ContainsRune(x, 0) {
			p.fail(name, "contains a NUL byte")
			return nil
		}
		return []string{"/bin/sh", "-c", x}
	case []any:
		return p.strList(name, x)
	case []string:
		return p.strList(name, toAny(x))
	}
	p.fail(name, "must be a string (run by /bin/sh -c) or a list of strings (argv), got %s", describe(v))
	return nil
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, x := range s {
		out[i] = x
	}
	return out
}

func (p *params) strList(name string, l []any) []string {
	if len(l) == 0 {
		p.fail(name, "is an empty list")
		return nil
	}
	out := make([]string, len(l))
	for i, e := range l {
		s, ok := e.(string)
		if !ok || strings.ContainsRune(s, 0) {
			p.fail(fmt.Sprintf("%s[%d]", name, i), "must be a string without NUL bytes, got %s", describe(e))
			return nil
		}
		out[i] = s
	}
	if !filepath.IsAbs(out[0]) {
		p.fail(fmt.Sprintf("%s[0]", name), "must be an absolute path (PATH is not searched), got %q", out[0])
		return nil
	}
	return out
}

// envList returns environment entries given as a list of "NAME=value"
// strings. A list, not a map: config loaders fold map keys to lower case,
// and environment names are case-sensitive.
func (p *params) envList(name string) []string {
	v, ok := p.get(name)
	if !ok {
		return nil
	}
	l, isList := v.([]any)
	if !isList {
		if s, isStrs := v.([]string); isStrs {
			l = toAny(s)
		} else {
			p.fail(name, "must be a list of \"NAME=value\" strings, got %s", describe(v))
			return nil
		}
	}
	out := make([]string, 0, len(l))
	for i, e := range l {
		s, isStr := e.(string)
		k, _, hasEq := strings.Cut(s, "=")
		if !isStr || !hasEq || !validEnvName(k) || strings.ContainsRune(s, 0) {
			p.fail(fmt.Sprintf("%s[%d]", name, i), "must be \"NAME=value\" with NAME made of letters, digits and _, got %s", describe(e))
			return nil
		}
		out = append(out, s)
	}
	return out
}

func validEnvName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, c := range []byte(s) {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// choice returns a string parameter that must be one of allowed.
func (p *params) choice(name string, def string, allowed ...string) string {
	s := p.str(name, false, def)
	if !slices.Contains(allowed, s) {
		p.fail(name, "must be one of %s, got %q", strings.Join(allowed, ", "), s)
		return def
	}
	return s
}
