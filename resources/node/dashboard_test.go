package node

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dashboardPath is the Grafana dashboard shipped for mirrord's metrics.
const dashboardPath = "../../docs/grafana/hamirror.json"

// TestDashboardNamesOnlyExportedMetrics parses the Grafana dashboard,
// takes every PromQL expression in it (panel targets and templating
// queries) and checks that each metric it names is one the node's
// registry exports: a renamed or dropped metric breaks this test, not
// the operator's dashboard.
func TestDashboardNamesOnlyExportedMetrics(t *testing.T) {
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s is not JSON: %v", dashboardPath, err)
	}
	exprs := dashboardExprs(dash)
	if len(exprs) < 20 {
		t.Fatalf("only %d expressions found in %s", len(exprs), dashboardPath)
	}
	exported := registryNames(t)
	used := map[string]bool{}
	for _, e := range exprs {
		names := promqlMetricNames(e)
		if len(names) == 0 {
			t.Errorf("expression names no metric: %s", e)
		}
		for _, n := range names {
			used[n] = true
			if !exported[n] {
				t.Errorf("%q is not a metric mirrord exports (in %s)", n, e)
			}
		}
	}
	for _, want := range []string{"hamirror_volume_state", "hamirror_leg_state", "hamirror_resync_done_bytes",
		"hamirror_peer_state", "hamirror_medium_state", "hamirror_resource_state", "hamirror_resource_failures",
		"hamirror_group_starts_total", "hamirror_group_start_last_phase_seconds"} {
		if !used[want] {
			t.Errorf("the dashboard shows no %s", want)
		}
	}
	panels, _ := dash["panels"].([]any)
	for _, p := range panels {
		p, _ := p.(map[string]any)
		if p["type"] == "row" {
			continue
		}
		if ts, _ := p["targets"].([]any); len(ts) == 0 {
			t.Errorf("panel %q has no query", p["title"])
		}
	}
}

// registryNames are the metric names a node's registry exports: the
// collector over a snapshot with every part present, and the process and
// Go runtime collectors, gathered as a scrape would.
func registryNames(t *testing.T) map[string]bool {
	t.Helper()
	ms := newMetricsServer()
	if err := ms.register(newCollector(fullSnapshot)); err != nil {
		t.Fatal(err)
	}
	fams, err := ms.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range fams {
		names[f.GetName()] = true
	}
	return names
}

// dashboardExprs collects the PromQL of a dashboard: every "expr" string
// (panel targets, in rows too) and the templating variables' queries.
func dashboardExprs(dash map[string]any) []string {
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, val := range x {
				if s, ok := val.(string); ok && k == "expr" && s != "" {
					out = append(out, s)
				}
				walk(val)
			}
		case []any:
			for _, val := range x {
				walk(val)
			}
		}
	}
	walk(dash["panels"])
	tmpl, _ := dash["templating"].(map[string]any)
	list, _ := tmpl["list"].([]any)
	for _, v := range list {
		v, _ := v.(map[string]any)
		if v["type"] != "query" {
			continue
		}
		q := v["query"]
		if m, ok := q.(map[string]any); ok {
			q = m["query"]
		}
		if s, ok := q.(string); ok {
			out = append(out, templateQuery(s))
		}
	}
	return out
}

// templateQuery turns Grafana's label_values(SELECTOR, LABEL) into the
// PromQL selector it queries.
func templateQuery(q string) string {
	if m := regexp.MustCompile(`^\s*label_values\((.*),\s*[a-zA-Z_]\w*\s*\)\s*$`).FindStringSubmatch(q); m != nil {
		return m[1]
	}
	return q
}

// promqlMetricNames returns the metric names an expression selects: the
// identifiers outside label matchers, strings, ranges and grouping
// clauses that are neither functions, aggregations nor keywords. Enough
// PromQL for dashboards; an identifier it does not know counts as a
// metric name, so a mistake shows as an unknown metric.
func promqlMetricNames(expr string) []string {
	keywords := []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
		"group_right", "atan2", "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
		"bottomk", "topk", "quantile", "limitk", "limit_ratio", "inf", "nan", "start", "end"}
	grouping := []string{"by", "without", "on", "ignoring", "group_left", "group_right"}
	var names []string
	s := expr
	skipTo := func(i int, close byte) int { // index after the matching close, strings skipped
		for i < len(s) && s[i] != close {
			if s[i] == '"' || s[i] == '\'' || s[i] == '`' {
				i = skipString(s, i)
				continue
			}
			i++
		}
		return i + 1
	}
	isStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isPart := func(c byte) bool { return isStart(c) || c >= '0' && c <= '9' }
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = skipString(s, i)
		case c == '{':
			i = skipTo(i+1, '}')
		case c == '[':
			i = skipTo(i+1, ']')
		case c == '$': // a Grafana variable
			i++
			if i < len(s) && s[i] == '{' {
				i = skipTo(i+1, '}')
			}
			for i < len(s) && isPart(s[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(s) && (isPart(s[i]) || s[i] == '.') {
				i++
			}
		case isStart(c):
			j := i
			for j < len(s) && isPart(s[j]) {
				j++
			}
			word := s[i:j]
			k := j
			for k < len(s) && (s[k] == ' ' || s[k] == '\t' || s[k] == '\n') {
				k++
			}
			switch {
			case slices.Contains(grouping, strings.ToLower(word)) && k < len(s) && s[k] == '(':
				j = skipTo(k+1, ')')
			case k < len(s) && s[k] == '(': // a function
			case slices.Contains(keywords, strings.ToLower(word)):
			default:
				if !slices.Contains(names, word) {
					names = append(names, word)
				}
			}
			i = j
		default:
			i++
		}
	}
	return names
}

// skipString returns the index after the string literal starting at i.
func skipString(s string, i int) int {
	q := s[i]
	for i++; i < len(s); i++ {
		switch {
		case s[i] == '\\' && q != '`':
			i++
		case s[i] == q:
			return i + 1
		}
	}
	return i
}

func TestPromQLMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`hamirror_term`, []string{"hamirror_term"}},
		{`sum by (instance, reason) (rate(hamirror_heartbeat_frames_refused_total{instance=~"$instance"}[$__rate_interval]))`,
			[]string{"hamirror_heartbeat_frames_refused_total"}},
		{`hamirror_resync_done_bytes / (hamirror_resync_total_bytes > 0) and on(instance) hamirror_resync_running == 1`,
			[]string{"hamirror_resync_done_bytes", "hamirror_resync_total_bytes", "hamirror_resync_running"}},
		{`max_over_time(hamirror_term[1h:5m]) offset 5m > bool 2`, []string{"hamirror_term"}},
		{`hamirror_role{role="active", x='a}b'} * on(instance) group_left(node) hamirror_info`, []string{"hamirror_role", "hamirror_info"}},
		{`topk(3, hamirror_leg_out_of_sync_bytes{slot!~"${slot}"}) or vector(0)`, []string{"hamirror_leg_out_of_sync_bytes"}},
		{`sum without(slot) (hamirrror_typo)`, []string{"hamirrror_typo"}},
		{`{__name__="hamirror_term"}`, nil},
		{templateQuery(`label_values(hamirror_info, instance)`), []string{"hamirror_info"}},
	} {
		if got := promqlMetricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("promqlMetricNames(%s) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}
