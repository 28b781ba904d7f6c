package doccheck

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// Command is one command line a document names.
type Command struct {
	File   string
	Line   int      // 1-based line where the command starts
	Args   []string // after the program name
	Text   string   // as written (continuations joined)
	Strict bool     // from a code block: flag values and arguments are checked too
}

func (c Command) String() string { return fmt.Sprintf("%s:%d: %s", c.File, c.Line, c.Text) }

// Key is one cluster-file key a document names, as a path: "volume",
// "io_timeout"; "nodes", "[]", "serial".
type Key struct {
	File string
	Line int
	Path []string
	Text string
}

func (k Key) String() string { return fmt.Sprintf("%s:%d: %s", k.File, k.Line, k.Text) }

// block is a fenced code block: its info string, first line and lines.
type block struct {
	info  string
	line  int
	lines []string
}

// split separates a Markdown document into its fenced code blocks and its
// prose (with the blocks blanked out, so line numbers stay right).
func split(md []byte) (blocks []block, prose string) {
	lines := strings.Split(string(md), "\n")
	var out []string
	var cur *block
	for i, l := range lines {
		t := strings.TrimSpace(l)
		switch {
		case cur == nil && strings.HasPrefix(t, "```"):
			cur = &block{info: strings.TrimSpace(strings.TrimPrefix(t, "```")), line: i + 2}
			out = append(out, "")
		case cur != nil && strings.HasPrefix(t, "```"):
			blocks = append(blocks, *cur)
			cur = nil
			out = append(out, "")
		case cur != nil:
			cur.lines = append(cur.lines, l)
			out = append(out, "")
		default:
			out = append(out, l)
		}
	}
	return blocks, strings.Join(out, "\n")
}

var spanRE = regexp.MustCompile("`([^`]+)`")

// spans returns the inline code spans of the prose with their lines; a
// span may cross a line break (read as a space).
func spans(prose string) (texts []string, lines []int) {
	for _, m := range spanRE.FindAllStringSubmatchIndex(prose, -1) {
		texts = append(texts, strings.Join(strings.Fields(prose[m[2]:m[3]]), " "))
		lines = append(lines, 1+strings.Count(prose[:m[0]], "\n"))
	}
	return texts, lines
}

