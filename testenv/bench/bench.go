// Package bench holds the small helpers every hamirror benchmark section
// shares: medians over alternating runs and a fixed-width table that puts
// hamirror beside its peers with the ratios.
//
//	t := bench.Table{Title: "NBD, 4 KiB random write QD16", Unit: "IOPS", Base: "nbdkit"}
//	t.Add("hamirror", bench.Median(runs["hamirror"]))
//	t.Add("nbdkit", bench.Median(runs["nbdkit"]))
//	t.Print(os.Stdout)
package bench

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Median returns the median of xs (0 for none). xs is not modified.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Percentile returns the p-th percentile (0..100) of xs by nearest rank.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	rank := int(p/100*float64(len(s))+0.5) - 1
	rank = max(0, min(rank, len(s)-1))
	return s[rank]
}

// Row is one measured subject in a table.
type Row struct {
	Name  string
	Value float64
	Note  string
}

// Table prints subjects side by side with their ratio to Base (the peer the
// target is expressed against). Higher is better unless LowerIsBetter.
type Table struct {
	Title         string
	Unit          string
	Base          string
	LowerIsBetter bool
	Rows          []Row
}

// Add appends a row.
func (t *Table) Add(name string, value float64, note ...string) {
	t.Rows = append(t.Rows, Row{Name: name, Value: value, Note: strings.Join(note, " ")})
}

// Ratio returns Rows[name].Value / Rows[Base].Value, or 0 if either is missing.
func (t *Table) Ratio(name string) float64 {
	var v, b float64
	for _, r := range t.Rows {
		if r.Name == name {
			v = r.Value
		}
		if r.Name == t.Base {
			b = r.Value
		}
	}
	if b == 0 {
		return 0
	}
	return v / b
}

// Print writes the table.
func (t *Table) Print(w io.Writer) {
	fmt.Fprintf(w, "\n%s (%s", t.Title, t.Unit)
	if t.LowerIsBetter {
		fmt.Fprint(w, ", lower is better")
	}
	fmt.Fprintln(w, ")")
	fmt.Fprintf(w, "  %-28s %14s %10s  %s\n", "subject", t.Unit, "vs "+t.Base, "")
	for _, r := range t.Rows {
		ratio := "-"
		if x := t.Ratio(r.Name); x != 0 {
			ratio = fmt.Sprintf("%.2fx", x)
		}
		fmt.Fprintf(w, "  %-28s %14.1f %10s  %s\n", r.Name, r.Value, ratio, r.Note)
	}
}
