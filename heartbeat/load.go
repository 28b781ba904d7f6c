package heartbeat

import (
	"fmt"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// FromViper reads the heartbeat sections of the cluster file (cluster,
// timing, nodes, disks, ping) over DefaultConfig and validates them. Other
// top-level sections (resources, ...) belong to other packages and are
// ignored; an unknown key inside a heartbeat section is an error. self is
// the local node ("" leaves Config.Self empty, e.g. for mirrorctl).
func FromViper(v *viper.Viper, self NodeID) (Config, error) {
	c := DefaultConfig()
	strict := func(dc *mapstructure.DecoderConfig) { dc.ErrorUnused = true }
	type section struct {
		key string
		out any
	}
	var ping struct {
		Targets  []string `mapstructure:"targets"`
		Interval string   `mapstructure:"interval"`
	}
	for _, s := range []section{
		{"cluster", &c},
		{"timing", &c.Timing},
		{"nodes", &c.Nodes},
		{"disks", &c.Disks},
		{"ping", &ping},
	} {
		if !v.IsSet(s.key) {
			continue
		}
		if s.key == "cluster" {
			// Only the cluster scalars live under "cluster".
			var cl struct {
				Name      string `mapstructure:"name"`
				KeyFile   string `mapstructure:"key_file"`
				Preferred string `mapstructure:"preferred"`
				Failback  *bool  `mapstructure:"failback"`
				Delay     string `mapstructure:"failback_delay"`
				Port      *int   `mapstructure:"port"`
				Baud      *int   `mapstructure:"baud"`
				StateDir  string `mapstructure:"state_dir"`
			}
			if err := v.UnmarshalKey("cluster", &cl, strict); err != nil {
				return c, keyErr("cluster", "%v", err)
			}
			c.Cluster, c.KeyFile, c.Preferred = cl.Name, cl.KeyFile, NodeID(cl.Preferred)
			if cl.Failback != nil {
				c.Failback = *cl.Failback
			}
			if cl.Delay != "" {
				d, err := time.ParseDuration(cl.Delay)
				if err != nil {
					return c, keyErr("cluster.failback_delay", "%v (a duration such as 30s)", err)
				}
				c.FailbackDelay = d
			}
			if cl.Port != nil {
				c.Port = *cl.Port
			}
			if cl.StateDir != "" {
				c.StateDir = cl.StateDir
			}
			if cl.Baud != nil {
				c.Baud = *cl.Baud
			}
			continue
		}
		if err := v.UnmarshalKey(s.key, s.out, strict); err != nil {
			return c, keyErr(s.key, "%v", err)
		}
	}
	c.PingTargets = ping.Targets
	if ping.Interval != "" {
		d, err := time.ParseDuration(ping.Interval)
		if err != nil {
			return c, keyErr("ping.interval", "%v", err)
		}
		c.PingInterval = d
	}
	c.Self = self
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

// LoadFile reads a cluster YAML file with viper (see FromViper).
func LoadFile(path string, self NodeID) (Config, error) {
	v := viper.New()
	v.SetConfigFile(path)
	v.SetConfigType("yaml")
	if err := v.ReadInConfig(); err != nil {
		return Config{}, fmt.Errorf("reading cluster config %s: %w", path, err)
	}
	c, err := FromViper(v, self)
	if err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}
