package node

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsServer serves one node's registry on metrics.listen. Each node
// has its own registry (never the global default one): two nodes run in
// one test process. A reload can move it to another address: the new one
// is bound first, so a bad address leaves the old endpoint serving.
type metricsServer struct {
	reg *prometheus.Registry

	mu   sync.Mutex
	ln   net.Listener // nil: not serving
	srv  *http.Server
	addr string // as configured
}

func newMetricsServer() *metricsServer {
	return &metricsServer{reg: prometheus.NewRegistry()}
}

// register adds the node's collector and the process and Go runtime
// collectors to the registry.
func (m *metricsServer) register(c prometheus.Collector) error {
	for _, c := range []prometheus.Collector{c, collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector()} {
		if err := m.reg.Register(c); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	return nil
}

// validateMetrics checks metrics.listen: empty (no metrics) or host:port.
func validateMetrics(c MetricsConfig) error {
	if c.Listen == "" {
		return nil
	}
	if _, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" {
		return keyErr("metrics.listen", "%q: want HOST:PORT (like 127.0.0.1:9405 or [::]:9405), or leave it out for no metrics", c.Listen)
	}
	return nil
}

// serve moves the endpoint to addr ("" stops it). On error the endpoint
// serves where it did.
func (m *metricsServer) serve(addr string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if addr == m.addr && (m.ln != nil || addr == "") {
		return nil
	}
	var ln net.Listener
	var srv *http.Server
	if addr != "" {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("metrics.listen: cannot listen on %s: %w", addr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/" {
				http.NotFound(w, r)
				return
			}
			fmt.Fprintln(w, "hamirror mirrord: metrics at /metrics")
		})
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
		go srv.Serve(ln) // returns http.ErrServerClosed once stopped
	}
	m.stopLocked()
	m.ln, m.srv, m.addr = ln, srv, addr
	return nil
}

// Addr is the address the endpoint listens on ("" when off).
func (m *metricsServer) Addr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ln == nil {
		return ""
	}
	return m.ln.Addr().String()
}

func (m *metricsServer) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopLocked()
	m.ln, m.srv, m.addr = nil, nil, ""
}

func (m *metricsServer) stopLocked() {
	if m.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if m.srv.Shutdown(ctx) != nil {
		m.srv.Close()
	}
}
