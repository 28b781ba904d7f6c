package resources

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/spf13/viper"
)

func load(t *testing.T, yaml string) (Config, error) {
	t.Helper()
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(yaml)); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	return FromViper(v)
}

func names(c Config) string {
	var n []string
	for _, r := range c.Resources {
		n = append(n, r.Name)
	}
	return strings.Join(n, " ")
}

const sampleGroup = `
cluster: {name: pair}
volume:
  legs: [iscsi://a/iqn/0, iscsi://b/iqn/0]
group:
  migration_threshold: 5
  failure_timeout: 30m
  start_failure_is_fatal: false
resources:
  - {name: data, type: filesystem, mountpoint: /srv, fstype: ext4}
  - {name: ip, type: vip, address: 192.0.2.10/24, Interface: eth0, monitor_interval: 5s}
  - {name: db, type: postgresql, data_dir: /srv/pg, start_timeout: 10m}
  - {name: app, type: systemd, unit: app.service}
`

func TestFromViper(t *testing.T) {
	c, err := load(t, sampleGroup)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(c); got != "fence volume data ip db app" {
		t.Errorf("order = %s, want the implicit fence and volume first, then the list", got)
	}
	if c.MigrationThreshold != 5 || c.FailureTimeout != 30*time.Minute || c.StartFailureIsFatal {
		t.Errorf("group = %+v", c)
	}
	ip := c.Resources[3]
	if ip.MonitorInterval != 5*time.Second || ip.StartTimeout != 20*time.Second || ip.Key != "resources[1]" {
		t.Errorf("ip = %+v", ip)
	}
	if ip.Params["interface"] != "eth0" || ip.Params["address"] != "192.0.2.10/24" || len(ip.Params) != 2 {
		t.Errorf("ip params = %v (keys are lower-cased, name/type/timeouts are not params)", ip.Params)
	}
	if ip.ParamKey("address") != "resources[1].address" {
		t.Errorf("ParamKey = %s", ip.ParamKey("address"))
	}
	if db := c.Resources[4]; db.StartTimeout != 10*time.Minute || db.StopTimeout != 2*time.Minute {
		t.Errorf("db timeouts = %v/%v", db.StartTimeout, db.StopTimeout)
	}
	if v := c.Resources[1]; v.Type != TypeVolume || v.Key != "volume" || v.StartTimeout != 90*time.Second {
		t.Errorf("implicit volume = %+v", v)
	}
}

func TestFromViperDefaults(t *testing.T) {
	c, err := load(t, "cluster: {name: pair}\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.MigrationThreshold != 3 || c.FailureTimeout != 10*time.Minute || !c.StartFailureIsFatal || len(c.Resources) != 0 {
		t.Errorf("defaults = %+v", c)
	}
	for _, typ := range Types() {
		r, err := DefaultResource("x", typ)
		if err != nil || r.MonitorInterval <= 0 || r.StartTimeout <= 0 || r.StopTimeout <= 0 || r.MonitorTimeout <= 0 {
			t.Errorf("%s defaults = %+v (%v)", typ, r, err)
		}
		if r.MonitorTimeout >= r.MonitorInterval*5 {
			t.Errorf("%s: a monitor timeout of %v is out of proportion to its %v interval", typ, r.MonitorTimeout, r.MonitorInterval)
		}
	}
}

func TestFromViperOrder(t *testing.T) {
	y := strings.Replace(sampleGroup, "group:\n", "group:\n  order: [data, db, ip, app]\n", 1)
	if c, err := load(t, y); err != nil || names(c) != "fence volume data db ip app" {
		t.Errorf("group.order: %s, %v", names(c), err)
	}
	y = strings.Replace(sampleGroup, "group:\n", "group:\n  order: [fence, volume, app, data, db, ip]\n", 1)
	if c, err := load(t, y); err != nil || names(c) != "fence volume app data db ip" {
		t.Errorf("group.order with fence and volume: %s, %v", names(c), err)
	}
	// an entry of type volume overrides the implicit one, in its place
	y = sampleGroup + "  - {name: volume, type: volume, stop_timeout: 5m}\n"
	if c, err := load(t, y); err != nil || names(c) != "fence volume data ip db app" || c.Resources[1].StopTimeout != 5*time.Minute {
		t.Errorf("volume override: %s, %v", names(c), err)
	}
}

