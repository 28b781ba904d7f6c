package heartbeat

import (
	"reflect"
	"testing"
)

func targets(t Table) map[NodeID]string {
	m := map[NodeID]string{}
	for _, r := range t.Rows {
		m[r.ID] = string(r.BackupTarget) + "/" + r.State.String()
	}
	return m
}

func TestTableR9Reassignment(t *testing.T) {
	order := []NodeID{"a", "b", "c", "d"}
	addrs := map[NodeID][]string{"a": {"10.0.0.1"}, "b": {"10.0.0.2"}, "c": {"10.0.0.3"}, "d": {"10.0.0.4"}}
	tb := BuildTable(order, addrs, "a", 1)
	want := map[NodeID]string{"a": "b/Normal", "b": "c/Normal", "c": "d/Normal", "d": "a/Normal"}
	if got := targets(tb); !reflect.DeepEqual(got, want) {
		t.Fatalf("built %v", got)
	}
	if r, _ := tb.Row("a"); r.BackupAddr != "10.0.0.2" {
		t.Errorf("a's backup address %q", r.BackupAddr)
	}
	// c fails: b (which backed up to c) now backs up to c's target d.
	if !tb.Fail("c") || tb.Fail("c") {
		t.Fatal("Fail must report a change exactly once")
	}
	want = map[NodeID]string{"a": "b/Normal", "b": "d/Normal", "c": "d/Failed", "d": "a/Normal"}
	if got := targets(tb); !reflect.DeepEqual(got, want) {
		t.Fatalf("after c failed: %v", got)
	}
	if r, _ := tb.Row("b"); r.BackupAddr != "10.0.0.4" {
		t.Errorf("b's new backup address %q", r.BackupAddr)
	}
	// d fails: b's target d -> d's target a.
	tb.Fail("d")
	want = map[NodeID]string{"a": "b/Normal", "b": "a/Normal", "c": "d/Failed", "d": "a/Failed"}
	if got := targets(tb); !reflect.DeepEqual(got, want) {
		t.Fatalf("after d failed: %v", got)
	}
	// b fails: a is alone.
	tb.Fail("b")
	if r, _ := tb.Row("a"); r.BackupTarget != "" || r.BackupAddr != "" {
		t.Errorf("last node standing backs up to %q", r.BackupTarget)
	}
	// everyone back: the original ring.
	for _, id := range []NodeID{"b", "c", "d"} {
		if !tb.Rejoin(id) {
			t.Errorf("rejoin %s: no change", id)
		}
	}
	if tb.Rejoin("a") {
		t.Error("rejoining a Normal node changed the table")
	}
	want = map[NodeID]string{"a": "b/Normal", "b": "c/Normal", "c": "d/Normal", "d": "a/Normal"}
	if got := targets(tb); !reflect.DeepEqual(got, want) {
		t.Fatalf("after rejoin: %v", got)
	}
}

func TestTableFailChainSkipsFailedTargets(t *testing.T) {
	tb := BuildTable([]NodeID{"a", "b", "c", "d"}, nil, "a", 1)
	// b's target c fails first, then c's... the chain from a over b must
	// skip every Failed node.
	tb.Fail("c") // b -> d
	tb.Fail("b") // a -> b's target d
	if r, _ := tb.Row("a"); r.BackupTarget != "d" {
		t.Errorf("a backs up to %q, want d", r.BackupTarget)
	}
	if tb.Fail("zz") {
		t.Error("failing an unknown node changed the table")
	}
}

func TestTableRoundTrip(t *testing.T) {
	tb := BuildTable([]NodeID{"n1", "n2", "n3"}, map[NodeID][]string{"n1": {"1.1.1.1", "10.0.0.1"}}, "n1", 7)
	tb.Fail("n2")
	got, err := UnmarshalTable(tb.MarshalBinary())
	if err != nil || !reflect.DeepEqual(got, tb) {
		t.Fatalf("round trip: %v\n got %+v\nwant %+v", err, got, tb)
	}
	b := tb.MarshalBinary()
	for i := range b {
		if _, err := UnmarshalTable(b[:i]); err == nil {
			t.Errorf("truncated to %d bytes: accepted", i)
		}
	}
	if _, err := UnmarshalTable(append(b, 0)); err == nil {
		t.Error("trailing byte accepted")
	}
}
