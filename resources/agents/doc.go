// Package agents holds hamirror's resource agents: filesystem, vip,
// postgresql, systemd, exec and ocf (fence and volume live in
// resources/fence and resources/volume). Each implements
// resources.Agent: Start, Stop and Monitor under the caller's deadline,
// all idempotent (a second Start or Stop, and a Stop of a resource never
// started, succeed at once).
//
// The node builds one agent per configured resource:
//
//	env := agents.Env{Log: logger, RunDir: "/run/hamirror"} // OCFRoot defaults to /usr/lib/ocf
//	a, err := agents.New("resources[2]", "filesystem", "data", map[string]any{
//		"device": "/dev/nbd0", "directory": "/srv/data", "fstype": "ext4",
//	}, env)
//	// err is a *heartbeat.KeyError naming the key, e.g. "resources[2].directory: must be an absolute path"
//	ctx, cancel := context.WithTimeout(ctx, startTimeout)
//	err = a.Start(ctx)
//	err = a.Monitor(ctx) // nil: running; errors.Is(err, resources.ErrNotRunning): nothing of it runs here; else failed
//
// params holds the resource's type parameters only (the keys every
// resource has, such as monitor_interval and the timeouts, belong to the
// group). Decoding is strict: unknown keys, wrong types and bad values
// are errors. Each agent's doc comment lists its parameters: fsAgent
// (filesystem), vipAgent (vip), pgAgent (postgresql), systemdAgent
// (systemd), execAgent (exec), ocfAgent (ocf).
//
// What Monitor's answers mean, for every agent: nil when the resource
// runs and is healthy; an error wrapping resources.ErrNotRunning when
// nothing of it is present on this node (Stop would have nothing to
// do), including after a crash that left only files behind (a stale
// postmaster.pid, an OCF state file the agent reports as stopped); any
// other error when something of it is there but unhealthy (a read-only
// remount, a link without carrier, a server that does not answer).
//
// Commands (pg_ctl, psql, e2fsck, exec and OCF scripts) run in their own
// process group with a clean environment (PATH, LANG=C and what the
// resource sets); when the deadline passes the whole group gets SIGKILL.
// The agents act in the network and mount namespaces of the calling
// thread: tests run them inside network namespaces that way.
package agents
