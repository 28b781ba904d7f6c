package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/hamirror/hamirror/iscsi"
)

// iscsiMain checks an iSCSI LUN from inside a VM with hamirror's own
// initiator: `iscsi probe URL` prints {"size":N,"block_size":B};
// `iscsi write URL OFF TEXT` writes TEXT (zero-padded to a block) at byte
// OFF with FUA; `iscsi read URL OFF LEN` prints the bytes at OFF (without
// trailing zeros).
func iscsiMain(args []string) error {
	if len(args) < 2 {
		return errors.New("usage: iscsi probe|write|read URL [OFF TEXT|OFF LEN]")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := iscsi.OpenLeg(ctx, args[1], iscsi.Config{})
	if err != nil {
		return err
	}
	defer d.Close()
	num := func(i int) (int64, error) {
		if len(args) <= i {
			return 0, fmt.Errorf("missing argument %d", i)
		}
		return strconv.ParseInt(args[i], 10, 64)
	}
	switch args[0] {
	case "probe":
		return json.NewEncoder(os.Stdout).Encode(map[string]int64{"size": d.Size(), "block_size": int64(d.BlockSize())})
	case "write":
		off, err := num(2)
		if err != nil || len(args) < 4 {
			return fmt.Errorf("usage: iscsi write URL OFF TEXT (%v)", err)
		}
		buf := make([]byte, d.BlockSize())
		copy(buf, args[3])
		return d.WriteAt(buf, off, true)
	case "read":
		off, err := num(2)
		if err != nil {
			return err
		}
		n, err := num(3)
		if err != nil {
			return err
		}
		bs := int64(d.BlockSize())
		buf := make([]byte, (n+bs-1)/bs*bs)
		if err := d.ReadAt(buf, off); err != nil {
			return err
		}
		_, err = os.Stdout.Write(bytes.TrimRight(buf[:n], "\x00"))
		return err
	}
	return fmt.Errorf("unknown iscsi action %q", args[0])
}
