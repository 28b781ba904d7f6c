package channel

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// Net is the part of a Channel the services use; tests wrap it to lose
// chosen answers.
type Net interface {
	Call(ctx context.Context, to heartbeat.NodeID, op string, body []byte) ([]byte, error)
	Handle(op string, fn Handler)
}

// DecodeJSON decodes one JSON message strictly: unknown fields and
// trailing data are errors.
func DecodeJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: data after the JSON message", ErrMalformed)
	}
	return nil
}

// CallJSON sends req as JSON to node to within timeout and decodes the
// reply into reply (nil: the reply is ignored).
func CallJSON(ctx context.Context, n Net, timeout time.Duration, to heartbeat.NodeID, op string, req, reply any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := n.Call(ctx, to, op, body)
	if err != nil || reply == nil {
		return err
	}
	return DecodeJSON(out, reply)
}
