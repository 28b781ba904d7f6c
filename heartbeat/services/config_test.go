package services

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"

	"github.com/hamirror/hamirror/heartbeat"
)

func parse(t *testing.T, yaml string) (Config, error) {
	t.Helper()
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(yaml)); err != nil {
		t.Fatal(err)
	}
	return FromViper(v, heartbeat.Config{StateDir: "/var/lib/hamirror"})
}

func TestConfigDefaultsAndOverrides(t *testing.T) {
	c, err := parse(t, "cluster: {name: x}\n")
	if err != nil || c.Dir != "/var/lib/hamirror/services" || c.Port != 5406 || c.TrafficInterval != 10*time.Second {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	c, err = parse(t, "services: {traffic_interval: 1s, interfaces: [eth1], coordinator_failback: true, dir: /srv/s}\n")
	if err != nil || c.TrafficInterval != time.Second || c.Interfaces[0] != "eth1" || !c.CoordinatorFailback || c.Dir != "/srv/s" {
		t.Fatalf("overrides: %+v %v", c, err)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	for yaml, key := range map[string]string{
		"services: {traffic_intervall: 1s}\n": "services",
		"services: {port: 70000}\n":           "services.port",
		"services: {log_keep: 0}\n":           "services.log_keep",
		"services: {traffic_interval: 1ms}\n": "services.traffic_interval",
		"services: {log_timeout: soon}\n":     "services",
	} {
		_, err := parse(t, yaml)
		var ke *heartbeat.KeyError
		if !errors.As(err, &ke) || ke.Key != key {
			t.Errorf("%q: %v, want a KeyError for %s", yaml, err, key)
		}
		if key == "services" && !strings.Contains(err.Error(), strings.Split(strings.Split(yaml, "{")[1], ":")[0]) {
			t.Errorf("%q: the error does not name the key: %v", yaml, err)
		}
	}
}
