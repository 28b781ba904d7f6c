package heartbeat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Serial envelope around one frame, so a byte stream with line noise can
// be cut back into frames:
//
//	0  2  sync 0x7E 0xA5
//	2  2  length N of the frame (big-endian, 1..MaxFrame)
//	4  N  frame
//	.. 4  CRC32 (IEEE) of length and frame
//
// The reader resynchronises on garbage: after a bad length or CRC it
// drops one byte and hunts for the next sync pattern, so a corrupted frame
// costs that frame only.
var serialSync = []byte{0x7E, 0xA5}

// serialOverhead is what the envelope adds to a frame.
const serialOverhead = 8

// EncodeSerial wraps a frame in the serial envelope.
func EncodeSerial(frame []byte) []byte {
	b := make([]byte, 0, len(frame)+serialOverhead)
	b = append(b, serialSync...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(frame)))
	b = append(b, frame...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b[2:]))
}

// SerialReader cuts a byte stream into frames.
type SerialReader struct {
	r       io.Reader
	buf     []byte
	garbage atomic.Uint64
}

// NewSerialReader reads enveloped frames from r.
func NewSerialReader(r io.Reader) *SerialReader { return &SerialReader{r: r} }

// Garbage counts bytes skipped while resynchronising.
func (s *SerialReader) Garbage() uint64 { return s.garbage.Load() }

func (s *SerialReader) fill() error {
	var tmp [512]byte
	n, err := s.r.Read(tmp[:])
	s.buf = append(s.buf, tmp[:n]...)
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// Next returns the next frame whose envelope is intact.
func (s *SerialReader) Next() ([]byte, error) {
	for {
		i := bytes.Index(s.buf, serialSync)
		if i < 0 {
			keep := 0
			if len(s.buf) > 0 && s.buf[len(s.buf)-1] == serialSync[0] {
				keep = 1
			}
			s.garbage.Add(uint64(len(s.buf) - keep))
			s.buf = append(s.buf[:0], s.buf[len(s.buf)-keep:]...)
			if err := s.fill(); err != nil {
				return nil, err
			}
			continue
		}
		if i > 0 {
			s.garbage.Add(uint64(i))
			s.buf = s.buf[i:]
		}
		if len(s.buf) < 4 {
			if err := s.fill(); err != nil {
				return nil, err
			}
			continue
		}
		n := int(binary.BigEndian.Uint16(s.buf[2:]))
		if n == 0 || n > MaxFrame {
			s.garbage.Add(1)
			s.buf = s.buf[1:]
			continue
		}
		if len(s.buf) < 4+n+4 {
			if err := s.fill(); err != nil {
				return nil, err
			}
			continue
		}
		if crc32.ChecksumIEEE(s.buf[2:4+n]) != binary.BigEndian.Uint32(s.buf[4+n:]) {
			s.garbage.Add(1)
			s.buf = s.buf[1:]
			continue
		}
		frame := append([]byte(nil), s.buf[4:4+n]...)
		s.buf = s.buf[4+n+4:]
		return frame, nil
	}
}

// SerialLink is the heartbeat over a point-to-point serial line.
type SerialLink struct {
	rw     io.ReadWriteCloser
	rd     *SerialReader
	wmu    sync.Mutex
	closed atomic.Bool
}

// NewSerialLink runs the serial medium over an already open line (a tty
// set up by OpenSerial, or a pipe in tests).
func NewSerialLink(rw io.ReadWriteCloser) *SerialLink {
	return &SerialLink{rw: rw, rd: NewSerialReader(rw)}
}

// OpenSerial opens device raw 8N1 at baud (termios; no flow control, no
// modem control lines, no echo) and returns the serial medium.
func OpenSerial(device string, baud int) (*SerialLink, error) {
	speed, ok := baudRates[baud]
	if !ok {
		return nil, fmt.Errorf("serial %s: unsupported baud rate %d (use one of 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)", device, baud)
	}
	f, err := os.OpenFile(device, os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("serial line: %w", err)
	}
	if err := setRaw(f, speed); err != nil {
		f.Close()
		return nil, fmt.Errorf("serial %s: %w", device, err)
	}
	return NewSerialLink(f), nil
}

var baudRates = map[int]uint32{
	9600: unix.B9600, 19200: unix.B19200, 38400: unix.B38400, 57600: unix.B57600,
	115200: unix.B115200, 230400: unix.B230400, 460800: unix.B460800, 921600: unix.B921600,
}

// setRaw puts the tty in raw 8N1 mode at speed.
func setRaw(f *os.File, speed uint32) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		t, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
		if err != nil {
			serr = fmt.Errorf("not a tty: %w", err)
			return
		}
		t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF | unix.IXANY
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CSTOPB | unix.CRTSCTS | unix.CBAUD
		t.Cflag |= unix.CS8 | unix.CREAD | unix.CLOCAL | speed
		t.Ispeed, t.Ospeed = speed, speed
		t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
		serr = unix.IoctlSetTermios(int(fd), unix.TCSETS, t)
	})
	return errors.Join(err, serr)
}

// Medium implements Link.
func (l *SerialLink) Medium() string { return SerialMedium }

// Send implements Link.
func (l *SerialLink) Send(frame []byte) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	_, err := l.rw.Write(EncodeSerial(frame))
	return err
}

// Receive implements Link.
func (l *SerialLink) Receive() ([]byte, error) {
	f, err := l.rd.Next()
	if err != nil && l.closed.Load() {
		return nil, ErrClosed
	}
	return f, err
}

// Garbage counts bytes dropped while resynchronising.
func (l *SerialLink) Garbage() uint64 { return l.rd.Garbage() }

// Close implements Link.
func (l *SerialLink) Close() error {
	l.closed.Store(true)
	return l.rw.Close()
}
