package mirror

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/hamirror/hamirror/iscsi"
)

// DefaultLockDir holds the leg locks of the processes on this node.
const DefaultLockDir = "/run/hamirror/locks"

// ErrLegLocked: another process on this node holds a leg.
var ErrLegLocked = errors.New("leg is in use by another process on this node")

// LegLocks are exclusive locks on legs, one lock file per leg in a
// directory (flock(2): the kernel drops them when the process dies, so a
// crash leaves nothing to clean up). mirrord takes them BEFORE it opens
// any leg: a second mirrord on the same legs is refused at once, naming
// the holder's pid, instead of logging in to the arrays with the same
// ISIDs (which knocks the running mirrord's sessions off the targets).
// Multi-mount protection (mmp.go) covers other nodes.
//
// A leg's lock file is named by a hash of what the leg IS, not how it is
// spelled: an iscsi:// URL without its user, the portal and IQN in lower
// case; a block device by its device number; a file by its device and
// inode (a path that does not exist yet by its absolute path).
//
//	locks, err := mirror.LockLegs(mirror.DefaultLockDir, specA, specB)
//	if err != nil { return err } // names the holder's pid
//	defer locks.Unlock()
//	... open the legs, Assemble ...
//	drop, err := locks.Add(replacementSpec) // before `leg add` opens a new leg
//	if addFailed { drop() }
type LegLocks struct {
	dir  string
	mu   sync.Mutex
	held map[string]*os.File // by key
}

// LockLegs creates dir if needed and locks every spec; on error it holds
// nothing.
func LockLegs(dir string, specs ...string) (*LegLocks, error) {
	l := &LegLocks{dir: dir, held: map[string]*os.File{}}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("leg locks: %w", err)
	}
	keys := map[string]string{}
	for _, s := range specs {
		k := legKey(s)
		if other, dup := keys[k]; dup {
			return nil, fmt.Errorf("legs %s and %s are the same leg; a mirror needs two different legs", other, s)
		}
		keys[k] = s
	}
	for _, s := range specs {
		if _, err := l.Add(s); err != nil {
			l.Unlock()
			return nil, err
		}
	}
	return l, nil
}

// Add locks one more leg; drop releases that lock again (a no-op when
// the leg was held already).
func (l *LegLocks) Add(spec string) (drop func(), err error) {
	k := legKey(spec)
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.held[k]; ok {
		return func() {}, nil
	}
	sum := sha256.Sum256([]byte(k))
	path := filepath.Join(l.dir, hex.EncodeToString(sum[:8])+".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("leg lock for %s: %w", spec, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := readHolder(f)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("leg %s: %w: held by pid %s (lock %s); stop that mirrord first", spec, ErrLegLocked, holder, path)
		}
		return nil, fmt.Errorf("leg lock for %s: %w", spec, err)
	}
	// Who holds it, for the next one refused (and for an operator).
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(fmt.Sprintf("%d\n%s\n", os.Getpid(), spec)), 0)
	}
	l.held[k] = f
	return func() { l.drop(k) }, nil
}

func (l *LegLocks) drop(k string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f, ok := l.held[k]; ok {
		f.Truncate(0)
		f.Close()
		delete(l.held, k)
	}
}

// Unlock releases every lock. The files stay (removing a lock file races
// with a process that opened it but has not locked it yet).
func (l *LegLocks) Unlock() {
	if l == nil {
		return
	}
	l.mu.Lock()
	keys := make([]string, 0, len(l.held))
	for k := range l.held {
		keys = append(keys, k)
	}
	l.mu.Unlock()
	for _, k := range keys {
		l.drop(k)
	}
}

// readHolder is the pid recorded in a lock file ("unknown" when empty).
func readHolder(f *os.File) string {
	b := make([]byte, 64)
	n, _ := f.ReadAt(b, 0)
	first, _, _ := strings.Cut(string(b[:n]), "\n")
	if _, err := strconv.Atoi(first); err != nil {
		return "unknown"
	}
	return first
}

// legKey is what a leg spec names, independent of its spelling.
func legKey(spec string) string {
	if iscsi.IsLegSpec(spec) {
		if u, err := iscsi.ParseURL(spec); err == nil {
			return fmt.Sprintf("iscsi:%s/%s/%d", strings.ToLower(u.Host), strings.ToLower(u.Target), u.LUN)
		}
		return "spec:" + spec
	}
	var st unix.Stat_t
	if err := unix.Stat(spec, &st); err == nil {
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			return fmt.Sprintf("bdev:%d", st.Rdev)
		}
		return fmt.Sprintf("file:%d:%d", st.Dev, st.Ino)
	}
	if abs, err := filepath.Abs(spec); err == nil {
		return "path:" + abs
	}
	return "spec:" + spec
}
