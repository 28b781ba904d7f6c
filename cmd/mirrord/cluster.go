package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"
	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/resources/node"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

// clusterFlags are the root command's flags for cluster mode.
type clusterFlags struct {
	config     string
	control    string
	controlSet bool
	node       string
}

// addClusterMode makes `mirrord --config FILE` run this node of the
// cluster (resources/node) and serve mirrorctl on the control socket.
func addClusterMode(root *cobra.Command) {
	f := &clusterFlags{}
	root.Flags().StringVar(&f.config, "config", node.DefaultConfigPath, "cluster configuration file (YAML)")
	root.Flags().StringVar(&f.control, "control", "unix:/run/hamirror/mirrord.sock", "control socket for mirrorctl (unix:PATH; default: the file's control key)")
	root.Flags().StringVar(&f.node, "node", "", "this node's ID in the cluster file (default: the short host name)")
	root.RunE = func(cmd *cobra.Command, args []string) error {
		f.controlSet = cmd.Flags().Changed("control")
		// Debug here: the node's log.level (reloadable) decides what is logged.
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		ctx, cancel := context.WithCancel(cmd.Context())
		defer cancel()
		sig := make(chan os.Signal, 2)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(sig)
		go func() {
			<-sig
			log.Info("SIGTERM: handing the group over (a second SIGTERM exits at once)")
			cancel()
			<-sig
			log.Error("second SIGTERM: exiting now; resources may still run on this node")
			os.Exit(1)
		}()
		return runCluster(ctx, f, log)
	}
}

// localNode is --node, or the host name up to its first dot.
func localNode(flag string) (heartbeat.NodeID, error) {
	if flag != "" {
		return heartbeat.NodeID(flag), nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("host name (set --node): %w", err)
	}
	h, _, _ = strings.Cut(h, ".")
	return heartbeat.NodeID(h), nil
}

// clusterStatus is the "cluster" key of the status reply.
type clusterStatus struct {
	Cluster heartbeat.Status `json:"cluster"`
}

// loadCluster reads the cluster file once and its heartbeat sections for
// this node; other packages read their sections from the same viper.
func loadCluster(f *clusterFlags) (*viper.Viper, heartbeat.Config, error) {
	self, err := localNode(f.node)
	if err != nil {
		return nil, heartbeat.Config{}, err
	}
	v := viper.New()
	v.SetConfigFile(f.config)
	v.SetConfigType("yaml")
	if err := v.ReadInConfig(); err != nil {
		return nil, heartbeat.Config{}, fmt.Errorf("reading cluster config %s: %w", f.config, err)
	}
	cfg, err := heartbeat.FromViper(v, self)
	if err != nil {
		return nil, heartbeat.Config{}, fmt.Errorf("%s: %w", f.config, err)
	}
	return v, cfg, nil
}

// runCluster runs this node (resources/node) until ctx ends: membership,
// the cluster services, and the resource group with fencing, the volume
// and the other resources the file configures. A first SIGTERM hands
// the group to a healthy peer (or stops it here), a second one exits at
// once; SIGHUP re-reads the file and says what differs (reload.go).
func runCluster(ctx context.Context, f *clusterFlags, log *slog.Logger) error {
	self, err := localNode(f.node)
	if err != nil {
		return err
	}
	cfg, err := node.LoadConfig(f.config, self)
	if err != nil {
		return err
	}
	override := func(c *node.Config) { // the flags over the file, at start and at each reload
		if f.controlSet {
			c.Control = f.control
		}
	}
	override(cfg)
	n, err := node.New(cfg, node.Options{Logger: log, Notify: func(state string) { sdnotify.SdNotify(false, state) }, Override: override})
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1) // SIGHUP: reload the cluster file (resources/node/reload.go)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go n.ReloadOn(ctx, hup)
	if _, path, err := control.ParseAddr(cfg.Control); err == nil {
		os.MkdirAll(filepath.Dir(path), 0o755)
	}
	srv, err := control.Listen(cfg.Control)
	if err != nil {
		return err
	}
	defer srv.Close()
	for op, h := range n.Handlers() {
		srv.Handle(op, control.HandlerFunc(h))
	}
	go srv.Serve()
	log.Info("mirrord up", "node", self, "cluster", cfg.Heartbeat.Cluster, "control", cfg.Control)
	wctx, stopWatchdog := context.WithCancel(context.Background())
	defer stopWatchdog()
	go watchdog(wctx, n.Healthy, 4*cfg.Heartbeat.Timing.Keepalive+time.Second)
	return n.Run(ctx)
}

// watchdog pings systemd's watchdog (WatchdogSec in mirrord.service) at
// half its period while the membership loop keeps stepping, until ctx
// ends. A wedged loop stops the pings and systemd restarts mirrord.
func watchdog(ctx context.Context, healthy func(time.Duration) bool, maxAge time.Duration) {
	period, err := sdnotify.SdWatchdogEnabled(false)
	if err != nil || period == 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(period / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if healthy(maxAge) {
				sdnotify.SdNotify(false, sdnotify.SdNotifyWatchdog)
			}
		}
	}
}
