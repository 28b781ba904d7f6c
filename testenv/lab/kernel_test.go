package lab

import (
	"slices"
	"strings"
	"testing"
)

func TestResolveModulesOrdersDependenciesFirst(t *testing.T) {
	idx := map[string]module{
		"dm_mirror":      {depends: []string{"dm_region_hash", "dm_log", "dm_mod"}},
		"dm_region_hash": {depends: []string{"dm_log"}},
		"dm_log":         {depends: []string{"dm_mod"}},
		"dm_mod":         {},
		"raid1":          {depends: []string{"md_mod"}},
		"md_mod":         {},
		"virtio_blk":     {depends: []string{"virtio", "virtio_ring"}},
		"virtio":         {depends: []string{"virtio_ring"}},
		"virtio_ring":    {},
	}
	got, err := resolveModules(idx, map[string]bool{"crc32c": true},
		[]string{"dm-mirror", "raid1", "virtio_blk"}, []string{"drbd", "dm_log"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"dm_mod", "dm_log", "dm_region_hash", "dm_mirror", "md_mod", "raid1", "virtio_ring", "virtio", "virtio_blk"}
	if !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
}

func TestResolveModulesSkipsBuiltinAndFailsOnMissing(t *testing.T) {
	idx := map[string]module{"nbd": {depends: []string{"builtin_dep"}}, "drbd": {depends: []string{"lru_cache"}}}
	got, err := resolveModules(idx, map[string]bool{"builtin_dep": true, "serial_8250": true}, []string{"nbd", "serial_8250"}, nil)
	if err != nil || !slices.Equal(got, []string{"nbd"}) {
		t.Errorf("got %v, %v; want [nbd]", got, err)
	}
	_, err = resolveModules(idx, nil, []string{"drbd"}, nil)
	if err == nil || !strings.Contains(err.Error(), "lru_cache (needed by drbd)") {
		t.Errorf("missing dependency: %v", err)
	}
	_, err = resolveModules(idx, nil, []string{"nbd"}, []string{"drbd"})
	if err == nil {
		t.Error("an optional module present in the package with a missing dependency must fail loudly")
	}
}

func TestResolveModulesDetectsCycles(t *testing.T) {
	idx := map[string]module{"a": {depends: []string{"b"}}, "b": {depends: []string{"a"}}}
	if _, err := resolveModules(idx, nil, []string{"a"}, nil); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("cycle: %v", err)
	}
}
