package services

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/hamirror/hamirror/heartbeat"
)

// Config is the cluster file's `services:` section.
type Config struct {
	// Port is the TCP port of the services channel on every private NIC.
	Port int `mapstructure:"port"`
	// Dir holds the management log, the traffic data files and the saved
	// index table (default: cluster.state_dir + "/services").
	Dir string `mapstructure:"dir"`
	// LogTimeout bounds the delivery of one log entry to one peer; past it
	// the entry is spooled for that peer.
	LogTimeout time.Duration `mapstructure:"log_timeout"`
	// SyncInterval is how often the log exchanges with every peer in the
	// background (and how long a failed peer is left alone by writers).
	SyncInterval time.Duration `mapstructure:"sync_interval"`
	LogMaxSize   int64         `mapstructure:"log_max_size"` // bytes per log segment
	LogKeep      int           `mapstructure:"log_keep"`     // segments kept
	// TrafficInterval is how often the NIC counters are sampled and sent.
	TrafficInterval time.Duration `mapstructure:"traffic_interval"`
	// Interfaces lists the NICs sampled; empty: every interface but loopback.
	Interfaces []string `mapstructure:"interfaces"`
	// CoordinatorFailback: a returning first-ranked node takes the
	// coordinator role back once it has caught up (default false).
	CoordinatorFailback bool `mapstructure:"coordinator_failback"`
	// RejoinHold keeps a node reported as a failed backup target Failed
	// this long even while it is alive and registers.
	RejoinHold time.Duration `mapstructure:"rejoin_hold"`
}

// DefaultConfig returns the defaults with the reason for each.
func DefaultConfig() Config {
	return Config{
		// The heartbeat uses UDP 5405; the channel takes the next port, TCP.
		Port: 5406,
		// A private link answers in microseconds and a peer fsyncs in a few
		// ms; 2 s covers a loaded disk without holding writers for long.
		LogTimeout: 2 * time.Second,
		// Converges the logs within seconds of a healed cut even when
		// nothing is written; an idle exchange is two small messages.
		SyncInterval: 5 * time.Second,
		// 16 MiB × 8 segments is ~600 000 entries: years of events.
		LogMaxSize: 16 << 20,
		LogKeep:    8,
		// 10 s: counters are cumulative, so nothing is lost between samples;
		// 8640 samples of ~60 bytes per NIC a day.
		TrafficInterval: 10 * time.Second,
		// 30 s: a node another could not send to is alive but unreachable
		// from it; retrying sooner flips the table for nothing.
		RejoinHold: 30 * time.Second,
	}
}

func keyErr(key, format string, a ...any) error {
	return &heartbeat.KeyError{Key: key, Msg: fmt.Sprintf(format, a...)}
}

// Validate rejects impossible settings with a *heartbeat.KeyError.
func (c Config) Validate() error {
	switch {
	case c.Port <= 0 || c.Port > 65535:
		return keyErr("services.port", "%d is not a TCP port", c.Port)
	case c.Dir == "":
		return keyErr("services.dir", "is empty")
	case c.LogTimeout <= 0:
		return keyErr("services.log_timeout", "must be positive")
	case c.SyncInterval <= 0:
		return keyErr("services.sync_interval", "must be positive")
	case c.LogMaxSize < 4096:
		return keyErr("services.log_max_size", "%d bytes is too small (at least 4096)", c.LogMaxSize)
	case c.LogKeep < 1:
		return keyErr("services.log_keep", "must be at least 1")
	case c.RejoinHold < 0:
		return keyErr("services.rejoin_hold", "is negative")
	case c.TrafficInterval < 100*time.Millisecond:
		return keyErr("services.traffic_interval", "%v is below 100ms", c.TrafficInterval)
	}
	return nil
}

// FromViper reads the `services:` section over DefaultConfig (strictly: an
// unknown key is an error naming it) for the cluster hb.
func FromViper(v *viper.Viper, hb heartbeat.Config) (Config, error) {
	c := DefaultConfig()
	if v.IsSet("services") {
		strict := func(dc *mapstructure.DecoderConfig) { dc.ErrorUnused = true }
		if err := v.UnmarshalKey("services", &c, strict); err != nil {
			return c, keyErr("services", "%v", err)
		}
	}
	if c.Dir == "" {
		c.Dir = filepath.Join(hb.StateDir, "services")
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}
