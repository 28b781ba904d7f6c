package node

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/resources"
)

// diffConfig compares the running configuration with a reloaded one: the
// group's live changes (applied by Group.Reconfigure) and every change
// that needs a restart, each named by its key. log.level and
// metrics.listen are Reload's own. See reload.go for why each key is
// live or not.
func diffConfig(old, nw *Config) (live, restart []Change) {
	d := differ{}
	d.heartbeat(old.Heartbeat, nw.Heartbeat)
	d.tagged("iscsi", old.ISCSI, nw.ISCSI)
	d.volume(old.Volume, nw.Volume)
	if !maps.Equal(old.Fencing.Keys, nw.Fencing.Keys) {
		d.add("fencing.keys", "", "", "the reservation keys are registered on the arrays: "+restartNote)
	}
	d.value("control", old.Control, nw.Control)
	d.tagged("services", old.Services, nw.Services)
	d.group(old.Group, nw.Group)
	for i := range d.out {
		if d.out[i].Note == "" {
			d.out[i].Note = restartNote
		}
	}
	return groupLive(old.Group, nw.Group), d.out
}

// groupLive lists the live group changes.
func groupLive(old, nw resources.Config) []Change {
	d := differ{}
	d.value("group.migration_threshold", old.MigrationThreshold, nw.MigrationThreshold)
	d.value("group.failure_timeout", old.FailureTimeout, nw.FailureTimeout)
	d.value("group.start_failure_is_fatal", old.StartFailureIsFatal, nw.StartFailureIsFatal)
	for _, r := range old.Resources {
		k := slices.IndexFunc(nw.Resources, func(f resources.Resource) bool { return f.Name == r.Name && f.Type == r.Type })
		if k < 0 {
			continue
		}
		f, key := nw.Resources[k], resourceKey(nw.Resources[k], k)
		d.value(key+".monitor_interval", r.MonitorInterval, f.MonitorInterval)
		d.value(key+".monitor_timeout", r.MonitorTimeout, f.MonitorTimeout)
		d.value(key+".start_timeout", r.StartTimeout, f.StartTimeout)
		d.value(key+".stop_timeout", r.StopTimeout, f.StopTimeout)
	}
	return d.out
}

// resourceKey names a resource in messages: its key in the file, and its
// name ("resources[2] (db)").
func resourceKey(r resources.Resource, i int) string {
	key := r.Key
	if key == "" {
		key = fmt.Sprintf("resources[%d]", i)
	}
	if key == "volume" { // the implicit fence and volume resources
		return "resources." + r.Name
	}
	return key
}

// restartNote ends the note of every change that needs a restart.
const restartNote = "needs a restart of mirrord"

type differ struct{ out []Change }

func (d *differ) add(key, old, nw, note string) {
	d.out = append(d.out, Change{Key: key, Old: old, New: nw, Note: note})
}

// value records key when old and nw differ.
func (d *differ) value(key string, old, nw any) {
	if !reflect.DeepEqual(old, nw) {
		d.add(key, show(old), show(nw), "")
	}
}

func show(v any) string {
	switch x := v.(type) {
	case time.Duration:
		return x.String()
	case string:
		return x
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return ""
		}
		return show(rv.Elem().Interface())
	}
	return fmt.Sprintf("%v", v)
}

// tagged compares two structs field by field, naming each field by its
// mapstructure tag under section.
func (d *differ) tagged(section string, old, nw any) {
	ov, nv := reflect.ValueOf(old), reflect.ValueOf(nw)
	t := ov.Type()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("mapstructure"), ",")
		if name == "" || name == "-" {
			name = strings.ToLower(t.Field(i).Name)
		}
		d.value(section+"."+name, ov.Field(i).Interface(), nv.Field(i).Interface())
	}
}

