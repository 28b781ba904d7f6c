package resources

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// failMonitor makes the next monitor of name fail.
func (d *driver) failMonitor(name string, after time.Duration) {
	d.t.Helper()
	d.held = nil
	d.hold = func(e Effect) bool { return e.Kind == EffectMonitor && e.Resource == name }
	d.now = d.now.Add(after)
	d.g.Tick(d.now)
	d.drain()
	d.hold = func(Effect) bool { return false }
	if len(d.held) != 1 {
		d.t.Fatalf("no monitor of %s issued after %v: held %v", name, after, d.held)
	}
	d.g.Done(d.now, Result{Op: d.held[0].Op, Outcome: Failed, Err: "refused"})
	d.drain()
}

func TestReconfigureLowerThresholdMovesGroup(t *testing.T) {
	d := newDriver(t)
	d.run()
	d.failMonitor("db", 11*time.Second)
	d.failMonitor("db", 11*time.Second)
	if st := d.g.Status(); st.State != GroupRunning || st.Resources[4].Failures != 2 {
		t.Fatalf("after two failures below threshold 3: %s, %d failures", st.State, st.Resources[4].Failures)
	}
	c := d.g.cfg
	c.MigrationThreshold = 2
	if err := d.g.Reconfigure(d.now, c); err != nil {
		t.Fatal(err)
	}
	d.drain()
	st := d.g.Status()
	if st.State != GroupFailed || st.Eligible || st.MigrationThreshold != 2 {
		t.Errorf("threshold lowered to the failure count: group %s eligible %v threshold %d, want failed, ineligible, 2",
			st.State, st.Eligible, st.MigrationThreshold)
	}
	if e, ok := d.last(EffectSetEligible); !ok || e.Eligible {
		t.Errorf("membership not told the node is ineligible: %+v", e)
	}
}

func TestReconfigureMonitorIntervalAndTimeouts(t *testing.T) {
	d := newDriver(t)
	d.run()
	c := d.g.cfg
	c.Resources = slices.Clone(c.Resources)
	c.Resources[4].MonitorInterval = 2 * time.Second
	c.Resources[4].StartTimeout = 7 * time.Second
	c.Resources[3].MonitorInterval = time.Minute // longer: after the monitor already due
	before := slices.Clone(d.g.cfg.Resources)
	if err := d.g.Reconfigure(d.now, c); err != nil {
		t.Fatal(err)
	}
	d.drain()
	if d.g.cfg.Resources[4].MonitorInterval != 2*time.Second || !reflect.DeepEqual(c.Resources, d.g.cfg.Resources) {
		t.Fatalf("not applied: %+v", d.g.cfg.Resources[4])
	}
	if before[4].MonitorInterval != 10*time.Second {
		t.Fatalf("the caller's slice was changed: %+v", before[4])
	}
	mark := len(d.seen)
	d.now = d.now.Add(2 * time.Second)
	d.g.Tick(d.now)
	d.drain()
	var monitored []string
	for _, e := range d.seen[mark:] {
		if e.Kind == EffectMonitor {
			monitored = append(monitored, e.Resource)
		}
	}
	if !slices.Equal(monitored, []string{"db"}) {
		t.Errorf("2 s after the reload monitored %v, want only db (its interval is 2 s now)", monitored)
	}
	mark = len(d.seen)
	d.now = d.now.Add(9 * time.Second) // 11 s after the reload: vip's old schedule (10 s) stands
	d.g.Tick(d.now)
	d.drain()
	if !slices.ContainsFunc(d.seen[mark:], func(e Effect) bool { return e.Kind == EffectMonitor && e.Resource == "vip" }) {
		t.Errorf("vip's monitor already scheduled was dropped by a longer interval")
	}
	if err := d.g.Restart(d.now, "db"); err != nil {
		t.Fatal(err)
	}
	d.drain()
	if e, ok := d.last(EffectStart); !ok || e.Resource != "db" || e.Timeout != 7*time.Second {
		t.Errorf("restart of db after the reload: %+v, want start db with the new 7s timeout", e)
	}
}

func TestReconfigureKeepsTimeoutOfOperationInFlight(t *testing.T) {
	d := newDriver(t)
	d.hold = func(e Effect) bool { return e.Kind == EffectStart && e.Resource == "db" }
	d.g.Membership(d.now, View{Role: heartbeat.RoleActive, Peers: []PeerView{{ID: "n2", State: heartbeat.NodeDead}}})
	d.drain()
	if len(d.held) != 1 {
		t.Fatalf("db start not in flight: %v", d.held)
	}
	c := d.g.cfg
	c.Resources = slices.Clone(c.Resources)
	c.Resources[4].StartTimeout = time.Second
	if err := d.g.Reconfigure(d.now, c); err != nil {
		t.Fatal(err)
	}
	d.drain()
	d.now = d.now.Add(30 * time.Second) // far past the new 1 s + grace, well within the old 5 m
	d.g.Tick(d.now)
	d.drain()
	if d.saw("timed out") || d.g.Status().State != GroupStarting {
		t.Errorf("the start in flight was timed out by the new timeout: %s", d.g.Status().State)
	}
	d.g.Done(d.now, Result{Op: d.held[0].Op})
	d.drain()
	if s := d.g.Status().State; s != GroupRunning {
		t.Errorf("group %s after the start answered, want running", s)
	}
}

func TestReconfigureRefusesMakeupChanges(t *testing.T) {
	for _, tc := range []struct {
		name, key string
		edit      func(c *Config)
	}{
		{"params", "resources[4]", func(c *Config) { c.Resources[4].Params = map[string]any{"pgdata": "/srv/pg"} }},
		{"type", "resources[4].type", func(c *Config) { c.Resources[4].Type = TypeExec }},
		{"order", "resources[3].name", func(c *Config) { c.Resources[3], c.Resources[4] = c.Resources[4], c.Resources[3] }},
		{"added", "resources[5]", func(c *Config) {
			r, _ := DefaultResource("app", TypeExec)
			c.Resources = append(c.Resources, r)
		}},
		{"dropped", "resources", func(c *Config) { c.Resources = c.Resources[:4] }},
		{"invalid", "group.migration_threshold", func(c *Config) { c.MigrationThreshold = 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDriver(t)
			d.run()
			c := d.g.cfg
			c.Resources = slices.Clone(c.Resources)
			if tc.name != "invalid" {
				c.MigrationThreshold = 9 // a live change in the same file: not applied either
			}
			tc.edit(&c)
			err := d.g.Reconfigure(d.now, c)
			var ke *heartbeat.KeyError
			if !errors.As(err, &ke) || ke.Key != tc.key {
				t.Fatalf("Reconfigure: %v, want a KeyError naming %s", err, tc.key)
			}
			if st := d.g.Status(); st.MigrationThreshold != 3 || st.State != GroupRunning {
				t.Errorf("a refused reconfiguration changed the group: threshold %d, %s", st.MigrationThreshold, st.State)
			}
		})
	}
}
