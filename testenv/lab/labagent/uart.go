package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/testenv/lab/agentproto"
)

// uartMain sends or receives COUNT checksummed messages over a UART with
// the heartbeat's own serial medium (heartbeat.OpenSerial: raw 8N1 at
// 115200 baud, its sync/length/CRC envelope), so the lab proves the
// wiring and the code the serial heartbeat uses.
func uartMain(args []string) error {
	if len(args) < 3 {
		return errors.New("usage: uart send|recv DEV COUNT [TIMEOUT]")
	}
	n, err := strconv.Atoi(args[2])
	if err != nil || n < 1 {
		return fmt.Errorf("bad count %q", args[2])
	}
	link, err := heartbeat.OpenSerial(args[1], 115200)
	if err != nil {
		return err
	}
	defer link.Close()
	switch args[0] {
	case "send":
		for i := 1; i <= n; i++ {
			body := []byte(fmt.Sprintf("beat %d from %s", i, hostname()))
			b, _ := json.Marshal(agentproto.Serial{Seq: uint64(i), Body: body, CRC: crc32.ChecksumIEEE(body)})
			if err := link.Send(b); err != nil {
				return err
			}
		}
		return nil // closing the tty waits for the output to drain
	case "recv":
		timeout := 60 * time.Second
		if len(args) > 3 {
			if timeout, err = time.ParseDuration(args[3]); err != nil {
				return err
			}
		}
		done := make(chan error, 1)
		go func() { done <- recvFrames(link, n) }()
		select {
		case err := <-done:
			return err
		case <-time.After(timeout):
			return fmt.Errorf("timed out after %v waiting for %d messages", timeout, n)
		}
	}
	return fmt.Errorf("unknown uart action %q", args[0])
}

func recvFrames(link *heartbeat.SerialLink, n int) error {
	for want := uint64(1); want <= uint64(n); want++ {
		p, err := link.Receive()
		if err != nil {
			return fmt.Errorf("message %d: %w", want, err)
		}
		var m agentproto.Serial
		if err := agentproto.Decode(p, &m); err != nil {
			return fmt.Errorf("message %d: %w", want, err)
		}
		if m.Seq != want || crc32.ChecksumIEEE(m.Body) != m.CRC {
			return fmt.Errorf("message %d: got seq %d, crc ok=%v", want, m.Seq, crc32.ChecksumIEEE(m.Body) == m.CRC)
		}
		fmt.Printf("%d %s\n", m.Seq, m.Body)
	}
	if g := link.Garbage(); g != 0 {
		return fmt.Errorf("all %d messages arrived but %d bytes of garbage were skipped", n, g)
	}
	return nil
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}