// Commands returns the command lines of program prog (mirrorctl or
// mirrord; a path ending in /prog counts too) in the document md.
func Commands(file string, md []byte, prog string) []Command {
	blocks, prose := split(md)
	var cmds []Command
	for _, b := range blocks {
		if b.info == "text" || b.info == "yaml" {
			continue
		}
		for i := 0; i < len(b.lines); i++ {
			start, text := i, strings.TrimSpace(b.lines[i])
			for strings.HasSuffix(text, `\`) && i+1 < len(b.lines) {
				i++
				text = strings.TrimSuffix(text, `\`) + " " + strings.TrimSpace(b.lines[i])
			}
			for _, args := range commandsIn(text, prog) {
				cmds = append(cmds, Command{File: file, Line: b.line + start, Args: args, Text: text, Strict: true})
			}
		}
	}
	texts, lines := spans(prose)
	for i, s := range texts {
		for _, args := range commandsIn(s, prog) {
			cmds = append(cmds, Command{File: file, Line: lines[i], Args: args, Text: s})
		}
	}
	return cmds
}

// commandsIn splits a shell line into its commands and returns the
// arguments of each that runs prog.
func commandsIn(line, prog string) [][]string {
	var out [][]string
	var cur []string
	flush := func() {
		if len(cur) > 0 && (cur[0] == prog || strings.HasSuffix(cur[0], "/"+prog)) {
			out = append(out, cur[1:])
		}
		cur = nil
	}
	ws := words(line)
	for i := 0; i < len(ws); i++ {
		tok := ws[i]
		if tok.op {
			flush()
			continue
		}
		if m := redirRE.FindStringSubmatch(tok.s); m != nil {
			if m[1] == "" && i+1 < len(ws) && !ws[i+1].op {
				i++ // the redirection's target
			}
			continue
		}
		cur = append(cur, tok.s)
	}
	flush()
	return out
}

// redirRE matches a shell redirection word (>file, 2>&1, <in, >> file);
// its group is what follows the operator.
var redirRE = regexp.MustCompile(`^[0-9]*(?:>>|>&|>|<)(.*)$`)

type word struct {
	s  string
	op bool // |, ||, &&, ;, &
}

// words is a small shell tokenizer: single and double quotes, backslash
// escapes, # comments, and the operators that separate commands.
func words(line string) []word {
	var ws []word
	var b strings.Builder
	in := false // a word is being built
	var quote rune
	end := func() {
		if in {
			ws = append(ws, word{s: b.String()})
			b.Reset()
			in = false
		}
	}
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else if r == '\\' && quote == '"' && i+1 < len(rs) {
				i++
				b.WriteRune(rs[i])
			} else {
				b.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == '\\' && i+1 < len(rs):
			i++
			b.WriteRune(rs[i])
			in = true
		case r == ' ' || r == '\t':
			end()
		case r == '#' && !in:
			end()
			return ws
		case r == '&' && strings.HasSuffix(b.String(), ">"):
			b.WriteRune(r) // 2>&1
		case r == '|' || r == '&' || r == ';':
			end()
			if i+1 < len(rs) && (rs[i+1] == '|' || rs[i+1] == '&') && r != ';' {
				i++
			}
			ws = append(ws, word{op: true})
		default:
			b.WriteRune(r)
			in = true
		}
	}
	end()
	return ws
}

// Check parses c against the command tree under root (a fresh tree per
// call: parsing sets flags). Strict commands are checked as cobra would run
// them, references in prose only for their subcommands and flag names.
func Check(root *cobra.Command, c Command) error {
	if !c.Strict {
		return checkReference(root, c.Args)
	}
	cmd, rest, err := root.Find(c.Args)
	if err != nil {
		return err
	}
	cmd.InitDefaultHelpFlag() // cobra adds --help when it executes
	if err := cmd.ParseFlags(rest); err != nil {
		return fmt.Errorf("%s: %w", cmd.CommandPath(), err)
	}
	if help, _ := cmd.Flags().GetBool("help"); help {
		return nil // cobra prints the help and runs nothing
	}
	pos := cmd.Flags().Args()
	if cmd.HasSubCommands() && !cmd.Runnable() {
		if len(pos) > 0 {
			return fmt.Errorf("%s has no subcommand %q", cmd.CommandPath(), pos[0])
		}
		return fmt.Errorf("%s needs a subcommand", cmd.CommandPath())
	}
	if err := cmd.ValidateArgs(pos); err != nil {
		return fmt.Errorf("%s: %w", cmd.CommandPath(), err)
	}
	return nil
}

// checkReference checks a command named in prose, such as
// "mirrorctl leg add N [--path LEG] [--force]": its words must name
// subcommands (placeholders and other arguments aside) and every flag,
// optional ones in brackets included, must be known by the command it
// follows. Flag values and argument counts are not checked.
func checkReference(root *cobra.Command, args []string) error {
	cmd := root
	cmd.InitDefaultHelpFlag()
	for i := 0; i < len(args); i++ {
		tok := strings.Trim(args[i], "[]")
		if strings.HasPrefix(tok, "-") && tok != "-" {
			name, _, hasValue := strings.Cut(tok, "=")
			f, err := lookupFlag(cmd, name)
			if err != nil {
				return err
			}
			if !hasValue && f.NoOptDefVal == "" && i+1 < len(args) && !strings.HasPrefix(strings.Trim(args[i+1], "[]"), "-") {
				i++ // its value
			}
			continue
		}
		if sub := subcommand(cmd, tok); sub != nil {
			cmd = sub
			cmd.InitDefaultHelpFlag()
			continue
		}
		if cmd.HasSubCommands() && !cmd.Runnable() && strings.ToUpper(tok) != tok {
			return fmt.Errorf("%s has no subcommand %q", cmd.CommandPath(), tok)
		}
	}
	return nil
}

func subcommand(cmd *cobra.Command, name string) *cobra.Command {
	for _, c := range cmd.Commands() {
		if c.Name() == name || c.HasAlias(name) {
			return c
		}
	}
	return nil
}

// lookupFlag finds --name or -x among cmd's own and inherited flags.
func lookupFlag(cmd *cobra.Command, name string) (*pflag.Flag, error) {
	for _, fs := range []*pflag.FlagSet{cmd.Flags(), cmd.InheritedFlags()} {
		if long, ok := strings.CutPrefix(name, "--"); ok {
			if f := fs.Lookup(long); f != nil {
				return f, nil
			}
		} else if f := fs.ShorthandLookup(strings.TrimPrefix(name, "-")); f != nil && len(name) == 2 {
			return f, nil
		}
	}
	return nil, fmt.Errorf("%s: unknown flag %s", cmd.CommandPath(), name)
}

// keyRE matches a dotted cluster-file key: section, then .name or [] parts.
var keyRE = regexp.MustCompile(`^([a-z_]+)((?:\[\]|\.[a-z_]+)*)$`)

// fileSuffixes are endings of file names that would otherwise read as keys.
var fileSuffixes = []string{".yaml", ".yml", ".key", ".example", ".json", ".service", ".secret", ".md", ".sock", ".go"}

// Keys returns the cluster-file keys the document names: inline spans
// whose first part is one of sections, and every key path of its ```yaml
// blocks.
func Keys(file string, md []byte, sections []string) ([]Key, error) {
	blocks, prose := split(md)
	var keys []Key
	texts, lines := spans(prose)
	for i, s := range texts {
		m := keyRE.FindStringSubmatch(s)
		if m == nil || !slices.Contains(sections, m[1]) || m[2] == "" {
			continue
		}
		if slices.ContainsFunc(fileSuffixes, func(suf string) bool { return strings.HasSuffix(s, suf) }) {
			continue
		}
		path := []string{m[1]}
		for _, part := range regexp.MustCompile(`\[\]|\.[a-z_]+`).FindAllString(m[2], -1) {
			path = append(path, strings.TrimPrefix(part, "."))
		}
		keys = append(keys, Key{File: file, Line: lines[i], Path: path, Text: s})
	}
	for _, b := range blocks {
		if b.info != "yaml" {
			continue
		}
		v := viper.New()
		v.SetConfigType("yaml")
		if err := v.ReadConfig(strings.NewReader(strings.Join(b.lines, "\n"))); err != nil {
			return nil, fmt.Errorf("%s:%d: a yaml block that does not parse: %w", file, b.line, err)
		}
		for _, p := range paths(nil, v.AllSettings()) {
			keys = append(keys, Key{File: file, Line: b.line, Path: p, Text: strings.Join(p, ".")})
		}
	}
	return keys, nil
}

// paths lists every leaf key path of a decoded YAML value (lists as []).
func paths(prefix []string, v any) [][]string {
	switch x := v.(type) {
	case map[string]any:
		var out [][]string
		for _, k := range slices.Sorted(maps.Keys(x)) {
			out = append(out, paths(append(slices.Clip(prefix), k), x[k])...)
		}
		if len(out) == 0 && len(prefix) > 0 {
			out = append(out, prefix)
		}
		return out
	case []any:
		var out [][]string
		for _, e := range x {
			if m, ok := e.(map[string]any); ok {
				out = append(out, paths(append(slices.Clip(prefix), "[]"), m)...)
			}
		}
		if len(out) == 0 {
			out = append(out, prefix)
		}
		return out
	}
	return [][]string{prefix}
}

// ErrNotAList is returned by Variants for a path that steps into a list
// by name, or indexes a mapping with [].
var ErrNotAList = errors.New("wrong kind of value on the key's path")

// Variant is a copy of a decoded cluster file with one key set.
type Variant struct {
	Settings map[string]any
	Path     []string // the key's concrete path (list elements by index)
	Present  bool     // the key was in the file already (value unchanged)
}

// Variants returns copies of settings (a decoded cluster file, as
// viper's AllSettings gives it) with the key at path set to value where
// it is absent; a path through a list ([]) gives one copy per element of
// that list (a new element when the list is absent or empty). The key
// exists if the loader accepts it in any copy.
func Variants(settings map[string]any, path []string, value any) ([]Variant, error) {
	concrete, err := expand(settings, path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", strings.Join(path, "."), err)
	}
	var vs []Variant
	for _, p := range concrete {
		root, present := apply(deepCopy(settings), p, value)
		vs = append(vs, Variant{Settings: root.(map[string]any), Path: p, Present: present})
	}
	return vs, nil
}

// expand turns the [] steps of p into the indexes of node's lists.
func expand(node any, p []string) ([][]string, error) {
	if len(p) == 0 {
		return [][]string{nil}, nil
	}
	prefix := func(step string, subs [][]string) [][]string {
		out := make([][]string, len(subs))
		for i, s := range subs {
			out[i] = append([]string{step}, s...)
		}
		return out
	}
	if p[0] == "[]" {
		if node == nil {
			subs, err := expand(nil, p[1:])
			return prefix("0", subs), err
		}
		l, ok := node.([]any)
		if !ok {
			return nil, fmt.Errorf("%w: [] on a value that is not a list", ErrNotAList)
		}
		if len(l) == 0 {
			subs, err := expand(nil, p[1:])
			return prefix("0", subs), err
		}
		var out [][]string
		for i, e := range l {
			subs, err := expand(e, p[1:])
			if err != nil {
				return nil, err
			}
			out = append(out, prefix(strconv.Itoa(i), subs)...)
		}
		return out, nil
	}
	var child any
	switch x := node.(type) {
	case nil:
	case map[string]any:
		child = x[p[0]]
	case []any:
		return nil, fmt.Errorf("%w: a list where %q is looked up: name its elements with []", ErrNotAList, p[0])
	default:
		return nil, fmt.Errorf("%w: a plain value where %q is looked up", ErrNotAList, p[0])
	}
	subs, err := expand(child, p[1:])
	return prefix(p[0], subs), err
}

// apply sets the key at the concrete path p below node to value unless it
// is there, creating mappings and list elements on the way.
func apply(node any, p []string, value any) (any, bool) {
	if len(p) == 0 {
		if node != nil {
			return node, true
		}
		return value, false
	}
	var present bool
	if idx, err := strconv.Atoi(p[0]); err == nil {
		l, _ := node.([]any)
		for len(l) <= idx {
			l = append(l, map[string]any{})
		}
		l[idx], present = apply(l[idx], p[1:], value)
		return l, present
	}
	m, _ := node.(map[string]any)
	if m == nil {
		m = map[string]any{}
	}
	m[p[0]], present = apply(m[p[0]], p[1:], value)
	return m, present
}

// deepCopy copies maps and lists; other values are shared.
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = deepCopy(e)
		}
		return l
	}
	return v
}
