// Package resources is hamirror's resource layer: the pure group machine
// that decides what runs on this node and in what order (fence, volume,
// filesystem, virtual IP, database, application; stopped in reverse), and
// the Agent interface every resource agent implements.
//
// The decisions are pure: membership events, agent results, ticks and
// operator commands go in, effects (fence, start, stop, monitor, publish
// the app state) come out; agents in sub-packages do the I/O. See
// docs/HA.md for the rules and the interfaces between the parts.
//
//	var a resources.Agent = ...           // resources/agents, resources/fence, resources/volume
//	ctx, cancel := context.WithTimeout(ctx, spec.StartTimeout)
//	err := a.Start(ctx)                   // idempotent
//	err = a.Monitor(ctx)                  // nil: running; ErrNotRunning: cleanly stopped; else failed
package resources
