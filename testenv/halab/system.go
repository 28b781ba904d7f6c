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

// The faults of issue 13's figures (one array killed is hamirror's own).
const (
	FaultKill       Fault = "kill"
	FaultFreeze     Fault = "freeze"
	FaultPublicDown Fault = "public-down"
)

// Inject applies fault f to node through s.
func Inject(ctx context.Context, s System, f Fault, node string) error {
	switch f {
	case FaultKill:
		return s.Kill(ctx, node)
	case FaultFreeze:
		return s.Freeze(ctx, node)
	case FaultPublicDown:
		return s.PublicDown(ctx, node)
	}
	return fmt.Errorf("halab: unknown fault %q (kill, freeze, public-down)", f)
}
