package heartbeat

import "errors"

// Link is one medium as the runner sees it: best-effort frames out,
// frames in. UDP per private NIC (udp.go), the serial line (serial.go)
// and a disk slot area (disk.go) implement it; tests add in-memory links.
type Link interface {
	// Medium is the medium's name, the same on every node ("nic1").
	Medium() string
	// Send transmits one signed frame to every peer on this medium. It may
	// block briefly; it never retries.
	Send(frame []byte) error
	// Receive blocks for the next frame and returns ErrClosed after Close.
	Receive() ([]byte, error)
	Close() error
}

// ErrClosed is returned by Receive after Close.
var ErrClosed = errors.New("heartbeat link closed")

// garbageCounter is implemented by links that drop undecodable bytes
// before they reach the codec (the serial line's resync).
type garbageCounter interface{ Garbage() uint64 }
