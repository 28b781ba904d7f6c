package node

import (
	"log/slog"
	"sync"
	"time"
)

// ops is the node's operator-facing side: the log level a reload can
// change, the Prometheus endpoint, the record of group starts and
// operations the metrics show, and the reload's own state.
type ops struct {
	level   slog.LevelVar
	starts  *startRecorder
	metrics *metricsServer

	// reloadMu serialises reloads (SIGHUP and the control op) and guards
	// what only a reload changes: cfg.Log and cfg.Metrics.
	reloadMu sync.Mutex
	figMu    sync.Mutex // guards reloads (scrapes never wait for a reload)
	reloads  reloadStats
}

// reloadStats are the reload figures the metrics show.
type reloadStats struct {
	Applied, Partial, Refused uint64 // reloads by result
	LastOK                    bool   // the last reload's file was valid (true before any)
	LastAt                    time.Time
	// Pending counts the keys of the file last read that differ from
	// what runs and were not applied (restart needed, or metrics.listen
	// could not be bound).
	Pending int
}

// newOps prepares the operator side for cfg and wraps logger so that
// log.level decides what it logs.
func newOps(cfg *Config, logger *slog.Logger) (*ops, *slog.Logger) {
	o := &ops{starts: newStartRecorder(), reloads: reloadStats{LastOK: true}}
	o.level.Set(cfg.Log.Level)
	o.metrics = newMetricsServer()
	return o, slog.New(levelHandler{next: logger.Handler(), level: &o.level})
}

func (o *ops) reloadFigures() reloadStats {
	o.figMu.Lock()
	defer o.figMu.Unlock()
	return o.reloads
}

// metricsSnapshot is what one scrape reads of this node.
func (n *Node) metricsSnapshot() metricsSnapshot {
	s := metricsSnapshot{Status: n.Status(), Starts: n.ops.starts.snapshot(), Reloads: n.ops.reloadFigures()}
	if n.svc != nil {
		ss := n.svc.Status()
		s.Services = &ss
	}
	return s
}

// startMetrics serves the metrics on metrics.listen (Run). An address
// that cannot be bound is an error in the log, not a reason to stop the
// node: a reload with a better metrics.listen tries again.
func (n *Node) startMetrics() {
	n.ops.reloadMu.Lock()
	defer n.ops.reloadMu.Unlock()
	if err := n.ops.metrics.serve(n.cfg.Metrics.Listen); err != nil {
		n.log.Error("running without metrics: fix metrics.listen and reload (SIGHUP)", "err", err)
	} else if a := n.ops.metrics.Addr(); a != "" {
		n.log.Info("metrics", "listen", a)
	}
}

// MetricsAddr is the address the node's Prometheus endpoint listens on
// ("" when it serves none): metrics.listen, with the port chosen when it
// asked for port 0.
func (n *Node) MetricsAddr() string { return n.ops.metrics.Addr() }
