package mirror

import (
	"context"
	"fmt"
	"time"

	"github.com/hamirror/hamirror/iscsi"
)

// openISCSILeg logs in to an iSCSI LUN and returns it as a leg. The login
// itself is bounded so that a dead array fails the open in seconds.
//
// A read-only open of a volume session logs in for iscsi.PurposeReadOnly
// (its own ISID): a second session with the daemon's ISID would make the
// target reinstate the I_T nexus and drop the running mirrord's session.
func openISCSILeg(spec string, opts LegOptions) (Leg, error) {
	cfg := opts.ISCSI
	cfg.ReadOnly = cfg.ReadOnly || opts.ReadOnly
	if opts.ReadOnly && cfg.Purpose == iscsi.PurposeVolume {
		cfg.Purpose = iscsi.PurposeReadOnly
	}
	cfg.EnsureDefaults()
	ctx, cancel := context.WithTimeout(context.Background(), 3*cfg.Timeout+5*time.Second)
	defer cancel()
	d, err := iscsi.OpenLeg(ctx, spec, cfg)
	if err != nil {
		return nil, fmt.Errorf("open leg: %w", err)
	}
	return d, nil
}

// IsNetworkLeg reports whether spec names a leg reached over the network,
// which the daemon re-adds automatically when it answers again.
func IsNetworkLeg(spec string) bool { return iscsi.IsLegSpec(spec) }

// An iSCSI LUN is started through its own completion API, without a
// goroutine per I/O.
var _ AsyncLeg = (*iscsi.Disk)(nil)
