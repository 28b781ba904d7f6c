package main

import (
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"syscall"

	"github.com/hamirror/hamirror/resources/node"
)

// watchReload answers SIGHUP (systemctl reload; the unit's ExecReload
// runs `mirrorctl config check` first) until stop is called: mirrord
// re-reads the cluster file, says whether it loads and which sections
// differ from the running ones. The node cannot take changes live yet:
// they apply at mirrord's next start, and the log says how to get there
// without an outage. Without this, SIGHUP's default action would kill
// mirrord on the spot, with no hand-over.
func watchReload(running *node.Config, log *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-hup:
				reload(running, log)
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
	}
}

func reload(running *node.Config, log *slog.Logger) {
	cfg, err := node.LoadConfig(running.Path, running.Heartbeat.Self)
	if err != nil {
		log.Error("SIGHUP: the cluster file does not load; mirrord keeps running with the file it started with", "err", err)
		return
	}
	changed := changedSections(running, cfg)
	if len(changed) == 0 {
		log.Info("SIGHUP: the cluster file loads and matches the running configuration", "file", cfg.Path)
		return
	}
	log.Warn("SIGHUP: the cluster file loads, but these sections differ from the running ones and take effect only when mirrord restarts "+
		"(restart mirrord on the standby node first, then `mirrorctl move` on the active one and restart it there)",
		"file", cfg.Path, "sections", strings.Join(changed, ", "))
}

// changedSections names the parts of the file that differ between a and b.
func changedSections(a, b *node.Config) []string {
	var out []string
	ah, bh := a.Heartbeat, b.Heartbeat
	for _, s := range []struct {
		name string
		x, y any
	}{
		{"cluster", []any{ah.Cluster, ah.KeyFile, ah.Preferred, ah.Failback, ah.Port, ah.Baud, ah.StateDir},
			[]any{bh.Cluster, bh.KeyFile, bh.Preferred, bh.Failback, bh.Port, bh.Baud, bh.StateDir}},
		{"timing", ah.Timing, bh.Timing},
		{"nodes", ah.Nodes, bh.Nodes},
		{"disks", ah.Disks, bh.Disks},
		{"ping", []any{ah.PingTargets, ah.PingInterval}, []any{bh.PingTargets, bh.PingInterval}},
		{"iscsi", a.ISCSI, b.ISCSI},
		{"volume", a.Volume, b.Volume},
		{"fencing", a.Fencing, b.Fencing},
		{"group and resources", a.Group, b.Group},
		{"services", a.Services, b.Services},
		{"metrics", a.Metrics, b.Metrics},
		{"control", a.Control, b.Control},
	} {
		if !reflect.DeepEqual(s.x, s.y) {
			out = append(out, s.name)
		}
	}
	return out
}
