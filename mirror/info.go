package mirror

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// LegInfo is one leg's metadata as `mirrorctl examine` shows it. The JSON
// form is a user-facing contract (`mirrorctl examine --json`).
type LegInfo struct {
	Leg               string           `json:"leg"`
	Magic             string           `json:"magic"`
	Version           int              `json:"version"`
	VolumeUUID        string           `json:"volume_uuid"`
	LegUUID           string           `json:"leg_uuid"`
	Slot              int              `json:"slot"`
	LegSizeBytes      int64            `json:"leg_size_bytes"`
	DataSizeBytes     int64            `json:"data_size_bytes"`
	ChunkBytes        int64            `json:"chunk_bytes"`
	Chunks            int64            `json:"chunks"`
	Events            uint64           `json:"events"`
	Created           time.Time        `json:"created"`
	Updated           time.Time        `json:"updated"`
	LegStates         [2]string        `json:"leg_states"`
	LegUUIDs          [2]string        `json:"leg_uuids"`
	LastWriter        string           `json:"last_writer"`
	Generations       []GenerationInfo `json:"generations"` // oldest first
	BitmapGeneration  string           `json:"bitmap_generation"`
	Clean             bool             `json:"clean"`
	BitmapDirtyChunks int64            `json:"bitmap_dirty_chunks"`
	BitmapBadBlocks   int              `json:"bitmap_bad_blocks"`
	ResyncCheckpoint  int64            `json:"resync_checkpoint"` // next chunk a resync copies
	SuperblockOffsets [2]int64         `json:"superblock_offsets"`
	BitmapOffset      int64            `json:"bitmap_offset"`
	BitmapBytes       int64            `json:"bitmap_bytes"`
	HeartbeatOffset   int64            `json:"heartbeat_offset"`
	HeartbeatSlotSize int64            `json:"heartbeat_slot_bytes"`
	HeartbeatSlots    int              `json:"heartbeat_slots"`
	// MMP is the multi-mount protection block's owner ("" : none written).
	MMP *MMPInfo `json:"mmp,omitempty"`
}

// MMPInfo is a leg's multi-mount protection block as examine shows it.
type MMPInfo struct {
	State    string    `json:"state"` // "active", "released", or "unreadable: why"
	Node     string    `json:"node,omitempty"`
	PID      int       `json:"pid,omitempty"`
	Updated  time.Time `json:"updated,omitzero"`
	Sequence uint64    `json:"sequence,omitempty"`
	Interval string    `json:"interval,omitempty"`
}

// GenerationInfo is one entry of the data-generation history.
type GenerationInfo struct {
	ID     string `json:"id"`
	Events uint64 `json:"events"`
}

func uuidString(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

func genString(id uint64) string { return fmt.Sprintf("%016x", id) }

func newUUID() [16]byte {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never happens on Linux
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

func newGenID() uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic("crypto/rand failed: " + err.Error())
		}
		if id := binary.LittleEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

func newLegInfo(name string, sb *superblock, dirty int64, bad int) *LegInfo {
	l := sb.layout()
	i := &LegInfo{
		Leg: name, Magic: sbMagic, Version: formatVersion,
		VolumeUUID: uuidString(sb.VolumeUUID), LegUUID: uuidString(sb.LegUUID), Slot: sb.Slot,
		LegSizeBytes: sb.LegSize, DataSizeBytes: sb.DataSize, ChunkBytes: sb.ChunkSize, Chunks: sb.chunks(),
		Events: sb.Events, Created: time.Unix(0, sb.Created).UTC(), Updated: time.Unix(0, sb.Updated).UTC(),
		LegStates:  [2]string{sb.LegStates[0].String(), sb.LegStates[1].String()},
		LegUUIDs:   [2]string{uuidString(sb.LegUUIDs[0]), uuidString(sb.LegUUIDs[1])},
		LastWriter: sb.LastWriter, BitmapGeneration: genString(sb.BitmapGen), Clean: sb.Clean,
		BitmapDirtyChunks: dirty, BitmapBadBlocks: bad, ResyncCheckpoint: sb.Checkpoint,
		SuperblockOffsets: l.SBOff, BitmapOffset: sb.BitmapOff, BitmapBytes: sb.BitmapLen,
		HeartbeatOffset: sb.HBOff, HeartbeatSlotSize: sb.HBSlotSize, HeartbeatSlots: sb.HBCount,
	}
	for _, g := range sb.Gens {
		i.Generations = append(i.Generations, GenerationInfo{ID: genString(g.ID), Events: g.Events})
	}
	return i
}

func humanBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	f := float64(n)
	u := 0
	for f >= 1024 && u < len(units)-1 {
		f /= 1024
		u++
	}
	if u == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.2f %s", f, units[u])
}

