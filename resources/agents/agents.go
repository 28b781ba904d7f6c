package agents

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/resources"
)

// Env is what the agents of one node share: a logger and the paths they
// need. Two nodes in one test process each have their own Env; nothing in
// this package is global.
type Env struct {
	// Log receives the agents' records (commands run, their output at
	// debug level, kills, announcements). Nil discards them.
	Log *slog.Logger
	// RunDir is the node's volatile directory, emptied at boot
	// (default /run/hamirror). OCF agents keep their state files in
	// RunDir/ocf (HA_RSCTMP): a state file must not survive a reboot, or
	// an agent like Dummy would report a resource running after one.
	RunDir string
	// OCFRoot is the root of the OCF agent tree (default /usr/lib/ocf).
	OCFRoot string
	// CarrierGrace is how long a vip's monitor leaves a lost carrier on
	// its interface to the node's ping rounds, which count it as reaching
	// no target (heartbeat.Pinger.RequireCarrier) and hand the group to a
	// peer that reaches more, before it fails the resource itself (see
	// vipAgent). 0 (no ping targets): it fails at once.
	CarrierGrace time.Duration
}

// Defaults for an Env's zero fields.
const (
	DefaultRunDir  = "/run/hamirror"
	DefaultOCFRoot = "/usr/lib/ocf"
)

func (e Env) withDefaults() Env {
	if e.Log == nil {
		e.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if e.RunDir == "" {
		e.RunDir = DefaultRunDir
	}
	if e.OCFRoot == "" {
		e.OCFRoot = DefaultOCFRoot
	}
	return e
}

// Types lists the resource types New builds. fence and volume are built
// by the node (resources/fence, resources/volume), not here.
func Types() []string {
	return []string{"filesystem", "vip", "postgresql", "systemd", "exec", "ocf"}
}

// New builds the agent of one configured resource. key is the resource's
// place in the cluster file ("resources[2]"): every error is a
// *heartbeat.KeyError naming the offending key under it, such as
// "resources[2].directory". typ is the resource's type, name its name
// (logs, OCF_RESOURCE_INSTANCE), params its type parameters only (the
// keys common to every resource, like monitor_interval and the timeouts,
// belong to the group, not here). Decoding is strict: an unknown key, a
// wrong type or a bad value is an error.
func New(key, typ, name string, params map[string]any, env Env) (resources.Agent, error) {
	if name == "" {
		return nil, &heartbeat.KeyError{Key: key + ".name", Msg: "is empty: give the resource a name"}
	}
	env = env.withDefaults()
	env.Log = env.Log.With("resource", name, "type", typ)
	p := newParams(key, params)
	switch typ {
	case "filesystem":
		return newFilesystem(name, p, env)
	case "vip":
		return newVIP(name, p, env)
	case "postgresql":
		return newPostgreSQL(name, p, env)
	case "systemd":
		return newSystemd(name, p, env)
	case "exec":
		return newExec(name, p, env)
	case "ocf":
		return newOCF(name, p, env)
	}
	return nil, &heartbeat.KeyError{Key: key + ".type",
		Msg: fmt.Sprintf("unknown resource type %q: one of %s (fence and volume are set up by the node)",
			typ, strings.Join(Types(), ", "))}
}
