package registry

import (
	"context"
	"testing"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/channel"
)

type nopNet struct{}

func (nopNet) Call(context.Context, heartbeat.NodeID, string, []byte) ([]byte, error) {
	return nil, channel.ErrUnreachable
}
func (nopNet) Handle(string, channel.Handler) {}

// FuzzHandlers: hostile requests from an authenticated peer give an
// error or a sound table, never a panic.
func FuzzHandlers(f *testing.F) {
	f.Add([]byte(`{"term":9,"version":1,"coordinator":"n2","nodes":[{"id":"n2","addresses":[],"backup_target":"zz","backup_target_ip":"","state":"Failed"}]}`))
	f.Add([]byte(`{"id":"n2","addresses":["x"],"storage":{"location":"/","total_bytes":1,"free_bytes":2}}`))
	f.Add([]byte(`{"node":"n2","target":"n1"}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := New(Options{Config: Config{Self: "n1", Nodes: three, Addresses: addrs}, Dir: t.TempDir(), Net: nopNet{},
			View: func() map[heartbeat.NodeID]heartbeat.NodeState { return nil }})
		if err != nil {
			t.Fatal(err)
		}
		r.SetCaughtUp()
		r.step(context.Background())
		r.handleTable("n2", p)
		r.handleRegister("n2", p)
		r.handleFailed("n2", p)
		r.handleRemove("n2", p)
		r.Table().Row("n2")
	})
}
