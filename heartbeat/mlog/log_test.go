package mlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/channel"
)

// cluster is N nodes' logs over an in-memory channel network.
type cluster struct {
	t    *testing.T
	net  *channel.MemNetwork
	ids  []heartbeat.NodeID
	dirs map[heartbeat.NodeID]string
	logs map[heartbeat.NodeID]*Log
	stop map[heartbeat.NodeID]func()
	// drop, if set, loses the answers of chosen calls (a cut in the middle of an exchange).
	mu   sync.Mutex
	drop func(from, to heartbeat.NodeID, op string) bool
	// tune, if set, adjusts every node's Options before Open.
	tune func(*Options)
}

// faultNet wraps a channel so a test can fail chosen calls.
type faultNet struct {
	*channel.Channel
	c    *cluster
	self heartbeat.NodeID
}

func (f faultNet) Call(ctx context.Context, to heartbeat.NodeID, op string, body []byte) ([]byte, error) {
	f.c.mu.Lock()
	drop := f.c.drop
	f.c.mu.Unlock()
	out, err := f.Channel.Call(ctx, to, op, body)
	if drop != nil && drop(f.self, to, op) {
		// Carried out by the peer, but the answer is lost: the caller
		// cannot know (a cable cut, or the caller killed, at that moment).
		return nil, fmt.Errorf("test: answer to %s from %s lost", op, to)
	}
	return out, err
}

func newCluster(t *testing.T, n int, tune ...func(*Options)) *cluster {
	c := &cluster{t: t, net: channel.NewMemNetwork(), dirs: map[heartbeat.NodeID]string{},
		logs: map[heartbeat.NodeID]*Log{}, stop: map[heartbeat.NodeID]func(){}}
	if len(tune) > 0 {
		c.tune = tune[0]
	}
	for i := 1; i <= n; i++ {
		id := heartbeat.NodeID(fmt.Sprintf("n%d", i))
		c.ids = append(c.ids, id)
		c.dirs[id] = t.TempDir()
	}
	for _, id := range c.ids {
		c.start(id)
	}
	t.Cleanup(func() {
		for _, id := range c.ids {
			if s := c.stop[id]; s != nil {
				s()
			}
		}
	})
	return c
}

func (c *cluster) start(id heartbeat.NodeID) *Log {
	ch := channel.New(channel.Config{Cluster: "c", Self: id, Key: []byte("test key of sixteen+ bytes"), Nodes: c.ids,
		CallTimeout: time.Second}, c.net.Endpoint(id))
	var peers []heartbeat.NodeID
	for _, p := range c.ids {
		if p != id {
			peers = append(peers, p)
		}
	}
	opt := Options{Dir: c.dirs[id], Self: id, Peers: peers, Net: faultNet{ch, c, id},
		Timeout: time.Second, SyncInterval: time.Hour, MaxSize: 1 << 20, Logf: c.t.Logf}
	if c.tune != nil {
		c.tune(&opt)
	}
	l, err := Open(opt)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ch.Serve(ctx); close(done) }()
	c.logs[id] = l
	c.stop[id] = func() { cancel(); <-done; l.Close(); delete(c.stop, id) }
	return l
}

func (c *cluster) write(id heartbeat.NodeID, msg string) Entry {
	c.t.Helper()
	e, err := c.logs[id].Write(context.Background(), slog.LevelInfo, "test", msg)
	if err != nil {
		c.t.Fatalf("%s write %q: %v", id, msg, err)
	}
	return e
}

func keys(es []Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, fmt.Sprintf("%s/%d:%s", e.Node, e.Seq, e.Message))
	}
	return out
}

