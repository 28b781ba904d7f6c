package halab

import (
	"context"
	"fmt"
	"time"
)

// System is an HA stack driven on a lab: keepalived, Pacemaker+Corosync,
// and hamirror's own node once it exists. A campaign calls Setup once, Start
// once, then per run Active, a fault, Breakdown and Recover, and Stop.
// Embed Faults for the usual ways to break a node.
type System interface {
	// Name says what runs and with which setting ("keepalived, advert_int 0.01").
	Name() string
	// Setup writes configuration and data for lab l (both nodes up, no
	// daemon running). Called once.
	Setup(ctx context.Context, l *Lab) error
	// Start runs the stack on both nodes and returns once the service
	// answers through the VIP.
	Start(ctx context.Context) error
	// Active names the node serving now.
	Active(ctx context.Context) (string, error)
	// Kill is a power cut of node; Freeze hangs it (SIGSTOP; the system
	// chooses which processes: all of the node's, or its daemon);
	// PublicDown pulls its public cable.
	Kill(ctx context.Context, node string) error
	Freeze(ctx context.Context, node string) error
	PublicDown(ctx context.Context, node string) error
	// Recover brings node back after a fault as a healthy standby, the
	// service staying where it is.
	Recover(ctx context.Context, node string) error
	// Breakdown returns the phases of the takeover after the fault at
	// fault to survivor, where the system exposes them (nil if not).
	Breakdown(ctx context.Context, fault time.Time, survivor string) ([]Phase, error)
	// Stop stops the stack on both nodes.
	Stop(ctx context.Context) error
}

// Phase is one step of a takeover: when it ended, counted from the fault.
type Phase struct {
	Name string
	At   time.Duration
}

// Faults gives a System the lab's generic faults: Kill crashes the node
// (cables pulled, every process SIGKILLed), Freeze stops every process of
// the node, PublicDown pulls the public cable.
type Faults struct{ Lab *Lab }

// Kill crashes node.
func (f Faults) Kill(_ context.Context, node string) error { return f.Lab.Node(node).Crash() }

// Freeze stops every process of node.
func (f Faults) Freeze(_ context.Context, node string) error { return f.Lab.Node(node).Freeze() }

// PublicDown pulls node's public cable.
func (f Faults) PublicDown(_ context.Context, node string) error {
	return f.Lab.CutLink(node, LinkPublic, true)
}

// Fault names a fault a campaign injects into the active node.
type Fault string

// The faults of issue 13's figures. FaultArrayKill (one array killed
// under the active node) is for systems that use the lab's arrays
// (ArrayFaults): the service stays where it is, and the outage is the
// stall until the volume runs on without that array.
const (
	FaultKill       Fault = "kill"
	FaultFreeze     Fault = "freeze"
	FaultPublicDown Fault = "public-down"
	FaultArrayKill  Fault = "array-kill"
)

// Moves reports whether fault f moves the service to the other node.
func (f Fault) Moves() bool { return f != FaultArrayKill }

// ArrayFaults is a System whose service lives on the lab's arrays: its
// KillArray kills one array under the active node, and its Recover
// restarts it and waits until the service uses it again.
type ArrayFaults interface {
	KillArray(ctx context.Context, node string) error
}

// Supports reports whether s can take fault f.
func Supports(s System, f Fault) bool {
	if f == FaultArrayKill {
		_, ok := s.(ArrayFaults)
		return ok
	}
	return true
}

// Inject applies fault f to node through s.
func Inject(ctx context.Context, s System, f Fault, node string) error {
	switch f {
	case FaultKill:
		return s.Kill(ctx, node)
	case FaultFreeze:
		return s.Freeze(ctx, node)
	case FaultPublicDown:
		return s.PublicDown(ctx, node)
	case FaultArrayKill:
		if a, ok := s.(ArrayFaults); ok {
			return a.KillArray(ctx, node)
		}
		return fmt.Errorf("halab: %s does not use the lab's arrays (no %s)", s.Name(), f)
	}
	return fmt.Errorf("halab: unknown fault %q (kill, freeze, public-down, array-kill)", f)
}
