package hblab

import (
	"fmt"
	"os"

	"github.com/creack/pty"
)

// SerialLine is a serial cable between two parties on their own: two pty
// pairs whose masters a relay joins. Each end's device (a pty slave, such as
// /dev/pts/7) is opened like a tty by the program at that end. Other labs
// (testenv/halab) use it; a Lab builds its own line the same way.
type SerialLine struct {
	relay relay
	files []*os.File // master, slave, master, slave
}

// NewSerialLine opens the two pty pairs and starts the relay.
func NewSerialLine() (*SerialLine, error) {
	s := &SerialLine{}
	for range 2 {
		m, sl, err := pty.Open()
		if err != nil {
			s.closeFiles()
			return nil, fmt.Errorf("pty: %w", err)
		}
		s.files = append(s.files, m, sl)
	}
	s.relay.running[0].Store(true)
	s.relay.running[1].Store(true)
	s.relay.start(s.files[0], s.files[2])
	return s, nil
}

// Ends returns the device paths of the two ends.
func (s *SerialLine) Ends() [2]string { return [2]string{s.files[1].Name(), s.files[3].Name()} }

// Cut cuts (true) or mends (false) the cable: bytes sent while cut are lost.
func (s *SerialLine) Cut(cut bool) { s.relay.cut.Store(cut) }

// Powered says whether end i (0 or 1) receives: bytes sent to an end that
// is off are dropped, as a real UART flushes them when it is opened again.
func (s *SerialLine) Powered(i int, on bool) { s.relay.setRunning(i == 0, on) }

// Close stops the relay and closes every pty.
func (s *SerialLine) Close() {
	// Closing the slaves makes the relay's blocking master reads fail.
	s.files[1].Close()
	s.files[3].Close()
	s.relay.stop()
}

func (s *SerialLine) closeFiles() {
	for _, f := range s.files {
		f.Close()
	}
}
