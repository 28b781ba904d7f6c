// Package hademo is `make demo`: the HA pair's story told on the
// failover lab (testenv/halab) with hamirror's node on both servers
// (testenv/halab/hamirror), with output a person can follow.
//
// The story: the lab is built (two nodes in their own namespaces, two tgtd
// arrays, two private links, a serial line, a client on the public
// network); mirrord starts on both nodes and the preferred one runs the
// group (fence, volume, ext4, virtual IP, PostgreSQL); a client commits
// one row per connection through the virtual IP, nonstop; the active node
// is killed (every cable pulled, every process SIGKILLed) and the standby
// detects it, fences it, assembles the volume, mounts it, raises the VIP
// and starts PostgreSQL: the client-visible outage is printed with that
// breakdown; the killed node rejoins as the standby; array b dies and the
// volume runs degraded under a bulk load; array b returns and the resync
// shows its progress; every committed row is looked up through the VIP;
// `mirrorctl status` from both nodes and `mirrorctl log` end it. Then
// everything is torn down and the host is checked for leftovers of the
// lab (Footprint): its namespaces, processes in them (tgtd, PostgreSQL,
// mirrord, nbdfuse), mounts, loop devices, its folder.
//
// The teardown runs whatever happened: a failed step, or ctx cancelled
// (the command cancels it on SIGINT/SIGTERM).
//
//	rep, err := hademo.Run(ctx, hademo.Options{Bin: "bin", Out: os.Stdout, TTY: true})
//	// rep.Outage, rep.Phases, rep.Lost, rep.ResyncBytes, rep.Leftovers, rep.Wall
//
// testenv/cmd/hamirror-hademo is the command; it needs root and the
// packages of `make deps` (Available says what is missing).
package hademo
