package bench

import (
	"strings"
	"testing"
)

func TestMedianAndPercentile(t *testing.T) {
	if got := Median([]float64{5, 1, 3}); got != 3 {
		t.Errorf("Median odd = %v, want 3", got)
	}
	if got := Median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("Median even = %v, want 2.5", got)
	}
	xs := make([]float64, 100)
	for i := range xs {
		xs[i] = float64(i + 1)
	}
	if got := Percentile(xs, 99); got != 99 {
		t.Errorf("p99 = %v, want 99", got)
	}
	if got := Percentile(xs, 50); got != 50 {
		t.Errorf("p50 = %v, want 50", got)
	}
}

func TestTableRatios(t *testing.T) {
	tb := Table{Title: "t", Unit: "IOPS", Base: "peer"}
	tb.Add("hamirror", 80)
	tb.Add("peer", 100)
	if r := tb.Ratio("hamirror"); r != 0.8 {
		t.Fatalf("ratio = %v, want 0.8", r)
	}
	var sb strings.Builder
	tb.Print(&sb)
	if !strings.Contains(sb.String(), "0.80x") {
		t.Fatalf("table lacks ratio:\n%s", sb.String())
	}
}