func (d *differ) heartbeat(old, nw heartbeat.Config) {
	d.value("cluster.name", old.Cluster, nw.Cluster)
	d.value("cluster.key_file", old.KeyFile, nw.KeyFile)
	d.value("cluster.preferred", old.Preferred, nw.Preferred)
	d.value("cluster.failback", old.Failback, nw.Failback)
	d.value("cluster.failback_delay", old.FailbackDelay, nw.FailbackDelay)
	d.value("cluster.port", old.Port, nw.Port)
	d.value("cluster.baud", old.Baud, nw.Baud)
	d.value("cluster.state_dir", old.StateDir, nw.StateDir)
	d.tagged("timing", old.Timing, nw.Timing)
	if len(old.Nodes) != len(nw.Nodes) {
		d.add("nodes", fmt.Sprintf("%d nodes", len(old.Nodes)), fmt.Sprintf("%d nodes", len(nw.Nodes)), "")
	} else {
		for i := range old.Nodes {
			d.tagged(fmt.Sprintf("nodes[%d]", i), old.Nodes[i], nw.Nodes[i])
		}
	}
	// The node drops the disks that name neither a path nor a leg when it
	// opens its links (with a warning): compare what it can run.
	od, nd := usableDisks(old.Disks), usableDisks(nw.Disks)
	if len(od) != len(nd) {
		d.add("disks", fmt.Sprintf("%d disks", len(od)), fmt.Sprintf("%d disks", len(nd)), "")
	} else {
		for i := range od {
			d.tagged(fmt.Sprintf("disks[%d]", i), od[i], nd[i])
		}
	}
	d.value("ping.targets", old.PingTargets, nw.PingTargets)
	d.value("ping.interval", old.PingInterval, nw.PingInterval)
}

func usableDisks(ds []heartbeat.Disk) []heartbeat.Disk {
	var out []heartbeat.Disk
	for _, x := range ds {
		if x.Path != "" || x.Leg != "" {
			out = append(out, x)
		}
	}
	return out
}

func (d *differ) volume(old, nw *VolumeConfig) {
	switch {
	case old == nil && nw == nil:
		return
	case old == nil || nw == nil:
		d.add("volume", presence(old != nil), presence(nw != nil), "")
		return
	}
	for i := range 2 {
		d.value(fmt.Sprintf("volume.legs[%d]", i), old.Legs[i], nw.Legs[i])
	}
	d.value("volume.device", old.Device, nw.Device)
	d.value("volume.fuse", old.Fuse, nw.Fuse)
	d.value("volume.listen", old.Listen, nw.Listen)
	d.value("volume.link", old.Link, nw.Link)
	d.value("volume.export_name", old.ExportName, nw.ExportName)
	d.value("volume.io_timeout", old.IOTimeout, nw.IOTimeout)
	d.value("volume.resync_min_rate", old.ResyncMinRate, nw.ResyncMinRate)
	d.value("volume.resync_max_rate", old.ResyncMaxRate, nw.ResyncMaxRate)
	d.value("volume.mmp_interval", old.MMPInterval, nw.MMPInterval)
	d.value("volume.auto_readd", old.AutoReAdd, nw.AutoReAdd)
}

func presence(b bool) string {
	if b {
		return "present"
	}
	return "absent"
}

// group lists the group's makeup changes (Group.Reconfigure refuses them).
func (d *differ) group(old, nw resources.Config) {
	names := func(c resources.Config) []string {
		out := make([]string, len(c.Resources))
		for i, r := range c.Resources {
			out[i] = r.Name
		}
		return out
	}
	if on, nn := names(old), names(nw); !slices.Equal(on, nn) {
		d.add("resources", strings.Join(on, ","), strings.Join(nn, ","), "the group's resources and their order are set at start: "+restartNote)
	}
	for i, r := range nw.Resources {
		k := slices.IndexFunc(old.Resources, func(o resources.Resource) bool { return o.Name == r.Name })
		if k < 0 {
			continue
		}
		o, key := old.Resources[k], resourceKey(r, i)
		if o.Type != r.Type {
			d.add(key+".type", o.Type, r.Type, "")
			continue
		}
		for _, p := range slices.Sorted(maps.Keys(mergeKeys(o.Params, r.Params))) {
			if !reflect.DeepEqual(o.Params[p], r.Params[p]) { // values left out: a parameter may hold a secret
				d.add(key+"."+p, "", "", "the resource's agent was built with the old value at start: "+restartNote)
			}
		}
	}
}

func mergeKeys(a, b map[string]any) map[string]bool {
	m := map[string]bool{}
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	return m
}
