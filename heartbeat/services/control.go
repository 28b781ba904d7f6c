package services

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/channel"
	"github.com/hamirror/hamirror/heartbeat/mlog"
	"github.com/hamirror/hamirror/heartbeat/registry"
)

// Control operations served on mirrord's control socket (Handlers):
//
//	log          args mlog.Query                       → mlog.Result
//	log-write    args NoteArgs (an operator's note)    → mlog.Entry
//	traffic      args TrafficArgs                      → traffic.Answer
//	node-remove  args RemoveArgs                       → registry.Table
//	services     no args                               → Status

// TrafficArgs are the arguments of the "traffic" op.
type TrafficArgs struct {
	Node  heartbeat.NodeID `json:"node"`
	Since time.Time        `json:"since,omitzero"`
	Limit int              `json:"limit,omitempty"`
}

// NoteArgs are the arguments of the "log-write" op: an operator's note in
// the management log (like logger(1) for the cluster).
type NoteArgs struct {
	Level   slog.Level `json:"level"`
	Message string     `json:"message"`
}

// RemoveArgs are the arguments of the "node-remove" op.
type RemoveArgs struct {
	ID heartbeat.NodeID `json:"id"`
}

// Status is the answer of the "services" op.
type Status struct {
	Self     heartbeat.NodeID            `json:"self"`
	CaughtUp bool                        `json:"caught_up"`
	Table    registry.Table              `json:"table"`
	Channel  channel.Counters            `json:"channel"`
	Log      mlog.Stats                  `json:"log"`
	Traffic  map[heartbeat.NodeID]uint64 `json:"traffic_held"` // highest sample held per node
}

// Status reports the services' state.
func (s *Services) Status() Status {
	return Status{Self: s.opt.Cluster.Self, CaughtUp: s.CaughtUp(), Table: s.reg.Table(), Channel: s.ch.Counters(),
		Log: s.log.Stats(), Traffic: s.tr.Held()}
}

func args(raw json.RawMessage, v any) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("malformed arguments: %w", err)
	}
	return nil
}

// Handlers are the control-socket operations; mirrord serves them
// (cmd/internal/control) next to its own.
func (s *Services) Handlers() map[string]func(json.RawMessage) (any, error) {
	return map[string]func(json.RawMessage) (any, error){
		"log": func(raw json.RawMessage) (any, error) {
			var q mlog.Query
			if err := args(raw, &q); err != nil {
				return nil, err
			}
			return s.log.Query(q)
		},
		"log-write": func(raw json.RawMessage) (any, error) {
			var a NoteArgs
			if err := args(raw, &a); err != nil {
				return nil, err
			}
			if a.Message == "" {
				return nil, fmt.Errorf("log write: the message is empty")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			return s.log.Write(ctx, a.Level, "operator", a.Message)
		},
		"traffic": func(raw json.RawMessage) (any, error) {
			var a TrafficArgs
			if err := args(raw, &a); err != nil {
				return nil, err
			}
			if a.Node == "" {
				return nil, fmt.Errorf("traffic: name the node (mirrorctl traffic NODE)")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			return s.tr.Query(ctx, a.Node, a.Since, a.Limit)
		},
		"node-remove": func(raw json.RawMessage) (any, error) {
			var a RemoveArgs
			if err := args(raw, &a); err != nil {
				return nil, err
			}
			if a.ID == "" {
				return nil, fmt.Errorf("node remove: name the node")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := s.reg.Remove(ctx, a.ID); err != nil {
				return nil, err
			}
			s.note(slog.LevelWarn, "operator", fmt.Sprintf("node %s removed for good by the operator on %s", a.ID, s.opt.Cluster.Self), "node", string(a.ID))
			return s.reg.Table(), nil
		},
		"services": func(json.RawMessage) (any, error) { return s.Status(), nil },
	}
}
