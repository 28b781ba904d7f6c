package resources

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/spf13/viper"
)

// FromViper reads the `group:` section and the `resources:` list of the
// cluster file over DefaultConfig and validates them. Other sections
// belong to other packages and are ignored.
//
// When the file has a `volume:` section, the group starts with two
// implicit resources, "fence" (the SCSI-3 reservations) then "volume"
// (the mirror), always first and in that order: the fence must hold the
// arrays before the volume is assembled. A `resources:` entry of type
// fence or volume only overrides their timeouts and parameters (it is
// moved to its place whatever the order says); without a `volume:`
// section such an entry is an error. The other resources start in the
// order of the `resources:` list, or of `group.order` when given (it
// must then name each of them exactly once; fence and volume may be
// named, first).
//
// Durations are strings with a unit ("10s", "2m"). Keys are case
// insensitive (viper lower-cases them, parameters included). Unknown keys
// in `group:` are errors; a resource's other keys are its parameters,
// which its agent's constructor checks.
func FromViper(v *viper.Viper) (Config, error) {
	c := DefaultConfig()
	var order []string
	if v.IsSet("group") {
		g, ok := v.Get("group").(map[string]any)
		if !ok {
			return c, keyErr("group", "must be a mapping")
		}
		for _, k := range slices.Sorted(maps.Keys(g)) {
			val, key := g[k], "group."+k
			var err error
			switch k {
			case "order":
				order, err = stringList(key, val)
			case "migration_threshold":
				n, ok := val.(int)
				if !ok {
					return c, keyErr(key, "%v is not a whole number", val)
				}
				c.MigrationThreshold = n
			case "failure_timeout":
				c.FailureTimeout, err = duration(key, val)
			case "failback":
				// Membership moves the active role; the group follows it.
				return c, keyErr(key, "fail-back is cluster.failback (membership hands the active role back to the preferred node): move the key there")
			case "start_failure_is_fatal":
				c.StartFailureIsFatal, err = boolean(key, val)
			default:
				return c, keyErr(key, "unknown key (known: order, migration_threshold, failure_timeout, start_failure_is_fatal)")
			}
			if err != nil {
				return c, err
			}
		}
	}
	var list []Resource
	if v.IsSet("resources") {
		items, ok := v.Get("resources").([]any)
		if !ok {
			return c, keyErr("resources", "must be a list of resources")
		}
		for i, it := range items {
			r, err := resourceFrom(fmt.Sprintf("resources[%d]", i), it)
			if err != nil {
				return c, err
			}
			list = append(list, r)
		}
	}
	rs, err := arrange(list, order, v.IsSet("volume"))
	if err != nil {
		return c, err
	}
	c.Resources = rs
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

// resourceFrom reads one `resources:` entry.
func resourceFrom(key string, it any) (Resource, error) {
	m, ok := it.(map[string]any)
	if !ok {
		return Resource{}, keyErr(key, "must be a mapping with name, type and the type's parameters")
	}
	name, _ := m["name"].(string)
	typ, _ := m["type"].(string)
	if name == "" {
		return Resource{}, keyErr(key+".name", "is missing or not a string")
	}
	if typ == "" {
		return Resource{}, keyErr(key+".type", "is missing or not a string (one of %v)", Types())
	}
	r, err := DefaultResource(name, typ)
	if err != nil {
		return r, keyErr(key+".type", "%v", err)
	}
	r.Key = key
	for _, k := range slices.Sorted(maps.Keys(m)) {
		var err error
		switch k {
		case "name", "type":
		case "monitor_interval":
			r.MonitorInterval, err = duration(key+"."+k, m[k])
		case "start_timeout":
			r.StartTimeout, err = duration(key+"."+k, m[k])
		case "stop_timeout":
			r.StopTimeout, err = duration(key+"."+k, m[k])
		case "monitor_timeout":
			r.MonitorTimeout, err = duration(key+"."+k, m[k])
		default:
			if r.Params == nil {
				r.Params = map[string]any{}
			}
			r.Params[k] = m[k]
		}
		if err != nil {
			return r, err
		}
	}
	return r, nil
}

// arrange puts the resources in start order: the implicit fence and
// volume first (with a volume section), then the others by order or as
// listed.
func arrange(list []Resource, order []string, hasVolume bool) ([]Resource, error) {
	var head []Resource
	if hasVolume {
		for _, typ := range []string{TypeFence, TypeVolume} {
			r, _ := DefaultResource(typ, typ)
			r.Key = "volume"
			head = append(head, r)
		}
	}
	var rest []Resource
	for _, r := range list {
		k := slices.Index([]string{TypeFence, TypeVolume}, r.Type)
		switch {
		case k < 0:
			rest = append(rest, r)
		case !hasVolume:
			return nil, keyErr(r.Key+".type", "%s needs a volume: section (the fence and volume resources come with it)", r.Type)
		case head[k].Key != "volume":
			return nil, keyErr(r.Key+".type", "a second %s resource (a cluster has one fence and one volume)", r.Type)
		default:
			head[k] = r
		}
	}
	if order == nil {
		return append(head, rest...), nil
	}
	for i, name := range order {
		if k := slices.IndexFunc(head, func(r Resource) bool { return r.Name == name }); k >= 0 && k != i {
			return nil, keyErr(fmt.Sprintf("group.order[%d]", i), "%q is always at position %d (fence, then volume, come first)", name, k)
		}
	}
	sorted := head
	for i, name := range order {
		if slices.ContainsFunc(head, func(r Resource) bool { return r.Name == name }) {
			continue
		}
		k := slices.IndexFunc(rest, func(r Resource) bool { return r.Name == name })
		switch {
		case k < 0 && slices.ContainsFunc(sorted, func(r Resource) bool { return r.Name == name }):
			return nil, keyErr(fmt.Sprintf("group.order[%d]", i), "%q is listed twice", name)
		case k < 0:
			return nil, keyErr(fmt.Sprintf("group.order[%d]", i), "%q is not a resource in resources", name)
		}
		sorted = append(sorted, rest[k])
		rest = slices.Delete(rest, k, k+1)
	}
	if len(rest) > 0 {
		return nil, keyErr("group.order", "does not list %q: name every resource once, or drop group.order to start them in list order", rest[0].Name)
	}
	return sorted, nil
}

func duration(key string, v any) (time.Duration, error) {
	s, ok := v.(string)
	if !ok {
		return 0, keyErr(key, "%v is not a duration: give a unit, like 10s or 2m", v)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, keyErr(key, "%q is not a duration: give a unit, like 10s or 2m", s)
	}
	return d, nil
}

func boolean(key string, v any) (bool, error) {
	b, ok := v.(bool)
	if !ok {
		return false, keyErr(key, "%v is not true or false", v)
	}
	return b, nil
}

func stringList(key string, v any) ([]string, error) {
	items, ok := v.([]any)
	if !ok {
		return nil, keyErr(key, "must be a list of resource names")
	}
	out := make([]string, 0, len(items))
	for i, it := range items {
		s, ok := it.(string)
		if !ok || s == "" {
			return nil, keyErr(fmt.Sprintf("%s[%d]", key, i), "%v is not a resource name", it)
		}
		out = append(out, s)
	}
	return out, nil
}