// String renders the info like `mdadm --examine`.
func (i *LegInfo) String() string {
	var b strings.Builder
	row := func(k, format string, a ...any) {
		fmt.Fprintf(&b, "%19s : %s\n", k, fmt.Sprintf(format, a...))
	}
	fmt.Fprintf(&b, "%s:\n", i.Leg)
	row("Magic", "%s", i.Magic)
	row("Version", "%d", i.Version)
	row("Volume UUID", "%s", i.VolumeUUID)
	row("Leg UUID", "%s", i.LegUUID)
	row("Slot", "%d", i.Slot)
	row("Leg Size", "%d (%s)", i.LegSizeBytes, humanBytes(i.LegSizeBytes))
	row("Data Size", "%d (%s)", i.DataSizeBytes, humanBytes(i.DataSizeBytes))
	row("Chunk Size", "%s (%d chunks)", humanBytes(i.ChunkBytes), i.Chunks)
	row("Creation Time", "%s", i.Created.Format(time.RFC3339))
	row("Update Time", "%s", i.Updated.Format(time.RFC3339))
	state := "active (in use or not shut down cleanly)"
	if i.Clean {
		state = "clean"
	}
	row("State", "%s", state)
	row("Events", "%d", i.Events)
	row("Last Writer", "%s", i.LastWriter)
	row("Leg States", "slot 0 %s, slot 1 %s", i.LegStates[0], i.LegStates[1])
	row("Leg UUIDs", "slot 0 %s, slot 1 %s", i.LegUUIDs[0], i.LegUUIDs[1])
	gens := make([]string, 0, len(i.Generations))
	for k := len(i.Generations) - 1; k >= 0 && len(gens) < 4; k-- {
		gens = append(gens, fmt.Sprintf("%s@%d", i.Generations[k].ID, i.Generations[k].Events))
	}
	more := ""
	if len(i.Generations) > len(gens) {
		more = ", ..."
	}
	row("Generations", "%d, newest first: %s%s", len(i.Generations), strings.Join(gens, ", "), more)
	bad := ""
	if i.BitmapBadBlocks > 0 {
		bad = fmt.Sprintf(" (%d unreadable bitmap blocks counted as dirty)", i.BitmapBadBlocks)
	}
	row("Bitmap", "%d dirty chunks (%s)%s", i.BitmapDirtyChunks, humanBytes(i.BitmapDirtyChunks*i.ChunkBytes), bad)
	row("Bitmap Generation", "%s", i.BitmapGeneration)
	row("Resync Checkpoint", "chunk %d", i.ResyncCheckpoint)
	row("Superblocks", "at %d and %d", i.SuperblockOffsets[0], i.SuperblockOffsets[1])
	row("Bitmap Area", "%d bytes at %d", i.BitmapBytes, i.BitmapOffset)
	row("Heartbeat Area", "%d slots of %d bytes at %d (the last: multi-mount protection)", i.HeartbeatSlots, i.HeartbeatSlotSize, i.HeartbeatOffset)
	switch m := i.MMP; {
	case m == nil:
		row("Owner (MMP)", "none recorded")
	case m.Node != "" || m.PID != 0:
		row("Owner (MMP)", "%s: mirrord pid %d on node %q, updated %s (every %s, sequence %d)", m.State, m.PID, m.Node, m.Updated.Format(time.RFC3339Nano), m.Interval, m.Sequence)
	default:
		row("Owner (MMP)", "%s", m.State)
	}
	return b.String()
}