func TestFromViperNamesTheKey(t *testing.T) {
	noVolume := strings.Replace(sampleGroup, "volume:\n  legs: [iscsi://a/iqn/0, iscsi://b/iqn/0]\n", "", 1)
	for _, tc := range []struct {
		key, yaml string
	}{
		{"group.migration_threshold", strings.Replace(sampleGroup, "migration_threshold: 5", "migration_threshold: 0", 1)},
		{"group.migration_threshold", strings.Replace(sampleGroup, "migration_threshold: 5", "migration_threshold: many", 1)},
		{"group.failure_timeout", strings.Replace(sampleGroup, "failure_timeout: 30m", "failure_timeout: 600", 1)},
		{"group.failure_timeout", strings.Replace(sampleGroup, "failure_timeout: 30m", "failure_timeout: -1m", 1)},
		{"group.failback", strings.Replace(sampleGroup, "failure_timeout: 30m", "failure_timeout: 30m\n  failback: true", 1)},
		{"group.stickiness", strings.Replace(sampleGroup, "failure_timeout: 30m", "failure_timeout: 30m\n  stickiness: 100", 1)},
		{"group.start_failure_is_fatal", strings.Replace(sampleGroup, "start_failure_is_fatal: false", "start_failure_is_fatal: 1", 1)},
		{"group.order", strings.Replace(sampleGroup, "group:\n", "group:\n  order: [data, db, ip]\n", 1)},
		{"group.order[2]", strings.Replace(sampleGroup, "group:\n", "group:\n  order: [data, db, nope, ip, app]\n", 1)},
		{"group.order[4]", strings.Replace(sampleGroup, "group:\n", "group:\n  order: [data, db, ip, app, db]\n", 1)},
		{"group.order[0]", strings.Replace(sampleGroup, "group:\n", "group:\n  order: [volume, fence, data, db, ip, app]\n", 1)},
		{"resources[1].type", strings.Replace(sampleGroup, "type: vip", "type: floating-ip", 1)},
		{"resources[2].type", strings.Replace(sampleGroup, "type: postgresql,", "", 1)},
		{"resources[0].name", strings.Replace(sampleGroup, "name: data,", "", 1)},
		{"resources[1].name", strings.Replace(sampleGroup, "name: ip,", "name: data,", 1)},
		{"resources[1].name", strings.Replace(sampleGroup, "name: ip,", "name: 'my ip',", 1)},
		{"resources[1].monitor_interval", strings.Replace(sampleGroup, "monitor_interval: 5s", "monitor_interval: 5", 1)},
		{"resources[1].monitor_interval", strings.Replace(sampleGroup, "monitor_interval: 5s", "monitor_interval: -5s", 1)},
		{"resources[2].start_timeout", strings.Replace(sampleGroup, "start_timeout: 10m", "start_timeout: 0s", 1)},
		{"resources[4].type", noVolume + "  - {name: v, type: volume}\n"},
		{"resources[5].type", sampleGroup + "  - {name: f2, type: fence}\n  - {name: f3, type: fence}\n"},
		{"resources", "resources: {name: x}\n"},
		{"resources[0]", "resources: [x]\n"},
		{"resources", "resources:\n" + manyResources(MaxResources+1)},
	} {
		_, err := load(t, tc.yaml)
		t.Logf("%v", err)
		var ke *heartbeat.KeyError
		if !errors.As(err, &ke) || ke.Key != tc.key {
			t.Errorf("want an error naming %s, got %v", tc.key, err)
		}
	}
}

func manyResources(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString("  - {type: exec, name: r" + string(rune('a'+i/26)) + string(rune('a'+i%26)) + "}\n")
	}
	return b.String()
}

func TestValidate(t *testing.T) {
	fence, _ := DefaultResource("fence", TypeFence)
	vol, _ := DefaultResource("volume", TypeVolume)
	app, _ := DefaultResource("app", TypeExec)
	for _, tc := range []struct {
		key string
		rs  []Resource
	}{
		{"resources[1].type", []Resource{app, fence}},
		{"resources[1].type", []Resource{app, vol}},
		{"resources[0].type", []Resource{vol, fence}},
	} {
		c := DefaultConfig()
		c.Resources = tc.rs
		err := c.Validate()
		var ke *heartbeat.KeyError
		if !errors.As(err, &ke) || ke.Key != tc.key {
			t.Errorf("%s: want an error naming %s, got %v", names(c), tc.key, err)
		}
	}
	c := DefaultConfig()
	c.Resources = []Resource{fence, vol, app}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
	if _, err := New(Config{}, "n1", Options{Peers: []heartbeat.NodeID{"n2"}}, time.Time{}); err == nil {
		t.Error("New accepted a config without defaults")
	}
}
