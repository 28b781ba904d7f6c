package services

import (
	"log/slog"
	"slices"
	"testing"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/mlog"
)

// The node's parts log with slog; through Handler what they log at info
// or above reaches the management log on every node, with its component
// and fields. The services' and membership's own records are skipped
// (they have their own entries).
func TestHandlerPutsTheNodesRecordsInTheLog(t *testing.T) {
	w := newWorld(t, false)
	log := slog.New(w.svc["n2"].Handler(slog.LevelInfo)).With("node", "n2")
	log.With("part", "fence").Warn("fencing", "victims", "n1")
	log.Info("starting", "resource", "volume")
	log.Debug("too fine for the management log")
	log.With("part", "services").Info("a services record")
	log.With("part", "heartbeat").Info("a membership record")
	want := func(es []mlog.Entry) bool {
		var got []string
		for _, e := range es {
			if e.Node != "n2" {
				continue
			}
			s := e.Component + ": " + e.Message
			for _, f := range e.Fields {
				s += " " + f.Key + "=" + f.Value
			}
			got = append(got, s)
		}
		return slices.Contains(got, "fence: fencing victims=n1") && slices.Contains(got, "node: starting resource=volume")
	}
	w.eventually("both records in n1's and n3's logs", func() bool {
		for _, id := range []heartbeat.NodeID{"n1", "n3"} {
			es, err := w.svc[id].Log().Entries()
			if err != nil || !want(es) {
				return false
			}
		}
		return true
	})
	es, _ := w.svc["n2"].Log().Entries()
	for _, e := range es {
		if e.Message == "too fine for the management log" || e.Message == "a services record" || e.Message == "a membership record" {
			t.Errorf("in the management log: %+v", e)
		}
		for _, f := range e.Fields {
			if f.Key == "node" {
				t.Errorf("the entry names its node; a node field repeats it: %+v", e)
			}
		}
	}
}
