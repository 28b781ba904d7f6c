// Package services runs one node's cluster services (R7–R14, R20–R22) and
// is what the node (resources/node, or mirrord) embeds: the authenticated
// channel over the private NICs (heartbeat/channel), the management log
// (heartbeat/mlog), the registry and coordinator (heartbeat/registry) and
// the traffic-data backup (heartbeat/traffic).
//
// Embedding:
//
//	v := viper.New() /* the cluster file */
//	hb, _ := heartbeat.FromViper(v, self)
//	sc, err := services.FromViper(v, hb)          // the services: section; *heartbeat.KeyError
//	member, _ := heartbeat.NewMember(hb, key, links, heartbeat.MemberOptions{
//		OnEvent: func(e heartbeat.Event) { svc.MembershipEvent(e) /* and resources */ }})
//	svc, err := services.New(services.Options{Cluster: hb, Key: key, Config: sc,
//		Membership: member, Slog: slog.Default()})
//	svc.Start(ctx)
//	defer svc.Stop()
//	for op, h := range svc.Handlers() { srv.Handle(op, h) }   // log, log-write, traffic, node-remove, services
//	svc.Log().Info("mirror", "leg 1 failed", "error", err)   // every component
//
// The membership is only read (Status); the services never change roles.
// At start the node catches up before it decides anything: it waits until
// no peer's fate is unknown (initdead), pulls the newest index table,
// registers, exchanges logs with every peer and pulls the traffic data of
// the nodes that back up to it; with services.coordinator_failback it then
// asks for the coordinator role back.
//
// The cluster file's section (defaults in DefaultConfig):
//
//	services:
//	  port: 5406                 # TCP, on each private NIC's address
//	  dir: /var/lib/hamirror/services
//	  log_timeout: 2s
//	  sync_interval: 5s
//	  log_max_size: 16777216
//	  log_keep: 8
//	  traffic_interval: 10s
//	  interfaces: [eth0, eth1, eth2, eth3]   # default: all but loopback
//	  coordinator_failback: false
//	  rejoin_hold: 30s           # a node reported as a failed backup target stays Failed this long
package services
