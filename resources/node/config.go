package node

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/services"
	"github.com/hamirror/hamirror/mirror/units"
	"github.com/hamirror/hamirror/resources"
)

// DefaultConfigPath is where mirrord looks for the cluster file.
const DefaultConfigPath = "/etc/hamirror/cluster.yaml"

// Config is the whole cluster file, loaded in one place. Each section is
// decoded strictly: an unknown key, at the top or inside a section, is an
// error naming it, and so is every bad value.
type Config struct {
	// Path is the file the config came from.
	Path string
	// Heartbeat holds the sections cluster, timing, nodes, disks and ping.
	Heartbeat heartbeat.Config
	ISCSI     ISCSIConfig
	// Volume is nil when the file has no volume section: the node then
	// runs membership (and the group's other resources) only.
	Volume  *VolumeConfig
	Fencing FencingConfig
	// Group is the group and resources sections (resources.FromViper).
	Group resources.Config
	// Services is the services section (the cluster services).
	Services services.Config
	Metrics  MetricsConfig
	Log      LogConfig // loglevel.go
	// Control is the control socket mirrorctl talks to.
	Control string
}

// ISCSIConfig is the iscsi section: how this node logs in to the arrays.
// CHAP secrets come from files only (root-only, like the cluster key).
type ISCSIConfig struct {
	InitiatorName    string        `mapstructure:"initiator_name"`
	ChapUser         string        `mapstructure:"chap_user"`
	ChapSecretFile   string        `mapstructure:"chap_secret_file"`
	TargetUser       string        `mapstructure:"target_chap_user"`
	TargetSecretFile string        `mapstructure:"target_chap_secret_file"`
	Timeout          time.Duration `mapstructure:"timeout"`
}

// VolumeConfig is the volume section: the mirrored volume the group's
// volume resource assembles and serves.
type VolumeConfig struct {
	// Legs are the two legs (iscsi:// URLs, or device/file paths on a
	// node that reaches the arrays some other way).
	Legs [2]string
	// Device is the kernel block device to attach (/dev/nbdN); empty when
	// the volume is only served on sockets.
	Device string
	// Fuse attaches the volume without the kernel's nbd module, for hosts
	// that lack it (containers, test labs): nbdfuse exposes the export as
	// a file in this directory and a loop device is set up over it.
	Fuse string
	// Listen are NBD listen addresses (unix:PATH or tcp:HOST:PORT).
	Listen []string
	// Link is a stable symlink to the attached device (/dev/nbdN or the
	// loop device), for the filesystem resource. Default
	// /run/hamirror/volume.
	Link       string
	ExportName string
	IOTimeout  time.Duration
	// ResyncMinRate / ResyncMaxRate in bytes per second (0 max: no limit).
	ResyncMinRate, ResyncMaxRate int64
	// MMPInterval is how often the owner rewrites its multi-mount
	// protection block.
	MMPInterval time.Duration
	// AutoReAdd re-adds a leg whose array answers again (after fencing it).
	AutoReAdd bool
}

// FencingConfig is the fencing section: the persistent reservation keys
// configured per node. A node without one uses a key derived from the
// cluster name and its ID (resources/fence), which both nodes compute
// alike.
type FencingConfig struct {
	Keys map[heartbeat.NodeID]uint64
}

// MetricsConfig is the metrics section.
type MetricsConfig struct {
	// Listen is the Prometheus address (host:port); empty: no metrics.
	Listen string
}

// sections are the top-level keys a cluster file may hold. Other
// packages' sections (group, resources, services) are decoded by them.
var sections = []string{"cluster", "timing", "nodes", "disks", "ping", "iscsi", "volume", "fencing",
	"metrics", "log", "control", "group", "resources", "services"}

// KeyError is a configuration error naming the YAML key to fix.
type KeyError = heartbeat.KeyError

func keyErr(key, format string, a ...any) error {
	return &KeyError{Key: key, Msg: fmt.Sprintf(format, a...)}
}

// LoadConfig reads and validates the cluster file at path for node self
// ("" for a check without a local node, as `mirrorctl config check`).
func LoadConfig(path string, self heartbeat.NodeID) (*Config, error) {
	v := viper.New()
	v.SetConfigFile(path)
	v.SetConfigType("yaml")
	if err := v.ReadInConfig(); err != nil {
		return nil, fmt.Errorf("reading cluster config %s: %w", path, err)
	}
	c, err := FromViper(v, self)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.Path = path
	return c, nil
}

