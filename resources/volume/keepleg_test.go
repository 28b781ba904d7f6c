package volume

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hamirror/hamirror/mirror"
	"github.com/hamirror/hamirror/mirror/legtest"
)

// The operator's forcing choice in a cluster: a start that finds leg 0
// alone and not provably the newest is refused, naming the cluster's way
// to force (Options.ForceHint); KeepLeg(0) makes the next start keep leg
// 0's data, that one start only.
func TestKeepLegForcesOneStart(t *testing.T) {
	v, legs := memVolume(t)
	reopen := func() { // a stop closes the legs
		for _, l := range legs {
			l.Inner().(*legtest.MemLeg).Reopen()
		}
	}
	ctx := context.Background()
	if err := v.Start(ctx); err != nil { // writes leg states: both in sync
		t.Fatal(err)
	}
	if err := v.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	reopen()
	open := v.opts.OpenLeg
	v.opts.OpenLeg = func(spec string) (mirror.Leg, error) {
		if spec == "mem1" {
			return nil, fmt.Errorf("array of %s down", spec)
		}
		return open(spec)
	}
	v.opts.ForceHint = "in this cluster: mirrorctl volume keep-leg N"
	err := v.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "not provably the newest") || !strings.Contains(err.Error(), v.opts.ForceHint) {
		t.Fatalf("start with leg 0 alone: %v, want a refusal naming %q", err, v.opts.ForceHint)
	}
	reopen() // a failed start closes them too
	v.KeepLeg(0)
	if err := v.Start(ctx); err != nil {
		t.Fatalf("start with leg 0 kept: %v", err)
	}
	if st, _ := v.Status(); st.State != "degraded" {
		t.Fatalf("volume after the forced start: %s, want degraded", st.State)
	}
	if err := v.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	reopen()
	if v.keep != 0 {
		t.Fatal("the forcing choice outlived the start it was for")
	}
	// The forced start recorded leg 1 failed, so leg 0 alone is now
	// provably the newest.
	if err := v.Start(ctx); err != nil {
		t.Fatalf("start after the forced one: %v", err)
	}
	v.Stop(ctx)
}
