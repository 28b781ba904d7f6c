package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// standbyFile in state_dir holds the operator's standby flag, so that a
// node put in standby stays out of the group across restarts.
const standbyFile = "standby"

// loadStandby reads the persisted standby flag (absent: not in standby).
func loadStandby(dir string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, standbyFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("standby flag: %w", err)
	}
	switch strings.TrimSpace(string(b)) {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	// A damaged flag keeps the node out: an operator put it there.
	return true, fmt.Errorf("standby flag %s holds %q (want on or off): staying in standby; run mirrorctl unstandby", filepath.Join(dir, standbyFile), b)
}

// saveStandby persists the flag durably.
func saveStandby(dir string, on bool) error {
	v := "off\n"
	if on {
		v = "on\n"
	}
	return writeFileDurably(filepath.Join(dir, standbyFile), []byte(v))
}
