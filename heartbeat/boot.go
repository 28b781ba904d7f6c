package heartbeat

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// NextBoot returns this boot's ID and records it in dir/heartbeat-boot.
// Peers refuse frames whose boot ID is lower than one they have seen (that
// is what defeats replays from an earlier run), so the ID must grow even
// if the wall clock was set back: it is max(now in ns, previous + 1).
func NextBoot(dir string, now time.Time) (uint64, error) {
	path := filepath.Join(dir, "heartbeat-boot")
	boot := uint64(now.UnixNano())
	if b, err := os.ReadFile(path); err == nil {
		prev, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if perr != nil {
			return 0, fmt.Errorf("boot ID file %s is corrupt (%v): remove it if the clock is right", path, perr)
		}
		boot = max(boot, prev+1)
	} else if !os.IsNotExist(err) {
		return 0, fmt.Errorf("boot ID: %w", err)
	}
	if err := writeCounter(dir, "heartbeat-boot", boot); err != nil {
		return 0, fmt.Errorf("boot ID: %w", err)
	}
	return boot, nil
}
