package volume

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/mirror"
	"github.com/hamirror/hamirror/mirror/legtest"
	"github.com/hamirror/hamirror/resources"
)

// memVolume is a volume resource over two in-memory legs behind fault
// injectors, served on a unix socket only.
func memVolume(t *testing.T) (*Volume, [2]*legtest.FaultLeg) {
	t.Helper()
	var legs [2]*legtest.FaultLeg
	var ml [2]mirror.Leg
	for i := range legs {
		legs[i] = legtest.NewFaultLeg(legtest.NewMemLeg(fmt.Sprintf("mem%d", i), 8<<20))
		ml[i] = legs[i]
	}
	if _, err := mirror.Create(ml, mirror.CreateOptions{ChunkSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	open := func(spec string) (mirror.Leg, error) {
		for i, l := range legs {
			if spec == fmt.Sprintf("mem%d", i) {
				return l, nil
			}
		}
		return nil, fmt.Errorf("no leg %s", spec)
	}
	v := New(Options{Legs: [2]string{"mem0", "mem1"}, OpenLeg: open, Mirror: mirror.DefaultOptions(),
		Listen: []string{"unix:" + t.TempDir() + "/nbd.sock"}})
	return v, legs
}

// A volume whose node was fenced cannot write its clean superblocks: its
// stop must still succeed (nothing of it is left running), or the group
// blocks instead of standing aside after a fence.
func TestStopOfAFencedVolumeSucceeds(t *testing.T) {
	v, legs := memVolume(t)
	ctx := context.Background()
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, l := range legs {
		l.FailFrom(legtest.OpWrite, 0, iscsi.ErrReservationConflict)
	}
	vol := v.Mirror()
	if err := vol.WriteAt(make([]byte, 4096), 0, true); !errors.Is(err, mirror.ErrFenced) {
		t.Fatalf("write after the fence: %v, want ErrFenced", err)
	}
	if err := v.Monitor(ctx); err == nil {
		t.Fatal("monitor of a fenced volume reports it running")
	}
	if err := v.Stop(ctx); err != nil {
		t.Fatalf("stop of a fenced volume: %v", err)
	}
	if err := v.Monitor(ctx); !errors.Is(err, resources.ErrNotRunning) {
		t.Fatalf("monitor after the stop: %v, want ErrNotRunning", err)
	}
}

// A frozen old owner wakes after another node took the volume over: its
// multi-mount protection finds the block overwritten and the volume
// stops writing (ErrInUse). Its stop must then succeed, like a fenced
// volume's (nothing of it runs; it must not mark the volume clean), or
// the old owner's group blocks and waits for an operator instead of
// standing aside.
func TestStopAfterAnotherOwnerTookTheVolumeSucceeds(t *testing.T) {
	v, legs := memVolume(t)
	v.opts.Mirror.MMP.Interval = 100 * time.Millisecond
	v.opts.Mirror.NodeID = "n2"
	ctx := context.Background()
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// n1 fenced n2 and assembles the same legs.
	mo := mirror.DefaultOptions()
	mo.NodeID, mo.MMP = "n1", mirror.MMPOptions{Interval: 100 * time.Millisecond, Fenced: true, PID: 1}
	other, err := mirror.Assemble([2]mirror.Leg{legtest.NewFaultLeg(legs[0]), legtest.NewFaultLeg(legs[1])}, mo)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	deadline := time.Now().Add(5 * time.Second)
	for v.Monitor(ctx) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the old owner's volume did not notice the new owner")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := v.Stop(ctx); err != nil {
		t.Fatalf("stop of the volume another owner took: %v", err)
	}
}
