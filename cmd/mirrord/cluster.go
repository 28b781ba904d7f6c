package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"
	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/cmd/internal/legopts"
	"github.com/hamirror/hamirror/heartbeat"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

// clusterFlags are the root command's flags for cluster mode.
type clusterFlags struct {
	config  string
	control string
	node    string
	leg     legopts.Flags // how disk heartbeats open their legs (iSCSI)
}

// addClusterMode makes `mirrord --config FILE` run cluster membership
// (alone while the file configures no resources) and serve the control
// socket with the ops "status" ({"cluster": ...}) and "nodes".
func addClusterMode(root *cobra.Command) {
	f := &clusterFlags{}
	root.Flags().StringVar(&f.config, "config", "/etc/hamirror/cluster.yaml", "cluster configuration file (YAML)")
	root.Flags().StringVar(&f.control, "control", "unix:/run/hamirror/mirrord.sock", "control socket for mirrorctl (unix:PATH)")
	root.Flags().StringVar(&f.node, "node", "", "this node's ID in the cluster file (default: the short host name)")
	f.leg.Add(root.Flags(), false)
	root.RunE = func(cmd *cobra.Command, args []string) error {
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return runCluster(ctx, f, log.Printf)
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

// runCluster runs membership until ctx ends.
func runCluster(ctx context.Context, f *clusterFlags, logf func(string, ...any)) error {
	v, cfg, err := loadCluster(f)
	if err != nil {
		return err
	}
	self := cfg.Self
	if v.IsSet("resources") {
		logf("mirrord: %s configures resources; this mirrord runs membership only", f.config)
	}
	key, err := heartbeat.LoadKey(cfg.KeyFile)
	if err != nil {
		return err
	}
	// Disks with a leg use the slots the mirror engine reserved on it;
	// disks with neither a leg nor a path join when mirrord runs the
	// volume. OpenLinks opens the ones with a path.
	var fileDisks []heartbeat.Disk
	var legDisks []heartbeat.Disk
	for _, d := range cfg.Disks {
		switch {
		case d.Leg != "":
			legDisks = append(legDisks, d)
		case d.Path != "":
			fileDisks = append(fileDisks, d)
		default:
			logf("mirrord: disk heartbeat %s names no leg or path: it needs the mirrored volume; running without it", d.Name)
		}
	}
	fileCfg := cfg
	fileCfg.Disks = fileDisks
	links, err := heartbeat.OpenLinks(fileCfg)
	if err != nil {
		return err
	}
	cfg.Disks = append(fileDisks, legDisks...)
	for _, d := range legDisks {
		l, err := openLegDisk(cfg, d, f.leg)
		if err != nil {
			for _, l := range links {
				l.Close()
			}
			return err
		}
		links = append(links, l)
	}
	boot, err := heartbeat.NextBoot(cfg.StateDir, time.Now())
	if err != nil {
		for _, l := range links {
			l.Close()
		}
		return err
	}
	opt := heartbeat.MemberOptions{Logf: logf, Boot: boot, StateDir: cfg.StateDir}
	if len(cfg.PingTargets) > 0 {
		if opt.Pinger, err = heartbeat.NewPinger(cfg.PingTargets, cfg.PingInterval*8/10); err != nil {
			for _, l := range links {
				l.Close()
			}
			return err
		}
		defer opt.Pinger.Close()
	}
	member, err := heartbeat.NewMember(cfg, key, links, opt)
	if err != nil {
		for _, l := range links {
			l.Close()
		}
		return err
	}
	if _, path, err := control.ParseAddr(f.control); err == nil {
		os.MkdirAll(filepath.Dir(path), 0o755)
	}
	srv, err := control.Listen(f.control)
	if err != nil {
		for _, l := range links {
			l.Close()
		}
		return err
	}
	defer srv.Close()
	srv.Handle("status", func(json.RawMessage) (any, error) { return clusterStatus{member.Status()}, nil })
	srv.Handle("nodes", func(json.RawMessage) (any, error) { return member.Status(), nil })
	go srv.Serve()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- member.Run(ctx) }()
	logf("mirrord: node %s of cluster %s up; control socket %s", self, cfg.Cluster, f.control)
	sdnotify.SdNotify(false, sdnotify.SdNotifyReady)
	watchdog(ctx, member, cfg.Timing.Keepalive)
	cancel()
	sdnotify.SdNotify(false, sdnotify.SdNotifyStopping)
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// watchdog pings systemd's watchdog (WatchdogSec in mirrord.service) at
// half its period while the membership loop keeps stepping, until ctx
// ends. A wedged loop stops the pings and systemd restarts mirrord.
func watchdog(ctx context.Context, m *heartbeat.Member, keepalive time.Duration) {
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
			if m.Healthy(4 * keepalive) {
				sdnotify.SdNotify(false, sdnotify.SdNotifyWatchdog)
			}
		}
	}
}
