package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/services"
)

// newServicesCmd is the hidden `mirrord services`: membership and the
// cluster services (management log, traffic data, registry) of one node,
// without a volume or resources, from the cluster file. The netns tests
// run it as real processes they can SIGKILL; the node (resources/node)
// embeds heartbeat/services the same way.
func newServicesCmd() *cobra.Command {
	f := &clusterFlags{}
	c := &cobra.Command{
		Use:    "services",
		Short:  "Run membership and the cluster services only (tests)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runServices(ctx, f, log.Printf)
		},
	}
	c.Flags().StringVar(&f.config, "config", "/etc/hamirror/cluster.yaml", "cluster configuration file (YAML)")
	c.Flags().StringVar(&f.control, "control", "unix:/run/hamirror/mirrord.sock", "control socket for mirrorctl (unix:PATH)")
	c.Flags().StringVar(&f.node, "node", "", "this node's ID in the cluster file (default: the short host name)")
	return c
}

func runServices(ctx context.Context, f *clusterFlags, logf func(string, ...any)) error {
	v, cfg, err := loadCluster(f)
	if err != nil {
		return err
	}
	self := cfg.Self
	sc, err := services.FromViper(v, cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", f.config, err)
	}
	key, err := heartbeat.LoadKey(cfg.KeyFile)
	if err != nil {
		return err
	}
	links, err := heartbeat.OpenLinks(cfg)
	if err != nil {
		return err
	}
	closeLinks := func() {
		for _, l := range links {
			l.Close()
		}
	}
	boot, err := heartbeat.NextBoot(cfg.StateDir, time.Now())
	if err != nil {
		closeLinks()
		return err
	}
	var svc atomic.Pointer[services.Services]
	member, err := heartbeat.NewMember(cfg, key, links, heartbeat.MemberOptions{Logf: logf, Boot: boot, StateDir: cfg.StateDir,
		OnEvent: func(e heartbeat.Event) {
			if s := svc.Load(); s != nil {
				s.MembershipEvent(e)
			}
		}})
	if err != nil {
		closeLinks()
		return err
	}
	s, err := services.New(services.Options{Cluster: cfg, Key: key, Config: sc, Membership: member,
		Slog: slog.Default(), Logf: logf})
	if err != nil {
		closeLinks()
		return err
	}
	svc.Store(s)
	if _, path, err := control.ParseAddr(f.control); err == nil {
		os.MkdirAll(filepath.Dir(path), 0o755)
	}
	srv, err := control.Listen(f.control)
	if err != nil {
		closeLinks()
		return err
	}
	defer srv.Close()
	srv.Handle("status", func(json.RawMessage) (any, error) { return clusterStatus{member.Status()}, nil })
	srv.Handle("nodes", func(json.RawMessage) (any, error) { return member.Status(), nil })
	for op, h := range s.Handlers() {
		srv.Handle(op, control.HandlerFunc(h))
	}
	go srv.Serve()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- member.Run(ctx) }()
	s.Start(ctx)
	logf("mirrord: services of node %s of cluster %s up; control socket %s", self, cfg.Cluster, f.control)
	<-ctx.Done()
	s.Stop()
	return <-done
}
