package resources

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// fullAppState is the largest app state a valid config can produce.
func fullAppState() AppState {
	a := AppState{State: GroupBlocked, Current: strings.Repeat("r", MaxNameBytes), Eligible: true, Standby: true, Maintenance: true,
		Failures: bytes.Repeat([]byte{255}, MaxResources), Reason: strings.Repeat("é", MaxReasonBytes/2), Ack: 1<<64 - 1,
		Volume: VolumeKnowledge{Seq: 7, Generation: 0xdeadbeef, Events: 1 << 40, LegStates: [2]LegState{LegInSync, LegRebuilding}}}
	for i := range 16 {
		a.Volume.VolumeUUID[i], a.Volume.LegUUIDs[0][i], a.Volume.LegUUIDs[1][i] = byte(i), byte(i+16), byte(i+32)
	}
	return a
}

func TestAppStateRoundTrip(t *testing.T) {
	for _, a := range []AppState{
		{},
		{State: GroupRunning, Eligible: true, Failures: []uint8{0, 0, 1, 0, 2}},
		{State: GroupStarting, Current: "volume", Ack: 3},
		{State: GroupFenced, Reason: "fenced: RESERVATION CONFLICT"},
		fullAppState(),
	} {
		b, err := a.Marshal()
		if err != nil {
			t.Fatalf("%+v: %v", a, err)
		}
		got, err := UnmarshalAppState(b)
		if err != nil {
			t.Fatalf("%+v: %v", a, err)
		}
		if len(a.Failures) == 0 {
			a.Failures = nil
		}
		if !reflect.DeepEqual(got, a) {
			t.Errorf("round trip changed it:\n got %+v\nwant %+v", got, a)
		}
	}
}

// The largest app state (32 resources, longest name and reason, volume
// knowledge) fits heartbeat's 512 bytes, so a group of 16 does too.
func TestAppStateFitsTheHeartbeat(t *testing.T) {
	b, err := fullAppState().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > MaxAppStateBytes {
		t.Fatalf("the largest app state is %d bytes, more than %d", len(b), MaxAppStateBytes)
	}
	t.Logf("largest app state: %d bytes", len(b))
}

func TestAppStateRefusesBadInput(t *testing.T) {
	good, _ := fullAppState().Marshal()
	small, _ := AppState{State: GroupRunning, Current: "db"}.Marshal()
	for name, b := range map[string][]byte{
		"empty":           nil,
		"magic":           append([]byte("XX"), good[2:]...),
		"version 0":       patch(good, 2, 0),
		"state":           patch(good, 3, byte(groupStateMax)+1),
		"unknown flag":    patch(good, 4, 0x80|good[4]),
		"truncated":       good[:len(good)-1],
		"trailing":        append(bytes.Clone(good), 0),
		"name too long":   rawAppState(strings.Repeat("n", MaxNameBytes+1), 0, ""),
		"reason too long": rawAppState("", 0, strings.Repeat("r", MaxReasonBytes+1)),
		"reason not utf8": rawAppState("", 0, "\xff"),
		"reason control":  rawAppState("", 0, "stop failed\n\x1b[2Jall clear"),
		"reason DEL":      rawAppState("", 0, "a\x7fb"),
		"name control":    patch(small, 6, '\n'),
		"leg state":       patch(good, len(good)-33, byte(legStateMax)+1),
		"volume no seq":   append(patch(small, 4, flagVolume), make([]byte, volumeBytes)...),
		"too many counts": rawAppState("db", MaxResources+1, ""),
	} {
		_, err := UnmarshalAppState(b)
		if !errors.Is(err, ErrAppState) {
			t.Errorf("%s: got %v, want an ErrAppState", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
	if _, err := UnmarshalAppState(patch(good, 2, appVersion+1)); err == nil || !strings.Contains(err.Error(), "upgrade this node") {
		t.Errorf("a newer version: %v, want advice to upgrade", err)
	}
	// Marshal refuses what Unmarshal would refuse.
	for _, a := range []AppState{{State: 99}, {Current: "a\x01"}, {Reason: "\xff"}, {Reason: "a\rb"}, {Failures: make([]uint8, 33)}} {
		if _, err := a.Marshal(); !errors.Is(err, ErrAppState) {
			t.Errorf("Marshal(%+v) = %v, want an ErrAppState", a, err)
		}
	}
}

// rawAppState encodes fields without Marshal's checks.
func rawAppState(current string, counts int, reason string) []byte {
	b := append([]byte(appMagic), appVersion, byte(GroupRunning), 0, byte(len(current)))
	b = append(b, current...)
	b = append(b, byte(counts))
	b = append(b, make([]byte, counts)...)
	b = append(b, byte(len(reason)))
	b = append(b, reason...)
	return append(b, make([]byte, 8)...)
}

func patch(b []byte, off int, v byte) []byte {
	c := bytes.Clone(b)
	c[off] = v
	return c
}

func FuzzUnmarshalAppState(f *testing.F) {
	for _, a := range []AppState{{State: GroupRunning, Failures: []uint8{0, 1}}, fullAppState()} {
		b, _ := a.Marshal()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		a, err := UnmarshalAppState(p)
		if err != nil {
			if !errors.Is(err, ErrAppState) {
				t.Fatalf("error %v does not wrap ErrAppState", err)
			}
			return
		}
		b, err := a.Marshal()
		if err != nil || !bytes.Equal(b, p) {
			t.Fatalf("accepted input does not re-encode identically: %v", err)
		}
		if len(p) > MaxAppStateBytes {
			t.Fatalf("accepted %d bytes", len(p))
		}
	})
}

// The seed corpus in testdata/fuzz is part of the test: each seed is a
// valid encoding (or a past bug), checked here so that a format change
// cannot leave the fuzzer with stale seeds.
func TestFuzzSeedsPresent(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzUnmarshalAppState")
	for name, a := range map[string]AppState{
		"running":  {State: GroupRunning, Eligible: true, Failures: []uint8{0, 0, 1, 0, 0}},
		"largest":  fullAppState(),
		"starting": {State: GroupStarting, Current: "volume", Failures: []uint8{0, 0}, Ack: 9},
	} {
		b, _ := a.Marshal()
		want := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
		path := filepath.Join(dir, name)
		got, err := os.ReadFile(path)
		if os.IsNotExist(err) && os.Getenv("HAMIRROR_WRITE_SEEDS") != "" {
			os.MkdirAll(dir, 0o755)
			err = os.WriteFile(path, []byte(want), 0o644)
			got = []byte(want)
		}
		if err != nil || string(got) != want {
			t.Errorf("seed %s is missing or stale (%v): regenerate with HAMIRROR_WRITE_SEEDS=1 after removing it", path, err)
		}
	}
}
