package heartbeat

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// termFile is the file in state_dir that records the highest takeover
// term this node has seen (roles.go).
const termFile = "heartbeat-term"

// maxTerm bounds a recorded term: a larger one is taken for corruption
// (terms grow by one per takeover; no cluster gets near it).
const maxTerm = 1 << 62

// LoadTerm returns the highest takeover term recorded in dir (0 when none
// is): the machine's starting knowledge (MachineConfig.Term), so that a
// restarted node's first claim is later than every claim it had seen.
func LoadTerm(dir string) (uint64, error) {
	path := filepath.Join(dir, termFile)
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("takeover term: %w", err)
	}
	t, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err == nil && t > maxTerm {
		err = fmt.Errorf("%d is out of range", t)
	}
	if err != nil {
		return 0, fmt.Errorf("takeover term file %s is corrupt (%v): remove it only if the peer is up and active, or will take over (this node then learns the term from it)", path, err)
	}
	return t, nil
}

// SaveTerm records term t in dir durably (write, fsync, rename, fsync of
// the directory). The runner calls it with Ready.Term before it carries
// out anything else of that step.
func SaveTerm(dir string, t uint64) error {
	if err := writeCounter(dir, termFile, t); err != nil {
		return fmt.Errorf("takeover term: %w", err)
	}
	return nil
}

// writeCounter replaces dir/name with v in decimal, durably: a crash
// leaves the old value or the new one, never a torn file.
func writeCounter(dir, name string, v uint64) error {
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, name+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly once renamed
	_, err = fmt.Fprintf(f, "%d\n", v)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		if d, derr := os.Open(dir); derr == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("recording %s: %w", path, err)
	}
	return nil
}
