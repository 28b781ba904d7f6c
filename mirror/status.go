package mirror

// Status is a snapshot of the volume. Its JSON form is a user-facing
// contract (`mirrorctl status --json`).
type Status struct {
	State      string       `json:"state"` // "clean", "degraded", "resyncing", "failed", "fenced"
	SizeBytes  int64        `json:"size_bytes"`
	ChunkBytes int64        `json:"chunk_bytes"`
	VolumeUUID string       `json:"volume_uuid"`
	Legs       [2]LegStatus `json:"legs"`
	Resync     ResyncStatus `json:"resync"`
	Verify     VerifyStatus `json:"verify"`
	Error      string       `json:"error,omitempty"` // why the volume stopped (state "failed" or "fenced")
}

// LegStatus is one leg's part of Status.
type LegStatus struct {
	Slot  int    `json:"slot"`
	Path  string `json:"path"`
	State string `json:"state"` // "in_sync", "failed", "out_of_sync", "rebuilding"
	// OutOfSyncBytes is what the leg lacks: what the running resync still
	// copies to it, or, while it is failed, what a re-add would copy (the
	// chunks written since it left, or its whole size when a full copy
	// would be needed).
	OutOfSyncBytes int64  `json:"out_of_sync_bytes"`
	Error          string `json:"error,omitempty"` // why it failed
}

// ResyncStatus is the progress of a resync.
type ResyncStatus struct {
	Running        bool    `json:"running"`
	DoneBytes      int64   `json:"done_bytes"`
	TotalBytes     int64   `json:"total_bytes"`
	BytesPerSecond float64 `json:"bytes_per_second"`
	ETASeconds     float64 `json:"eta_seconds"`
}

// VerifyStatus is the progress of a verify.
type VerifyStatus struct {
	Running         bool    `json:"running"`
	DoneBytes       int64   `json:"done_bytes"`
	TotalBytes      int64   `json:"total_bytes"`
	Mismatches      int64   `json:"mismatches"`
	Repaired        int64   `json:"repaired"`
	MismatchOffsets []int64 `json:"mismatch_offsets,omitempty"` // first few
	Error           string  `json:"error,omitempty"`
}

// Status returns the volume's current state.
func (v *Volume) Status() Status {
	v.mu.Lock()
	defer v.mu.Unlock()
	m := v.m
	s := Status{SizeBytes: v.size, ChunkBytes: v.chunk, VolumeUUID: uuidString(v.volUUID)}
	for i := range 2 {
		ls := LegStatus{Slot: i, State: m.slots[i].state.String(), Error: m.slots[i].err,
			OutOfSyncBytes: m.outOfSyncBytes(i, v.size)}
		if v.legs[i] != nil {
			ls.Path = v.legs[i].Name()
		} else {
			ls.Path = v.specs[i]
		}
		s.Legs[i] = ls
	}
	switch {
	case m.fenced != nil:
		s.State, s.Error = "fenced", m.dead.Error()
	case m.dead != nil:
		s.State, s.Error = "failed", m.dead.Error()
	case !m.active(0) || !m.active(1):
		s.State = "degraded"
	case m.target() >= 0 || v.resync.running:
		s.State = "resyncing"
	default:
		s.State = "clean"
	}
	r := v.resync
	s.Resync = ResyncStatus{Running: r.running, DoneBytes: r.done, TotalBytes: r.total, BytesPerSecond: r.rate}
	if r.running && r.rate > 0 {
		s.Resync.ETASeconds = float64(max(r.total-r.done, 0)) / r.rate
	}
	vs := v.verify
	s.Verify = VerifyStatus{Running: vs.running, DoneBytes: vs.done, TotalBytes: vs.total,
		Mismatches: vs.mismatches, Repaired: vs.repaired, MismatchOffsets: append([]int64(nil), vs.offsets...)}
	if vs.err != nil {
		s.Verify.Error = vs.err.Error()
	}
	return s
}
