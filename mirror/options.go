package mirror

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"
)

// Options tune an assembled volume. Zero values take the documented defaults.
type Options struct {
	// IOTimeout bounds every leg I/O; a leg that exceeds it is failed and
	// the volume continues on the other. Default 5s: far below a default
	// kernel iSCSI setup's 120 s, above a busy array's worst latency.
	IOTimeout time.Duration
	// KeepLeg is -1 to decide the source from generations and events, or
	// the operator's explicit choice (0 or 1) after a split brain: the
	// other leg is overwritten by a full resync. It is consulted ONLY when
	// the automatic decision refuses (split brain, no leg recorded in
	// sync), so the zero value can never overwrite the newer leg; still,
	// set -1 (DefaultOptions does) unless an operator chose.
	KeepLeg int
	// NodeID is recorded as the last writer. Default: the hostname.
	NodeID string
	// AutoReAdd probes a failed leg every ReAddInterval; when it answers
	// again it is re-added and only the changed chunks are resynced.
	AutoReAdd bool
	// LegOptions are used when AddLeg reopens a leg by name (iSCSI
	// initiator settings and CHAP secrets for iscsi:// legs).
	LegOptions    LegOptions
	ReAddInterval time.Duration // default 2s
	// ResyncMinRate is the floor a resync keeps even under application
	// I/O; ResyncMaxRate the ceiling when idle (0: unlimited). Bytes/s.
	ResyncMinRate, ResyncMaxRate int64
	// BitClearDelay: a chunk's bit is cleared after this long without
	// writes (a flush of both legs first). Default 5s: long enough that
	// a hot chunk does not pay a metadata write per burst.
	BitClearDelay time.Duration
	// BlockSize is the smallest block size the volume exports (512 to
	// 4096, a power of two; 0: the legs' own). The volume exports the
	// largest of it and its legs' logical block sizes; set 4096 ahead of
	// replacing a 512-byte array by a 4096-byte one (blocksize.go).
	BlockSize int
	// MMP is multi-mount protection (mmp.go): off unless MMP.Interval is
	// set; daemons set it so two mirrords never write one volume.
	MMP MMPOptions
	// Specs are the OpenLeg specs the legs given to Assemble came from, in
	// the same order (optional). A leg passed as nil because it could not
	// be opened is then reopened from its spec by AutoReAdd and by
	// AddLeg(slot, nil), so an array that was down at start-up comes back
	// on its own.
	Specs  [2]string
	Logger *slog.Logger // nil: discard
	Clock  Clock        // nil: real time

	// Known is fresher knowledge of the volume than a lone leg may carry:
	// the peer's persisted copy of what the active node last published. A
	// lone leg (the other missing or unreadable) is assembled automatically
	// only when its own superblock records the other leg failed, or Known
	// names the leg's newest generation with the leg in sync; a leg that
	// lacks Known's generation is stale and refused. nil: no knowledge.
	Known *KnownState
	// Publish, when set, is called (without locks held) before every
	// metadata write that changes a leg state or starts a generation,
	// with the state that write puts on disk; that write counts as
	// durable, and the I/O waiting for it is acknowledged, only once
	// Publish returned and the write succeeded. Publishing first means
	// the peer knows every state that may land on a leg, even from a
	// write abandoned on a hung leg that lands after the volume stopped;
	// a state published but never written makes a lone leg refuse to
	// start (safe; --keep-leg forces it). It may block (the failover
	// node waits until the peer persisted it or is dead), which holds
	// back writes that missed a leg meanwhile. It is never called on the
	// data path otherwise.
	Publish func(KnownState)
	// OpenLeg (re)opens a leg by name wherever the engine does so
	// (AutoReAdd, AddLeg(slot, nil)). Default: mirror.OpenLeg with
	// LegOptions. The failover node hands over its own iSCSI sessions.
	OpenLeg func(spec string) (Leg, error)
	// BeforeReAdd, when set, is called before AutoReAdd or AddLeg adds a
	// leg (after its metadata was read, before anything is written to it);
	// an error refuses the add. The failover node fences the array here.
	BeforeReAdd func(slot int, leg Leg) error
	// OnFenced, when set, is called once (in its own goroutine) when a leg
	// reports a RESERVATION CONFLICT, or (MMPOptions.TakenIsFence) another
	// owner took the volume over: the volume stopped serving (ErrFenced).
	OnFenced func()
}

// DefaultOptions returns Options with every default filled in and KeepLeg -1.
func DefaultOptions() Options {
	o := Options{KeepLeg: -1}
	o.setDefaults()
	return o
}

func (o *Options) setDefaults() {
	if o.IOTimeout == 0 {
		o.IOTimeout = 5 * time.Second
	}
	if o.NodeID == "" {
		o.NodeID, _ = os.Hostname()
	}
	if o.ReAddInterval == 0 {
		o.ReAddInterval = 2 * time.Second
	}
	if o.ResyncMinRate == 0 {
		o.ResyncMinRate = 10 << 20
	}
	if o.BitClearDelay == 0 {
		o.BitClearDelay = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Clock == nil {
		o.Clock = RealClock{}
	}
}

// openLeg opens a leg by name: Options.OpenLeg, or OpenLeg with
// LegOptions.
func (o *Options) openLeg(spec string) (Leg, error) {
	if o.OpenLeg != nil {
		return o.OpenLeg(spec)
	}
	return OpenLeg(spec, o.LegOptions)
}

func (o *Options) validate() error {
	switch {
	case o.IOTimeout < 0:
		return fmt.Errorf("IOTimeout %v: must be positive", o.IOTimeout)
	case o.KeepLeg < -1 || o.KeepLeg > 1:
		return fmt.Errorf("KeepLeg %d: must be -1 (automatic), 0 or 1", o.KeepLeg)
	case o.ResyncMinRate < 0 || o.ResyncMaxRate < 0:
		return fmt.Errorf("resync rates must not be negative")
	case o.ResyncMaxRate > 0 && o.ResyncMaxRate < o.ResyncMinRate:
		return fmt.Errorf("ResyncMaxRate %d is below ResyncMinRate %d", o.ResyncMaxRate, o.ResyncMinRate)
	case o.MMP.Interval < 0 || o.MMP.Margin < 0:
		return fmt.Errorf("MMP.Interval and MMP.Margin must not be negative")
	case o.ReAddInterval < 0 || o.BitClearDelay < 0:
		return fmt.Errorf("ReAddInterval and BitClearDelay must not be negative")
	}
	if o.Known != nil {
		if err := o.Known.Validate(); err != nil {
			return fmt.Errorf("Known: %w", err)
		}
	}
	return nil
}
