package main

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hamirror/hamirror/testenv/lab/agentproto"
)

// uartMain sends or receives COUNT framed, checksummed messages on a UART.
func uartMain(args []string) error {
	if len(args) < 3 {
		return errors.New("usage: uart send|recv DEV COUNT [TIMEOUT]")
	}
	n, err := strconv.Atoi(args[2])
	if err != nil || n < 1 {
		return fmt.Errorf("bad count %q", args[2])
	}
	f, err := os.OpenFile(args[1], os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := makeRaw(int(f.Fd())); err != nil {
		return fmt.Errorf("raw mode on %s: %w", args[1], err)
	}
	switch args[0] {
	case "send":
		w := agentproto.NewWriter(f)
		for i := 1; i <= n; i++ {
			body := []byte(fmt.Sprintf("beat %d from %s", i, hostname()))
			if err := w.Write(agentproto.TypeSerial, agentproto.Serial{Seq: uint64(i), Body: body, CRC: crc32.ChecksumIEEE(body)}); err != nil {
				return err
			}
		}
		return unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1) // tcdrain
	case "recv":
		timeout := 60 * time.Second
		if len(args) > 3 {
			if timeout, err = time.ParseDuration(args[3]); err != nil {
				return err
			}
		}
		done := make(chan error, 1)
		go func() { done <- recvFrames(f, n) }()
		select {
		case err := <-done:
			return err
		case <-time.After(timeout):
			return fmt.Errorf("timed out after %v waiting for %d messages", timeout, n)
		}
	}
	return fmt.Errorf("unknown uart action %q", args[0])
}

func recvFrames(f *os.File, n int) error {
	r := bufio.NewReader(f)
	for want := uint64(1); want <= uint64(n); want++ {
		typ, p, err := agentproto.ReadFrame(r)
		if err != nil {
			return fmt.Errorf("message %d: %w", want, err)
		}
		var m agentproto.Serial
		if err := agentproto.Decode(p, &m); err != nil || typ != agentproto.TypeSerial {
			return fmt.Errorf("message %d: type %c: %v", want, typ, err)
		}
		if m.Seq != want || crc32.ChecksumIEEE(m.Body) != m.CRC {
			return fmt.Errorf("message %d: got seq %d, crc ok=%v", want, m.Seq, crc32.ChecksumIEEE(m.Body) == m.CRC)
		}
		fmt.Printf("%d %s\n", m.Seq, m.Body)
	}
	return nil
}

func makeRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CRTSCTS | unix.CBAUD
	t.Cflag |= unix.CS8 | unix.CLOCAL | unix.CREAD | unix.B115200
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}
