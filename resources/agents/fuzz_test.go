package agents

import (
	"strings"
	"testing"
	"time"
)

// The decoders of what agents read from the system and from agents must
// answer hostile bytes with an error, never a crash or a hang.

func FuzzParseMountinfo(f *testing.F) {
	f.Add([]byte(sampleMountinfo))
	f.Add([]byte("36 22 7:3 / /a\\040b rw - ext4 /dev/loop3 rw\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		mi, err := parseMountinfo(b)
		if err != nil {
			return
		}
		for _, e := range mi {
			if !strings.HasPrefix(e.mountPoint, "/") {
				t.Fatalf("accepted a relative mount point %q", e.mountPoint)
			}
		}
		mountAt(mi, "/")
		mountsBelow(mi, "/srv")
	})
}

func FuzzParseExt4Super(f *testing.F) {
	f.Add(super(1, ext4CompatJournal, ext4IncompatRecov))
	f.Add(super(2, 0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := parseExt4Super(b); err == nil {
			needsFsck(s)
		}
	})
}

func FuzzParseOCFMetadata(f *testing.F) {
	f.Add([]byte(`<resource-agent name="X"><parameters><parameter name="n" required="1"><content type="integer"/></parameter></parameters><actions><action name="start"/></actions></resource-agent>`))
	f.Add([]byte(`<resource-agent><parameters><parameter name="m"><content type="select"><option value="a"/></content></parameter></parameters></resource-agent>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		md, err := parseOCFMetadata(b)
		if err != nil {
			return
		}
		md.check(map[string]string{"n": "1", "m": "a", "z": "x"})
	})
}

func FuzzParseMountOptions(f *testing.F) {
	f.Add("defaults,noatime,errors=remount-ro")
	f.Add("ro,,x-foo")
	f.Fuzz(func(t *testing.T, s string) {
		_, data, err := parseMountOptions(s)
		if err == nil && strings.ContainsAny(data, " \x00") {
			t.Fatalf("data %q carries blanks", data)
		}
	})
}

func FuzzStalePid(f *testing.F) {
	f.Add([]byte("1\n/var/lib/postgresql\n"), "/var/lib/postgresql")
	f.Add([]byte("-99999999999999999999\n"), "/")
	f.Fuzz(func(t *testing.T, lock []byte, dir string) {
		stalePid("/proc", lock, dir)
	})
}

// Params are decoded from whatever the YAML loader produced.
func FuzzParams(f *testing.F) {
	f.Add("start", "true", int64(3), "5s")
	f.Fuzz(func(t *testing.T, k, v string, n int64, d string) {
		for _, typ := range Types() {
			if typ == "ocf" || typ == "postgresql" {
				continue // they look at the machine (agents, binaries)
			}
			p := map[string]any{k: v, "port": n, "kill_grace": d, "announce_count": float64(n),
				"env": []any{v}, "start": []any{v, n}, "address": v, "interface": v, "unit": v}
			New("resources[0]", typ, "r", p, Env{})
		}
		p := newParams("r", map[string]any{"d": d, "n": n})
		p.duration("d", time.Second, 0, time.Hour)
		p.integer("n", 0, -5, 5)
		p.done()
	})
}
