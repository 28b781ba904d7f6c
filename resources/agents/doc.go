// Package agents holds hamirror's resource agents: filesystem, vip,
// postgresql, systemd, exec and ocf. Each implements resources.Agent
// (Start, Stop, Monitor under the caller's deadline, all idempotent).
package agents
