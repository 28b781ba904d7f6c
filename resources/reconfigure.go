package resources

import (
	"fmt"
	"reflect"
	"slices"
	"time"
)

// Reconfigure applies the settings of c that can change while the group
// runs (a reload of the cluster file, SIGHUP):
//
//   - group.migration_threshold, group.failure_timeout and
//     group.start_failure_is_fatal. They apply at once: a resource whose
//     failures already reach a lower threshold makes the group leave this
//     node, exactly as one more failure would have; a shorter
//     failure_timeout expires old failures at once.
//   - each resource's monitor_interval, start_timeout, stop_timeout and
//     monitor_timeout. An operation in flight keeps the timeout it was
//     issued with; the next one uses the new value. A shorter (or newly
//     enabled) monitor_interval brings the next monitor forward to at
//     most one new interval from now; a longer one applies after the
//     monitor already scheduled.
//
// What the group is made of cannot change live: the resources (names,
// types, order, parameters: the node built their agents from them). If c
// differs there, Reconfigure refuses
// c as a whole with a *heartbeat.KeyError naming the key, and changes
// nothing. An invalid c is refused the same way (Validate).
func (g *Group) Reconfigure(now time.Time, c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if err := sameMakeup(g.cfg, c); err != nil {
		return err
	}
	g.now = now
	defer g.settle()
	if g.cfg.MigrationThreshold != c.MigrationThreshold {
		g.log("reload: group.migration_threshold %d -> %d", g.cfg.MigrationThreshold, c.MigrationThreshold)
	}
	if g.cfg.FailureTimeout != c.FailureTimeout {
		g.log("reload: group.failure_timeout %v -> %v", g.cfg.FailureTimeout, c.FailureTimeout)
	}
	if g.cfg.StartFailureIsFatal != c.StartFailureIsFatal {
		g.log("reload: group.start_failure_is_fatal %v -> %v", g.cfg.StartFailureIsFatal, c.StartFailureIsFatal)
	}
	g.cfg.MigrationThreshold = c.MigrationThreshold
	g.cfg.FailureTimeout = c.FailureTimeout
	g.cfg.StartFailureIsFatal = c.StartFailureIsFatal
	g.cfg.Resources = slices.Clone(g.cfg.Resources) // the caller's slice stays as it was
	for i, r := range g.res {
		ns := c.Resources[i]
		if ns.MonitorInterval > 0 && ns.MonitorInterval != r.spec.MonitorInterval {
			next := now.Add(ns.MonitorInterval)
			if r.spec.MonitorInterval == 0 || next.Before(r.nextMonitor) {
				r.nextMonitor = next
			}
		}
		if timingOf(r.spec) != timingOf(ns) {
			g.log("reload: %s timing %s -> %s", r.spec.Name, timingOf(r.spec), timingOf(ns))
		}
		r.spec.MonitorInterval, r.spec.MonitorTimeout = ns.MonitorInterval, ns.MonitorTimeout
		r.spec.StartTimeout, r.spec.StopTimeout = ns.StartTimeout, ns.StopTimeout
		g.cfg.Resources[i] = r.spec
	}
	return nil
}

// timingOf is a resource's live settings, for the log.
func timingOf(r Resource) string {
	return fmt.Sprintf("monitor_interval=%v monitor_timeout=%v start_timeout=%v stop_timeout=%v",
		r.MonitorInterval, r.MonitorTimeout, r.StartTimeout, r.StopTimeout)
}

// sameMakeup reports, as a *heartbeat.KeyError naming the first key that
// differs, whether c changes what cannot change live.
func sameMakeup(old, c Config) error {
	for i, r := range c.Resources {
		key := r.Key
		if key == "" {
			key = fmt.Sprintf("resources[%d]", i)
		}
		if i >= len(old.Resources) {
			return keyErr(key, "adds resource %q: the group's resources cannot change while mirrord runs: restart mirrord", r.Name)
		}
		o := old.Resources[i]
		switch {
		case o.Name != r.Name:
			return keyErr(key+".name", "%q where %q ran: the group's resources and their order cannot change while mirrord runs: restart mirrord", r.Name, o.Name)
		case o.Type != r.Type:
			return keyErr(key+".type", "%s where %s ran: restart mirrord to change a resource's type", r.Type, o.Type)
		case !reflect.DeepEqual(o.Params, r.Params):
			return keyErr(key, "parameters of %s changed: its agent was built with the old ones: restart mirrord", r.Name)
		}
	}
	if len(old.Resources) > len(c.Resources) {
		return keyErr("resources", "drops resource %q: the group's resources cannot change while mirrord runs: restart mirrord", old.Resources[len(c.Resources)].Name)
	}
	return nil
}
