package resources

import (
	"fmt"
	"slices"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// Config is the group's part of the cluster file: the `group:` section and
// the `resources:` list, in start order.
type Config struct {
	// MigrationThreshold is how many failures of one resource within
	// FailureTimeout make the group leave this node (group.migration_threshold).
	MigrationThreshold int
	// FailureTimeout is how long a failure counts (group.failure_timeout);
	// 0: failures count until `mirrorctl cleanup`.
	FailureTimeout time.Duration
	// StartFailureIsFatal (group.start_failure_is_fatal): a failed or
	// timed-out start sets the resource's failure count to
	// MigrationThreshold at once, so the group leaves this node (as
	// Pacemaker's start-failure-is-fatal). False: it counts as one
	// failure, like a failed monitor.
	StartFailureIsFatal bool
	// Resources in start order (stopped in reverse). With a `volume:`
	// section, the implicit "fence" and "volume" resources come first.
	Resources []Resource
}

// Resource is one entry of the group.
type Resource struct {
	Name string
	// Type selects the agent: fence, volume, filesystem, vip, postgresql,
	// systemd, exec or ocf.
	Type string
	// Params are the entry's other keys (lower-cased by viper), for the
	// agent's constructor, which must refuse unknown or bad ones with a
	// *heartbeat.KeyError naming ParamKey(key).
	Params map[string]any
	// MonitorInterval is the time between monitors (0: not monitored).
	MonitorInterval time.Duration
	// StartTimeout, StopTimeout and MonitorTimeout bound the agent's calls
	// (the ctx deadline the node gives it).
	StartTimeout, StopTimeout, MonitorTimeout time.Duration
	// Key is where the entry came from in the file ("resources[2]", or
	// "volume" for the implicit fence and volume resources).
	Key string
}

// ParamKey names one of the resource's parameters in a config error.
func (r Resource) ParamKey(param string) string { return r.Key + "." + param }

// Types of resource the group knows. fence and volume are implicit with
// a `volume:` section.
const (
	TypeFence      = "fence"
	TypeVolume     = "volume"
	TypeFilesystem = "filesystem"
	TypeVIP        = "vip"
	TypePostgreSQL = "postgresql"
	TypeSystemd    = "systemd"
	TypeExec       = "exec"
	TypeOCF        = "ocf"
)

// Types lists every resource type in the default start order.
func Types() []string {
	return []string{TypeFence, TypeVolume, TypeFilesystem, TypeVIP, TypePostgreSQL, TypeSystemd, TypeExec, TypeOCF}
}

// DefaultConfig returns the group defaults with the reason for each.
func DefaultConfig() Config {
	return Config{
		// Pacemaker's usual production setting: two local restarts, the
		// third failure moves the group. A flapping service costs at most
		// two restarts before the peer gets a chance.
		MigrationThreshold: 3,
		// Ten minutes: a failure a day apart is bad luck, three within ten
		// minutes is a broken node. Also how long a node that gave the
		// group away stays out before it is eligible again by itself.
		FailureTimeout: 10 * time.Minute,
		// Pacemaker's default too: a start that fails or hangs (fsck, WAL
		// replay on a sick disk) says the node cannot run the resource
		// now; retrying it here delays the takeover by start_timeout per
		// attempt, and hung starts minutes apart may expire before the
		// threshold is ever reached.
		StartFailureIsFatal: true,
	}
}

// DefaultResource returns a resource of type typ with that type's
// defaults, each with its reason, or an error for an unknown type.
func DefaultResource(name, typ string) (Resource, error) {
	r := Resource{Name: name, Type: typ,
		// Ten seconds between monitors: a dead process or a lost address is
		// noticed within that, and a check every 10 s costs nothing.
		MonitorInterval: 10 * time.Second,
		// Twenty seconds for a check: five times what a loaded box needs to
		// answer a status query; a monitor that takes longer is a failure.
		MonitorTimeout: 20 * time.Second,
		// One minute to start or stop something ordinary (a command, an OCF
		// agent: Pacemaker's own default is 20 s; agents often ask for more).
		StartTimeout: time.Minute,
		StopTimeout:  time.Minute,
	}
	switch typ {
	case TypeFence:
		// Persistent-reservation commands on two arrays, each maybe in the
		// middle of an iSCSI reconnection (io_timeout ~5 s, a few retries).
		r.StartTimeout, r.StopTimeout = 30*time.Second, 30*time.Second
	case TypeVolume:
		// Assembly reads both superblocks and may wait out the multi-mount
		// protection (two MMP intervals plus margin); the stop drains,
		// flushes both legs and writes the clean superblocks.
		r.StartTimeout, r.StopTimeout = 90*time.Second, 2*time.Minute
	case TypeFilesystem:
		// A journal replay or a needed fsck of a large file system takes
		// minutes; the stop kills the holders before it unmounts.
		r.StartTimeout, r.StopTimeout = 5*time.Minute, time.Minute
		r.MonitorInterval = 20 * time.Second // a mount table read; the volume monitor covers I/O
	case TypeVIP:
		// Netlink and a few gratuitous ARPs / neighbour advertisements.
		r.StartTimeout, r.StopTimeout = 20*time.Second, 20*time.Second
	case TypePostgreSQL:
		// Crash recovery replays the WAL since the last checkpoint; a fast
		// shutdown writes a checkpoint.
		r.StartTimeout, r.StopTimeout = 5*time.Minute, 2*time.Minute
		r.MonitorTimeout = 30 * time.Second // a real connection and query
	case TypeSystemd:
		// systemd's own DefaultTimeoutStartSec/StopSec is 90 s; wait a bit
		// longer so systemd, not this agent, reports a stuck unit.
		r.StartTimeout, r.StopTimeout = 100*time.Second, 100*time.Second
	case TypeExec, TypeOCF:
	default:
		return r, fmt.Errorf("unknown resource type %q (known: %v)", typ, Types())
	}
	return r, nil
}

// Validate rejects impossible settings with a *heartbeat.KeyError naming
// the key.
func (c *Config) Validate() error {
	switch {
	case c.MigrationThreshold < 1 || c.MigrationThreshold > 255:
		return keyErr("group.migration_threshold", "%d is not between 1 and 255", c.MigrationThreshold)
	case c.FailureTimeout < 0:
		return keyErr("group.failure_timeout", "is negative")
	case len(c.Resources) > MaxResources:
		return keyErr("resources", "lists %d resources; a group holds at most %d", len(c.Resources), MaxResources)
	}
	seen := map[string]string{}
	for i, r := range c.Resources {
		key := r.Key
		if key == "" {
			key = fmt.Sprintf("resources[%d]", i)
		}
		if err := checkName(key+".name", r.Name); err != nil {
			return err
		}
		if other, dup := seen[r.Name]; dup {
			return keyErr(key+".name", "%q is also the name of %s", r.Name, other)
		}
		seen[r.Name] = key
		if _, err := DefaultResource(r.Name, r.Type); err != nil {
			return keyErr(key+".type", "%v", err)
		}
		for _, d := range []struct {
			k string
			v time.Duration
		}{{"start_timeout", r.StartTimeout}, {"stop_timeout", r.StopTimeout}, {"monitor_timeout", r.MonitorTimeout}} {
			if d.v <= 0 {
				return keyErr(key+"."+d.k, "must be positive")
			}
		}
		if r.MonitorInterval < 0 {
			return keyErr(key+".monitor_interval", "is negative (0 turns monitoring off)")
		}
		switch {
		case r.Type == TypeFence && i != 0:
			return keyErr(key+".type", "the fence resource must come first")
		case r.Type == TypeVolume && (i != 1 || c.Resources[0].Type != TypeFence):
			return keyErr(key+".type", "the volume resource must come second, right after the fence resource")
		}
	}
	return nil
}

func checkName(key, name string) error {
	if name == "" || len(name) > MaxNameBytes {
		return keyErr(key, "must be 1 to %d bytes", MaxNameBytes)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return keyErr(key, "%q: use letters, digits, '-', '_' and '.' only", name)
		}
	}
	return nil
}

// index returns the position of the resource named name, or -1.
func (c *Config) index(name string) int {
	return slices.IndexFunc(c.Resources, func(r Resource) bool { return r.Name == name })
}

func keyErr(key, format string, a ...any) error {
	return &heartbeat.KeyError{Key: key, Msg: fmt.Sprintf(format, a...)}
}
