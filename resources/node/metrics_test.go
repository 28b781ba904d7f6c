package node

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/services"
	"github.com/hamirror/hamirror/mirror"
	"github.com/hamirror/hamirror/resources"
	"github.com/hamirror/hamirror/resources/volume"
)

// TestMetricsFollowTheNodes runs two real nodes in this process (own
// registries, own endpoints) and scrapes them while the story unfolds:
// b starts alone, fences the unknown a after initdead and takes over;
// a joins as standby; the app's monitor fails once on b and the
// resource is restarted there. Each step must show in the metrics.
func TestMetricsFollowTheNodes(t *testing.T) {
	p := newTestPair(t)
	b := p.start(t, "b", p.write(t, "b", defaultSettings()))
	addrB := b.MetricsAddr()
	if addrB == "" || strings.HasSuffix(addrB, ":0") {
		t.Fatalf("node b serves no metrics endpoint (%q)", addrB)
	}
	f := waitScrape(t, addrB, 10*time.Second, "b takes over alone", func(f families) bool {
		return f.is("hamirror_group_starts_total", 1, "kind=takeover")
	})
	for _, c := range []struct {
		name   string
		v      float64
		labels []string
	}{
		{"hamirror_info", 1, []string{"cluster=opstest", "node=b"}},
		{"hamirror_role", 1, []string{"role=active"}},
		{"hamirror_role", 0, []string{"role=standby"}},
		{"hamirror_group_state", 1, []string{"state=running"}},
		{"hamirror_group_state", 0, []string{"state=stopped"}},
		{"hamirror_resource_state", 1, []string{"resource=app", "type=exec", "state=running"}},
		{"hamirror_resource_failures", 0, []string{"resource=app"}},
		{"hamirror_fence_operations_total", 1, []string{"result=ok"}},
		{"hamirror_group_starts_total", 0, []string{"kind=clean"}},
		{"hamirror_peer_state", 0, []string{"peer=a", "state=alive"}},
		{"hamirror_peer_state", 1, []string{"peer=a", "state=dead"}},
		{"hamirror_medium_state", 1, []string{"peer=a", "medium=nic1", "state=down"}},
		{"hamirror_volume_running", 0, nil},
		{"hamirror_group_migration_threshold", 3, nil},
		{"hamirror_config_last_reload_successful", 1, nil},
	} {
		if got, ok := f.value(c.name, c.labels...); !ok || got != c.v {
			t.Errorf("b after its takeover: %s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.v)
		}
	}
	if term, _ := f.value("hamirror_term"); term < 1 {
		t.Errorf("hamirror_term %v after a takeover, want >= 1", term)
	}
	for _, ph := range [][]string{{"kind=takeover", "phase=fence_peers", "resource="}, {"kind=takeover", "phase=start", "resource=app"}} {
		if _, ok := f.value("hamirror_group_start_last_phase_seconds", ph...); !ok {
			t.Errorf("no phase %v of the takeover", ph)
		}
	}
	if d, ok := f.value("hamirror_group_start_last_duration_seconds", "kind=takeover"); !ok || d <= 0 || d > 10 {
		t.Errorf("takeover duration %v (present %v)", d, ok)
	}
	if _, ok := f.value("hamirror_volume_state", "state=clean"); ok {
		t.Errorf("volume state exported although no volume runs here")
	}

	// a joins: b sees it alive on nic1, a is standby.
	a := p.start(t, "a", p.write(t, "a", defaultSettings()))
	waitScrape(t, addrB, 10*time.Second, "b sees a alive", func(f families) bool {
		return f.is("hamirror_peer_state", 1, "peer=a", "state=alive") &&
			f.is("hamirror_medium_state", 1, "peer=a", "medium=nic1", "state=up") &&
			f.is("hamirror_peer_role", 1, "peer=a", "role=standby")
	})
	fa := waitScrape(t, a.MetricsAddr(), 10*time.Second, "a standby, group stopped", func(f families) bool {
		return f.is("hamirror_role", 1, "role=standby") && f.is("hamirror_group_state", 1, "state=stopped") &&
			f.is("hamirror_peer_state", 1, "peer=b", "state=alive")
	})
	if n, _ := fa.value("hamirror_heartbeat_frames_accepted_total"); n == 0 {
		t.Errorf("a accepted no heartbeat frame")
	}
	if !fa.is("hamirror_info", 1, "node=a") || fa.is("hamirror_info", 1, "node=b") {
		t.Errorf("a's endpoint shows another node's registry")
	}

	// The app's monitor fails once on b: a failure, a restart, running.
	if err := os.WriteFile(p.file("b", "fail"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f = waitScrape(t, addrB, 10*time.Second, "b counts the failure and restarts app", func(f families) bool {
		return f.is("hamirror_resource_failures", 1, "resource=app") && f.is("hamirror_group_state", 1, "state=running")
	})
	if n, _ := f.value("hamirror_resource_operations_total", "resource=app", "op=monitor", "result=failed"); n != 1 {
		t.Errorf("failed monitors of app: %v, want 1", n)
	}
	if n, _ := f.value("hamirror_resource_operations_total", "resource=app", "op=start", "result=ok"); n != 2 {
		t.Errorf("starts of app: %v, want 2 (the takeover and the restart)", n)
	}
	if !f.is("hamirror_group_starts_total", 1, "kind=takeover") {
		t.Errorf("a restart of one resource counted as a group start")
	}
}

// TestMetricsFollowTheVolume serves the collector over a real mirror
// volume on two leg files (the node's Status with the volume part filled
// from the engine, as Node.Status does) and scrapes it while a leg fails,
// misses writes, is re-added and resynced, and while a verify finds a
// block one leg holds differently.
func TestMetricsFollowTheVolume(t *testing.T) {
	const size, chunk = 8 << 20, 64 << 10
	dir := t.TempDir()
	var legs [2]mirror.Leg
	var paths [2]string
	for i := range legs {
		paths[i] = filepath.Join(dir, fmt.Sprintf("leg%d", i))
		if err := os.WriteFile(paths[i], nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(paths[i], size); err != nil {
			t.Fatal(err)
		}
		l, err := mirror.OpenLeg(paths[i], mirror.LegOptions{})
		if err != nil {
			t.Fatal(err)
		}
		legs[i] = l
	}
	if _, err := mirror.Create(legs, mirror.CreateOptions{ChunkSize: chunk, NodeID: "n1"}); err != nil {
		t.Fatal(err)
	}
	opts := mirror.DefaultOptions()
	opts.NodeID, opts.AutoReAdd = "n1", false
	// Slow enough that the resync is seen running: 3 chunks take ~1.5 s.
	opts.ResyncMinRate, opts.ResyncMaxRate = 128<<10, 128<<10
	v, err := mirror.Assemble(legs, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	ms := newMetricsServer()
	defer ms.close()
	snap := func() metricsSnapshot {
		return metricsSnapshot{Status: Status{Node: "n1", Volume: &volume.Status{Status: v.Status()}}, Reloads: reloadStats{LastOK: true}}
	}
	if err := ms.register(newCollector(snap)); err != nil {
		t.Fatal(err)
	}
	if err := ms.serve("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	addr := ms.Addr()

	f := waitScrape(t, addr, 5*time.Second, "clean volume", func(f families) bool {
		return f.is("hamirror_volume_state", 1, "state=clean")
	})
	for _, slot := range []string{"0", "1"} {
		if !f.is("hamirror_leg_state", 1, "slot="+slot, "state=in_sync") || !f.is("hamirror_leg_out_of_sync_bytes", 0, "slot="+slot) {
			t.Errorf("leg %s not shown in sync", slot)
		}
		if !f.is("hamirror_leg_info", 1, "slot="+slot, "path="+paths[map[string]int{"0": 0, "1": 1}[slot]]) {
			t.Errorf("leg %s path not shown", slot)
		}
	}
	if got, _ := f.value("hamirror_volume_size_bytes"); got != float64(v.Status().SizeBytes) || got == 0 {
		t.Errorf("volume size %v, want %d", got, v.Status().SizeBytes)
	}

	if err := v.FailLeg(1); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0x5a}, 4096)
	for _, off := range []int64{0, 3 * chunk, 5 * chunk} {
		if err := v.WriteAt(data, off, false); err != nil {
			t.Fatal(err)
		}
	}
	f = waitScrape(t, addr, 5*time.Second, "degraded, leg 1 failed", func(f families) bool {
		return f.is("hamirror_volume_state", 1, "state=degraded") && f.is("hamirror_leg_state", 1, "slot=1", "state=failed")
	})
	if !f.is("hamirror_leg_out_of_sync_bytes", 3*chunk, "slot=1") || !f.is("hamirror_leg_out_of_sync_bytes", 0, "slot=0") {
		o1, _ := f.value("hamirror_leg_out_of_sync_bytes", "slot=1")
		t.Errorf("leg 1 lacks %v bytes after 3 chunks written without it, want %d", o1, 3*chunk)
	}
	if !f.is("hamirror_volume_state", 0, "state=clean") {
		t.Errorf("a degraded volume also shown clean")
	}

	if err := v.AddLeg(1, nil); err != nil {
		t.Fatal(err)
	}
	f = waitScrape(t, addr, 5*time.Second, "resync running", func(f families) bool {
		return f.is("hamirror_resync_running", 1) && f.is("hamirror_volume_state", 1, "state=resyncing")
	})
	if total, _ := f.value("hamirror_resync_total_bytes"); total != 3*chunk {
		t.Errorf("resync total %v, want the 3 chunks written (%d)", total, 3*chunk)
	}
	f = waitScrape(t, addr, 20*time.Second, "resync done, clean again", func(f families) bool {
		return f.is("hamirror_volume_state", 1, "state=clean") && f.is("hamirror_resync_running", 0) &&
			f.is("hamirror_leg_state", 1, "slot=1", "state=in_sync")
	})
	if !f.is("hamirror_leg_out_of_sync_bytes", 0, "slot=1") {
		t.Errorf("leg 1 still lacks bytes after the resync")
	}

	// A block leg 1 holds differently, behind the engine's back.
	lf, err := os.OpenFile(paths[1], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lf.WriteAt(bytes.Repeat([]byte{0xa5}, 4096), 3*chunk); err != nil {
		t.Fatal(err)
	}
	lf.Sync()
	lf.Close()
	if err := v.StartVerify(false); err != nil {
		t.Fatal(err)
	}
	f = waitScrape(t, addr, 20*time.Second, "verify done", func(f families) bool {
		done, _ := f.value("hamirror_verify_done_bytes")
		return f.is("hamirror_verify_running", 0) && done > 0
	})
	if !f.is("hamirror_verify_mismatches", 1) || !f.is("hamirror_verify_repaired", 0) {
		m, _ := f.value("hamirror_verify_mismatches")
		t.Errorf("verify mismatches %v, want 1 (one chunk differs), none repaired", m)
	}
}

// TestMetricsEveryDeclaredMetricIsExported fills a snapshot with every
// part (volume, peer knowledge, services, starts, reloads) and checks that
// the registry exports exactly the metrics metricSpecs declares, each
// with its HELP text, and that they pass Prometheus' own lint.
func TestMetricsEveryDeclaredMetricIsExported(t *testing.T) {
	c := newCollector(func() metricsSnapshot { return fullSnapshot() })
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	got := map[string]bool{}
	for _, f := range fams {
		got[f.GetName()] = true
		if f.GetHelp() == "" {
			t.Errorf("%s has no HELP", f.GetName())
		}
	}
	for _, s := range metricSpecs() {
		if !got[s.name] {
			t.Errorf("%s is declared but not exported by a full snapshot", s.name)
		}
		if !strings.HasPrefix(s.name, "hamirror_") {
			t.Errorf("%s lacks the hamirror_ prefix", s.name)
		}
		delete(got, s.name)
	}
	for name := range got {
		t.Errorf("%s exported but not declared", name)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// fullSnapshot is a node with every part present.
func fullSnapshot() metricsSnapshot {
	ping := 1
	now := time.Unix(1_800_000_000, 0)
	vs := &volume.Status{Status: mirror.Status{State: "resyncing", SizeBytes: 1 << 30,
		Legs:   [2]mirror.LegStatus{{Slot: 0, Path: "iscsi://a/1", State: "in_sync"}, {Slot: 1, Path: "iscsi://b/1", State: "rebuilding", OutOfSyncBytes: 1 << 20}},
		Resync: mirror.ResyncStatus{Running: true, DoneBytes: 1, TotalBytes: 2, BytesPerSecond: 3, ETASeconds: 4},
		Verify: mirror.VerifyStatus{Mismatches: 2}}, NBD: 1}
	cs := heartbeat.Status{Cluster: "c", Self: "a", Role: "active", Term: 4, Stalls: 1, LongestStall: time.Second,
		Nodes: []heartbeat.NodeStatus{{ID: "a", Self: true, State: heartbeat.NodeAlive, Role: "active", Ping: &ping},
			{ID: "b", State: heartbeat.NodeAlive, Role: "standby", Term: 3, Ping: &ping,
				Media: []heartbeat.MediumStatus{{Name: "nic1", State: heartbeat.MediumUp, LastHeard: time.Second}}}}}
	gs := resources.Status{State: resources.GroupRunning, MigrationThreshold: 3,
		Resources: []resources.ResourceStatus{{Name: "db", Type: "postgresql", State: resources.ResRunning, Failures: 1, LastMonitor: now}}}
	ph := []startPhase{{Phase: phaseFence, Duration: time.Second}, {Phase: phaseStart, Resource: "db", Duration: time.Second}}
	return metricsSnapshot{
		Status:   Status{Node: "a", Cluster: cs, Group: gs, Volume: vs, Peer: &PeerVolumeStatus{From: "b", Trusted: true}},
		Services: &services.Status{CaughtUp: true},
		Starts: startStats{Starts: map[string]uint64{startTakeover: 1}, Abandoned: map[string]uint64{},
			Last:  map[string]lastStart{startTakeover: {At: now, Duration: 2 * time.Second, Phases: ph}},
			Fence: map[string]uint64{"ok": 1}, Ops: map[opKey]uint64{{"db", "start", "ok"}: 1}},
		Reloads: reloadStats{Applied: 1, LastOK: true},
	}
}