// logOf reads a node's log straight from its files, as after a crash.
func (c *cluster) logOf(id heartbeat.NodeID) []string {
	c.t.Helper()
	es, err := c.logs[id].Entries()
	if err != nil {
		c.t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range es {
		k := fmt.Sprintf("%s/%d", e.Node, e.Seq)
		if seen[k] {
			c.t.Fatalf("%s holds %s twice", id, k)
		}
		seen[k] = true
	}
	return keys(es)
}

func (c *cluster) expectEqual(want int) {
	c.t.Helper()
	ref := c.logOf(c.ids[0])
	if len(ref) != want {
		c.t.Fatalf("%s holds %d entries, want %d: %v", c.ids[0], len(ref), want, ref)
	}
	for _, id := range c.ids[1:] {
		got := c.logOf(id)
		if strings.Join(got, "\n") != strings.Join(ref, "\n") {
			c.t.Fatalf("logs differ:\n%s: %v\n%s: %v", c.ids[0], ref, id, got)
		}
	}
}

func (c *cluster) spools(id heartbeat.NodeID) []string {
	m, _ := filepath.Glob(filepath.Join(c.dirs[id], "spool-*"))
	return m
}

func TestWriteIsInEveryLogWhenItReturns(t *testing.T) {
	c := newCluster(t, 3)
	c.write("n1", "a")
	c.write("n2", "b")
	c.write("n3", "c")
	c.expectEqual(3)
	for _, id := range c.ids {
		if s := c.spools(id); len(s) != 0 {
			t.Errorf("%s has spools %v with every peer up", id, s)
		}
	}
}

func TestCutSpoolsAndHealExchangesBeforeTheNextEntry(t *testing.T) {
	c := newCluster(t, 2)
	c.write("n1", "before")
	c.net.Cut("n1", "n2", true)
	c.write("n1", "n1 alone 1")
	c.write("n1", "n1 alone 2")
	c.write("n2", "n2 alone")
	if len(c.spools("n1")) != 1 || len(c.spools("n2")) != 1 {
		t.Fatalf("spools while cut: n1 %v n2 %v", c.spools("n1"), c.spools("n2"))
	}
	if got := len(c.logOf("n2")); got != 2 {
		t.Fatalf("n2 holds %d entries while cut, want 2", got)
	}
	c.net.Cut("n1", "n2", false)
	c.logs["n1"].peers["n2"].retry.Store(0) // as after SyncInterval
	c.write("n1", "after")
	c.expectEqual(5)
	if len(c.spools("n1")) != 0 || len(c.spools("n2")) != 0 {
		t.Fatalf("spools left after the exchange: %v %v", c.spools("n1"), c.spools("n2"))
	}
	// The exchange came before the new entry on both sides.
	es, _, _ := c.logs["n2"].store.scan(Cursor{})
	if last := es[len(es)-1]; last.Message != "after" {
		t.Errorf("n2's last appended entry is %q, want the new one after the exchanged ones", last.Message)
	}
}

// TestExchangeCutAtEveryStep cuts the exchange after each of its calls
// and checks that running it again converges without duplicates.
func TestExchangeCutAtEveryStep(t *testing.T) {
	for _, step := range []string{opExchange, opDone} {
		t.Run(step, func(t *testing.T) {
			c := newCluster(t, 2)
			c.net.Cut("n1", "n2", true)
			c.write("n1", "x1")
			c.write("n2", "y1")
			c.net.Cut("n1", "n2", false)
			// The step's request reaches n2 and is carried out, but the
			// answer is lost: drop after delivery by failing the next call.
			var once sync.Once
			c.mu.Lock()
			c.drop = func(from, to heartbeat.NodeID, op string) bool {
				hit := false
				if op == step {
					once.Do(func() { hit = true })
				}
				return hit
			}
			c.mu.Unlock()
			if failed := c.logs["n1"].Sync(context.Background()); len(failed) != 1 {
				t.Fatalf("the cut exchange reported success")
			}
			c.mu.Lock()
			c.drop = nil
			c.mu.Unlock()
			c.logs["n1"].Sync(context.Background())
			c.expectEqual(2)
			c.logs["n2"].Sync(context.Background())
			c.expectEqual(2)
			if len(c.spools("n1"))+len(c.spools("n2")) != 0 {
				t.Fatalf("spools left: %v %v", c.spools("n1"), c.spools("n2"))
			}
		})
	}
}

func TestRelayFromThirdNode(t *testing.T) {
	c := newCluster(t, 3)
	c.net.Cut("n1", "n3", true)
	c.write("n1", "while n3 was away")
	c.stop["n1"]() // n1 dies for good before n3 comes back
	c.net.Cut("n1", "n3", false)
	c.logs["n3"].Sync(context.Background())
	got := c.logOf("n3")
	if len(got) != 1 || got[0] != "n1/1:while n3 was away" {
		t.Fatalf("n3 did not get n1's entry from n2: %v", got)
	}
}

func TestTornTailCutAtOpenAndSequenceGoesOn(t *testing.T) {
	c := newCluster(t, 2)
	c.write("n1", "one")
	c.write("n1", "two")
	c.stop["n1"]()
	seg := filepath.Join(c.dirs["n1"], segName(1))
	b, _ := os.ReadFile(seg)
	rec, _ := AppendRecord(nil, Entry{Node: "n1", Seq: 3, Message: "torn", Time: time.Now()})
	os.WriteFile(seg, append(b, rec[:len(rec)-5]...), 0o640) // a write cut by power loss
	l := c.start("n1")
	if got := c.logOf("n1"); len(got) != 2 {
		t.Fatalf("after the torn record: %v", got)
	}
	if fi, _ := os.Stat(seg); fi.Size() != int64(len(b)) {
		t.Errorf("torn tail not cut: %d bytes, want %d", fi.Size(), len(b))
	}
	if e := c.write("n1", "three"); e.Seq != 3 {
		t.Errorf("next sequence %d, want 3", e.Seq)
	}
	_ = l
	c.expectEqual(3)
}

func TestLiveAppendRefusesAHole(t *testing.T) {
	c := newCluster(t, 2)
	rs, _ := records([]Entry{{Node: "n1", Seq: 5, Time: time.Now(), Message: "from the future"}})
	body := fmt.Appendf(nil, `{"records":["%s"]}`, b64(rs[0]))
	if _, err := c.logs["n2"].handleAppend("n1", body); !errors.Is(err, errGap) {
		t.Fatalf("a live entry past a hole: %v", err)
	}
	if _, err := c.logs["n2"].handleAppend("n3", body); err == nil {
		t.Fatal("n3 wrote an entry as n1")
	}
}

func TestRotationKeepsNewestSegments(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(Options{Dir: dir, Self: "n1", MaxSize: 300, Keep: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		if _, err := l.Write(context.Background(), slog.LevelInfo, "t", fmt.Sprintf("entry %02d with some text", i)); err != nil {
			t.Fatal(err)
		}
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "mlog-*"))
	if len(segs) != 3 {
		t.Errorf("%d segments, want 3", len(segs))
	}
	es, _ := l.Entries()
	if len(es) == 0 || es[len(es)-1].Seq != 40 {
		t.Fatalf("newest entry lost: %v", keys(es))
	}
	l.Close()
	l2, err := Open(Options{Dir: dir, Self: "n1", MaxSize: 300, Keep: 3})
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := l2.Write(context.Background(), slog.LevelInfo, "t", "after reopen"); e.Seq != 41 {
		t.Errorf("sequence after reopen %d, want 41", e.Seq)
	}
}

func TestSlogHandlerWritesBoth(t *testing.T) {
	l, err := Open(Options{Dir: t.TempDir(), Self: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	var buf strings.Builder
	logger := slog.New(l.Handler(slog.NewTextHandler(&buf, nil), slog.LevelInfo)).With("component", "iscsi")
	logger.Debug("not for the management log")
	logger.WithGroup("leg").Warn("session lost", "target", "iqn.x", "lun", 1)
	es, _ := l.Entries()
	if len(es) != 1 || es[0].Component != "iscsi" || es[0].Level != slog.LevelWarn ||
		len(es[0].Fields) != 2 || es[0].Fields[0] != (Field{"leg.target", "iqn.x"}) {
		t.Fatalf("entries %+v", es)
	}
	if !strings.Contains(buf.String(), "session lost") {
		t.Errorf("slog did not get the record: %q", buf.String())
	}
}

func b64(b []byte) string {
	s, _ := jsonString(b)
	return s
}
