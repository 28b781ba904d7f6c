// Package volumed runs `mirrord volume`: it assembles the mirror from its
// two legs and serves it over NBD (and /dev/nbdN), answers mirrorctl on the
// control socket, and stops in order (device, NBD clients, volume). It is
// the policy part of the command, importable by tests; package main only
// parses flags:
//
//	err := volumed.Run(ctx, volumed.Config{Legs: [2]string{a, b}, Listen: []string{"unix:/run/vol.sock"}, ...})
//
// When the legs cannot prove which copy is newest, Run does not export
// anything and does not exit either: it holds, mirrorctl status explains
// why and what to do, and the service manager does not restart it in a
// loop. A split brain holds until the operator restarts with --keep-leg. A
// lone leg that is not provably newest (the other missing) or a leg whose
// metadata cannot be read holds too, and the assembly is tried again every
// RetryInterval: when the other array comes back, the volume starts with
// both legs by itself.
package volumed
