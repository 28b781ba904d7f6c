package mirror

import (
	"context"
	"fmt"
	"time"

	"github.com/hamirror/hamirror/iscsi"
)

// openISCSILeg logs in to an iSCSI LUN and returns it as a leg. The login
// itself is bounded so that a dead array fails the open in seconds.
func openISCSILeg(spec string, opts LegOptions) (Leg, error) {
	cfg := opts.ISCSI
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
func IsNetworkLeg(spec string) bool { return len(spec) > 8 && spec[:8] == "iscsi://" }
