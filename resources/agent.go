package resources

import (
	"context"
	"errors"
)

// Agent does one resource's I/O. Every method is idempotent (Start on a
// running resource and Stop on a stopped one succeed at once) and returns
// by ctx's deadline, which carries the resource's configured timeout.
type Agent interface {
	// Start brings the resource up; it returns nil only once it runs.
	Start(ctx context.Context) error
	// Stop takes the resource down; it returns nil only once nothing of
	// it is left (processes gone, address removed, file system unmounted).
	Stop(ctx context.Context) error
	// Monitor checks the resource: nil when it runs and is healthy,
	// ErrNotRunning (wrapped) when it is cleanly stopped, any other error
	// when it has failed.
	Monitor(ctx context.Context) error
}

// ErrNotRunning is Monitor's answer for a cleanly stopped resource.
var ErrNotRunning = errors.New("resource is not running")
