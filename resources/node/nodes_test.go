package node

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/hamirror/hamirror/heartbeat"
)

// testPair is the files of a two-node, membership-only cluster on
// loopback (a: 127.0.0.1, b: 127.0.0.2) whose group is one exec
// resource "app". Each node has its own copy of the cluster file (the
// same but for the app's state files and state_dir), so that the two
// nodes of one test process keep their app apart.
type testPair struct {
	dir           string
	port, svcPort int
}

func newTestPair(t *testing.T) *testPair {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "cluster.key")
	if err := os.WriteFile(key, []byte("an-ops-test-cluster-key-of-enough-bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &testPair{dir: dir, port: freePort(t, "udp"), svcPort: freePort(t, "tcp")}
}

// freePort finds a port free on both loopback addresses the nodes use.
func freePort(t *testing.T, network string) int {
	t.Helper()
	for range 50 {
		var port int
		var closers []func() error
		ok := true
		for _, ip := range []string{"127.0.0.1", "127.0.0.2"} {
			addr := fmt.Sprintf("%s:%d", ip, port)
			if network == "udp" {
				c, err := net.ListenPacket("udp", addr)
				if err != nil {
					ok = false
					break
				}
				closers = append(closers, c.Close)
				port = c.LocalAddr().(*net.UDPAddr).Port
			} else {
				l, err := net.Listen("tcp", addr)
				if err != nil {
					ok = false
					break
				}
				closers = append(closers, l.Close)
				port = l.Addr().(*net.TCPAddr).Port
			}
		}
		for _, c := range closers {
			c()
		}
		if ok {
			return port
		}
	}
	t.Fatalf("no free %s port on 127.0.0.1 and 127.0.0.2", network)
	return 0
}

// settings are the parts of the cluster file a test changes.
type settings struct {
	threshold       int
	monitorInterval string
	startTimeout    string
	dead            string
	logLevel        string
	metrics         string
	startCmd        string // "" : touch the up file
	extra           string // appended as is
}

func defaultSettings() settings {
	return settings{threshold: 3, monitorInterval: "200ms", startTimeout: "30s", dead: "500ms", logLevel: "info",
		metrics: "127.0.0.1:0"}
}

// write writes node self's cluster file and returns its path.
func (p *testPair) write(t *testing.T, self string, s settings) string {
	t.Helper()
	up, fail := p.file(self, "up"), p.file(self, "fail")
	start := s.startCmd
	if start == "" {
		start = "touch " + up
	}
	text := fmt.Sprintf(`
cluster:
  name: opstest
  key_file: %s
  preferred: a
  port: %d
  state_dir: %s
timing: {keepalive: 50ms, warn: 250ms, dead: %s, initdead: 1s}
nodes:
  - id: a
    links: [{medium: nic1, address: 127.0.0.1}]
  - id: b
    links: [{medium: nic1, address: 127.0.0.2}]
services: {port: %d}
metrics: {listen: %q}
log: {level: %s}
group: {migration_threshold: %d}
resources:
  - name: app
    type: exec
    start: %q
    stop: "rm -f %s"
    monitor: "if [ -e %s ]; then rm -f %s; exit 1; fi; [ -e %s ] || exit 7"
    monitor_interval: %s
    start_timeout: %s
%s`, filepath.Join(p.dir, "cluster.key"), p.port, filepath.Join(p.dir, "state-"+self), s.dead, p.svcPort, s.metrics,
		s.logLevel, s.threshold, start, up, fail, fail, up, s.monitorInterval, s.startTimeout, s.extra)
	path := filepath.Join(p.dir, self+".yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// file is one of node self's app state files (up, fail).
func (p *testPair) file(self, name string) string {
	return filepath.Join(p.dir, self+"-"+name)
}

// runningNode is a node run by a test.
type runningNode struct {
	*Node
	log  *syncBuffer
	stop func()
}

// start runs node self from the file at path until the test ends.
func (p *testPair) start(t *testing.T, self, path string) *runningNode {
	t.Helper()
	cfg, err := LoadConfig(path, heartbeat.NodeID(self))
	if err != nil {
		t.Fatal(err)
	}
	buf := &syncBuffer{}
	// Debug at the base, as cmd/mirrord does: log.level decides.
	logger := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	n, err := New(cfg, Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("node %s: %v", self, err)
			}
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("node %s log:\n%s", self, buf.String())
		}
	})
	if cfg.Metrics.Listen != "" { // Run binds it: wait for that
		for deadline := time.Now().Add(5 * time.Second); n.MetricsAddr() == ""; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("node %s: no metrics endpoint on %s", self, cfg.Metrics.Listen)
			}
		}
	}
	return &runningNode{Node: n, log: buf, stop: stop}
}

// syncBuffer is a log sink tests can read while the node writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// families is one scrape, parsed with Prometheus' own text parser.
type families map[string]*dto.MetricFamily

// scrape fetches and parses addr's /metrics.
func scrape(t *testing.T, addr string) (families, error) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parsing the scrape: %w", err)
	}
	return fams, nil
}

// value is the sample of name whose labels include want ("k=v" pairs).
func (f families) value(name string, want ...string) (float64, bool) {
	fam := f[name]
	if fam == nil {
		return 0, false
	}
next:
	for _, m := range fam.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for _, w := range want {
			k, v, _ := strings.Cut(w, "=")
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// is reports whether name{want...} has the value v.
func (f families) is(name string, v float64, want ...string) bool {
	got, ok := f.value(name, want...)
	return ok && got == v
}

// waitScrape scrapes addr until cond holds, or fails the test after
// timeout with what was last seen.
func waitScrape(t *testing.T, addr string, timeout time.Duration, what string, cond func(families) bool) families {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f, err := scrape(t, addr)
		if err == nil && cond(f) {
			return f
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not seen within %v (last scrape err %v)", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