// FromViper decodes and validates every section this package owns.
func FromViper(v *viper.Viper, self heartbeat.NodeID) (*Config, error) {
	var unknown []string
	for _, k := range v.AllKeys() {
		top, _, _ := strings.Cut(k, ".")
		if !slices.Contains(sections, top) && !slices.Contains(unknown, top) {
			unknown = append(unknown, top)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, keyErr(unknown[0], "is not a section of the cluster file (known: %s)", strings.Join(sections, ", "))
	}
	hb, err := heartbeat.FromViper(v, self)
	if err != nil {
		return nil, err
	}
	c := &Config{Heartbeat: hb, Control: "unix:/run/hamirror/mirrord.sock"}
	if v.IsSet("control") {
		c.Control = v.GetString("control")
		if !strings.HasPrefix(c.Control, "unix:/") && !strings.HasPrefix(c.Control, "/") {
			return nil, keyErr("control", "%q: want unix:/PATH", c.Control)
		}
	}
	if err := decodeSection(v, "iscsi", &c.ISCSI); err != nil {
		return nil, err
	}
	if c.ISCSI.Timeout < 0 {
		return nil, keyErr("iscsi.timeout", "must be positive")
	}
	if v.IsSet("volume") {
		if c.Volume, err = decodeVolume(v); err != nil {
			return nil, err
		}
	}
	if c.Fencing, err = decodeFencing(v, hb); err != nil {
		return nil, err
	}
	if err := decodeSection(v, "metrics", &c.Metrics); err != nil {
		return nil, err
	}
	if err := validateMetrics(c.Metrics); err != nil {
		return nil, err
	}
	if c.Log, err = decodeLog(v); err != nil {
		return nil, err
	}
	if c.Group, err = resources.FromViper(v); err != nil {
		return nil, err
	}
	if c.Services, err = services.FromViper(v, hb); err != nil {
		return nil, err
	}
	return c, nil
}

// decodeSection decodes section key into out strictly (unknown keys are
// errors); an absent section leaves out as it is.
func decodeSection(v *viper.Viper, key string, out any) error {
	if !v.IsSet(key) {
		return nil
	}
	strict := func(dc *mapstructure.DecoderConfig) { dc.ErrorUnused = true }
	if err := v.UnmarshalKey(key, out, strict); err != nil {
		return keyErr(key, "%v", err)
	}
	return nil
}

// volumeFile is the volume section as written (rates as strings).
type volumeFile struct {
	Legs          []string      `mapstructure:"legs"`
	Device        string        `mapstructure:"device"`
	Fuse          string        `mapstructure:"fuse"`
	Listen        []string      `mapstructure:"listen"`
	Link          string        `mapstructure:"link"`
	ExportName    string        `mapstructure:"export_name"`
	IOTimeout     time.Duration `mapstructure:"io_timeout"`
	ResyncMinRate string        `mapstructure:"resync_min_rate"`
	ResyncMaxRate string        `mapstructure:"resync_max_rate"`
	MMPInterval   time.Duration `mapstructure:"mmp_interval"`
	AutoReAdd     *bool         `mapstructure:"auto_readd"`
}

// DefaultVolume returns the volume defaults with the reason for each.
func DefaultVolume() VolumeConfig {
	return VolumeConfig{
		// A stable name for the filesystem resource, whatever device the
		// volume was attached as.
		Link:       "/run/hamirror/volume",
		ExportName: "hamirror",
		// Far below a default kernel iSCSI setup's 120 s, above a busy
		// array's worst latency: a leg that exceeds it is failed.
		IOTimeout: 5 * time.Second,
		// A resync keeps 10 MiB/s even under application I/O, so a leg
		// comes back in hours, not never; unlimited when idle.
		ResyncMinRate: 10 << 20,
		// ext4's MMP default is 5 s; a second is cheap (one 4 KiB write
		// per leg) and keeps a single-node restart after a crash short.
		MMPInterval: time.Second,
		// An array that answers again is fenced and re-added: only the
		// chunks changed meanwhile are copied.
		AutoReAdd: true,
	}
}

func decodeVolume(v *viper.Viper) (*VolumeConfig, error) {
	var f volumeFile
	if err := decodeSection(v, "volume", &f); err != nil {
		return nil, err
	}
	c := DefaultVolume()
	if len(f.Legs) != 2 {
		return nil, keyErr("volume.legs", "lists %d legs; a mirrored volume has exactly two", len(f.Legs))
	}
	for i, l := range f.Legs {
		if strings.TrimSpace(l) == "" {
			return nil, keyErr(fmt.Sprintf("volume.legs[%d]", i), "is empty")
		}
		c.Legs[i] = l
	}
	if c.Legs[0] == c.Legs[1] {
		return nil, keyErr("volume.legs[1]", "is the same leg as volume.legs[0]")
	}
	c.Device, c.Fuse, c.Listen = f.Device, f.Fuse, f.Listen
	switch {
	case c.Device != "" && c.Fuse != "":
		return nil, keyErr("volume.fuse", "give either volume.device (kernel nbd) or volume.fuse (no nbd module), not both")
	case c.Device != "" && !strings.HasPrefix(c.Device, "/dev/nbd"):
		return nil, keyErr("volume.device", "%q is not an NBD device (/dev/nbdN)", c.Device)
	case c.Fuse != "" && !strings.HasPrefix(c.Fuse, "/"):
		return nil, keyErr("volume.fuse", "%q must be an absolute directory", c.Fuse)
	case c.Device == "" && c.Fuse == "" && len(c.Listen) == 0:
		return nil, keyErr("volume", "serves nothing: set device (/dev/nbdN), fuse (a directory) or listen (unix:PATH)")
	}
	for i, a := range c.Listen {
		if !strings.HasPrefix(a, "unix:/") && !strings.HasPrefix(a, "tcp:") {
			return nil, keyErr(fmt.Sprintf("volume.listen[%d]", i), "%q: want unix:/PATH or tcp:HOST:PORT", a)
		}
	}
	if f.Link != "" {
		if !strings.HasPrefix(f.Link, "/") {
			return nil, keyErr("volume.link", "%q must be an absolute path", f.Link)
		}
		c.Link = f.Link
	}
	if f.ExportName != "" {
		c.ExportName = f.ExportName
	}
	if f.IOTimeout != 0 {
		if f.IOTimeout < 100*time.Millisecond {
			return nil, keyErr("volume.io_timeout", "%v is too short (at least 100ms)", f.IOTimeout)
		}
		c.IOTimeout = f.IOTimeout
	}
	if f.ResyncMinRate != "" {
		r, err := units.ParseRate(f.ResyncMinRate)
		if err != nil {
			return nil, keyErr("volume.resync_min_rate", "%v", err)
		}
		c.ResyncMinRate = r
	}
	if f.ResyncMaxRate != "" {
		r, err := units.ParseRate(f.ResyncMaxRate)
		if err != nil {
			return nil, keyErr("volume.resync_max_rate", "%v", err)
		}
		c.ResyncMaxRate = r
	}
	if c.ResyncMaxRate > 0 && c.ResyncMaxRate < c.ResyncMinRate {
		return nil, keyErr("volume.resync_max_rate", "(%d) is below volume.resync_min_rate (%d)", c.ResyncMaxRate, c.ResyncMinRate)
	}
	if f.MMPInterval != 0 {
		if f.MMPInterval < 100*time.Millisecond || f.MMPInterval > time.Minute {
			return nil, keyErr("volume.mmp_interval", "%v: must be between 100ms and 1m", f.MMPInterval)
		}
		c.MMPInterval = f.MMPInterval
	}
	if f.AutoReAdd != nil {
		c.AutoReAdd = *f.AutoReAdd
	}
	return &c, nil
}

func decodeFencing(v *viper.Viper, hb heartbeat.Config) (FencingConfig, error) {
	var f struct {
		Keys map[string]string `mapstructure:"keys"`
	}
	if err := decodeSection(v, "fencing", &f); err != nil {
		return FencingConfig{}, err
	}
	c := FencingConfig{Keys: map[heartbeat.NodeID]uint64{}}
	seen := map[uint64]string{}
	for _, id := range slices.Sorted(maps.Keys(f.Keys)) { // the same key named every time
		s := f.Keys[id]
		if _, ok := hb.NodeByID(heartbeat.NodeID(id)); !ok {
			return c, keyErr("fencing.keys."+id, "names no node of the nodes section")
		}
		k, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(s), "0x"), 16, 64)
		if err != nil || k == 0 {
			return c, keyErr("fencing.keys."+id, "%q is not a non-zero 64-bit hex key (like 0x1a2b3c4d5e6f7081)", s)
		}
		if other, dup := seen[k]; dup {
			return c, keyErr("fencing.keys."+id, "is the same key as %s's: every node needs its own", other)
		}
		seen[k] = id
		c.Keys[heartbeat.NodeID(id)] = k
	}
	return c, nil
}
