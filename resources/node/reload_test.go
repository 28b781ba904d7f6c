package node

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// reload calls the "reload" control op as mirrorctl would.
func (n *runningNode) reload(t *testing.T) (ReloadResult, error) {
	t.Helper()
	v, err := n.Handlers()["reload"](json.RawMessage("null"))
	if err != nil {
		return ReloadResult{}, err
	}
	res, ok := v.(ReloadResult)
	if !ok {
		t.Fatalf("reload answered %T", v)
	}
	b, err := json.Marshal(res) // what mirrorctl receives
	if err != nil {
		t.Fatal(err)
	}
	var back ReloadResult
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	return back, nil
}

func keysOf(cs []Change) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Key)
	}
	slices.Sort(out)
	return out
}

// runningAlone starts node b alone and waits until it runs the group.
func runningAlone(t *testing.T, p *testPair, s settings) (*runningNode, string) {
	t.Helper()
	path := p.write(t, "b", s)
	b := p.start(t, "b", path)
	waitScrape(t, b.MetricsAddr(), 10*time.Second, "b runs the group", func(f families) bool {
		return f.is("hamirror_group_state", 1, "state=running")
	})
	return b, path
}

// TestReloadAppliesLiveChanges: a file changing only live keys is applied
// at once (group threshold, the app's monitor interval and start
// timeout, the log level, the metrics address), and the metrics show it.
func TestReloadAppliesLiveChanges(t *testing.T) {
	p := newTestPair(t)
	b, _ := runningAlone(t, p, defaultSettings())
	oldAddr := b.MetricsAddr()
	if strings.Contains(b.log.String(), "command ran") {
		t.Fatalf("debug records logged at log.level info")
	}
	s := defaultSettings()
	s.threshold, s.monitorInterval, s.startTimeout, s.logLevel = 2, "150ms", "45s", "debug"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	newAddr := l.Addr().String()
	l.Close()
	s.metrics = newAddr
	p.write(t, "b", s)
	res, err := b.reload(t)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"group.migration_threshold", "log.level", "metrics.listen", "resources[0].monitor_interval", "resources[0].start_timeout"}
	if got := keysOf(res.Applied); !slices.Equal(got, want) || len(res.Refused) > 0 {
		t.Fatalf("reload applied %v refused %v, want applied %v and nothing refused (%s)", got, res.Refused, want, res.Message)
	}
	if !strings.Contains(res.Message, "group.migration_threshold (3 -> 2)") {
		t.Errorf("message does not say what changed: %s", res.Message)
	}
	st := b.Status().Group
	if st.MigrationThreshold != 2 {
		t.Errorf("migration threshold %d after the reload, want 2", st.MigrationThreshold)
	}
	if b.MetricsAddr() != newAddr {
		t.Errorf("metrics on %s, want %s", b.MetricsAddr(), newAddr)
	}
	if _, err := scrape(t, oldAddr); err == nil {
		t.Errorf("the old metrics address %s still serves", oldAddr)
	}
	f, err := scrape(t, newAddr)
	if err != nil {
		t.Fatal(err)
	}
	if !f.is("hamirror_group_migration_threshold", 2) || !f.is("hamirror_config_reloads_total", 1, "result=applied") ||
		!f.is("hamirror_config_restart_pending", 0) {
		t.Errorf("metrics do not show the reload")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(b.log.String(), "command ran") { // the exec agent's debug record of each monitor
		if time.Now().After(deadline) {
			t.Fatalf("no debug record after log.level: debug")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(b.log.String(), "reload: applied") {
		t.Errorf("the reload is not logged")
	}

	// A metrics address that cannot be bound is refused alone; the old
	// endpoint keeps serving and the other live change applies.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s.metrics, s.threshold = busy.Addr().String(), 4
	p.write(t, "b", s)
	res, err = b.reload(t)
	if err != nil {
		t.Fatal(err)
	}
	if got := keysOf(res.Refused); !slices.Equal(got, []string{"metrics.listen"}) || !slices.Equal(keysOf(res.Applied), []string{"group.migration_threshold"}) {
		t.Errorf("busy metrics address: applied %v refused %v", keysOf(res.Applied), got)
	}
	if !strings.Contains(res.Message, "group.migration_threshold (2 -> 4)") {
		t.Errorf("the second reload is not compared with what the first applied: %s", res.Message)
	}
	if _, err := scrape(t, newAddr); err != nil || b.Status().Group.MigrationThreshold != 4 {
		t.Errorf("after a refused metrics.listen: old endpoint %v, threshold %d", err, b.Status().Group.MigrationThreshold)
	}
}

// TestReloadRefusesRestartOnlyKeys: a file that changes keys needing a
// restart gets an answer naming each of them; they do not apply, while
// the live change in the same file does.
func TestReloadRefusesRestartOnlyKeys(t *testing.T) {
	p := newTestPair(t)
	b, _ := runningAlone(t, p, defaultSettings())
	s := defaultSettings()
	s.threshold = 5
	s.dead = "800ms"
	s.startCmd = "touch " + p.file("b", "up") + " && true"
	p.write(t, "b", s)
	res, err := b.reload(t)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("answer: %s", res.Message)
	if got := keysOf(res.Refused); !slices.Equal(got, []string{"resources[0].start", "timing.dead"}) {
		t.Fatalf("refused %v, want resources[0].start and timing.dead (%s)", got, res.Message)
	}
	if got := keysOf(res.Applied); !slices.Equal(got, []string{"group.migration_threshold"}) {
		t.Errorf("applied %v, want the threshold alone", got)
	}
	for _, want := range []string{"needs a restart of mirrord", "timing.dead (500ms -> 800ms)", "resources[0].start"} {
		if !strings.Contains(res.Message, want) {
			t.Errorf("message lacks %q: %s", want, res.Message)
		}
	}
	if d := b.member.Status().Timing.Dead; d != 500*time.Millisecond {
		t.Errorf("membership runs with dead %v, want the old 500ms", d)
	}
	if th := b.Status().Group.MigrationThreshold; th != 5 {
		t.Errorf("threshold %d, want 5 (live, in the same file)", th)
	}
	f, err := scrape(t, b.MetricsAddr())
	if err != nil {
		t.Fatal(err)
	}
	if !f.is("hamirror_config_restart_pending", 2) || !f.is("hamirror_config_reloads_total", 1, "result=partial") {
		t.Errorf("metrics do not show the pending restart")
	}
	if !strings.Contains(b.log.String(), "NOT applied") {
		t.Errorf("the refused keys are not logged")
	}
}

// TestReloadRefusesBadFile: a file that does not load is refused as a
// whole, naming the key; nothing of it applies and the node runs on.
func TestReloadRefusesBadFile(t *testing.T) {
	p := newTestPair(t)
	b, path := runningAlone(t, p, defaultSettings())
	for _, tc := range []struct {
		name, key string
		edit      func(s *settings) string // returns the file text, "" to write s
	}{
		{"bad threshold", "group.migration_threshold", func(s *settings) string { s.threshold = 0; return "" }},
		{"bad metrics address", "metrics.listen", func(s *settings) string { s.metrics = "nowhere"; return "" }},
		{"bad log level", "log.level", func(s *settings) string { s.logLevel = "chatty"; return "" }},
		{"unknown section", "bogus", func(s *settings) string { s.extra = "bogus: {x: 1}\n"; return "" }},
		{"not YAML", "", func(*settings) string { return "cluster: [unclosed\n" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := defaultSettings()
			s.logLevel = "debug" // a live change that must not apply with the bad one
			s.threshold = 7
			if text := tc.edit(&s); text != "" {
				if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			} else {
				p.write(t, "b", s)
			}
			_, err := b.reload(t)
			var ke *heartbeat.KeyError
			switch {
			case err == nil:
				t.Fatalf("a bad file was accepted")
			case tc.key != "" && (!errors.As(err, &ke) || ke.Key != tc.key):
				t.Errorf("refusal %v does not name %s", err, tc.key)
			case !strings.Contains(err.Error(), "unchanged"):
				t.Errorf("refusal does not say the running configuration is unchanged: %v", err)
			}
			if th := b.Status().Group.MigrationThreshold; th != 3 {
				t.Errorf("threshold %d after a refused reload, want 3", th)
			}
			if b.ops.level.Level() != 0 {
				t.Errorf("log level %v after a refused reload, want info", b.ops.level.Level())
			}
		})
	}
	f, err := scrape(t, b.MetricsAddr())
	if err != nil {
		t.Fatal(err)
	}
	if !f.is("hamirror_config_last_reload_successful", 0) || !f.is("hamirror_config_reloads_total", 5, "result=refused") ||
		!f.is("hamirror_group_state", 1, "state=running") {
		t.Errorf("after refused reloads: metrics wrong or the group stopped")
	}
	p.write(t, "b", defaultSettings())
	if res, err := b.reload(t); err != nil || len(res.Applied)+len(res.Refused) != 0 {
		t.Errorf("the original file again: %+v, %v; want nothing changed", res, err)
	}
}
