package fence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/resources"
)

var (
	// ErrFenced: another node removed this node's key from an array and
	// holds the reservation. The node must stop everything at once and stay
	// out until a clean rejoin (Register: a mirrord restart or mirrorctl
	// cleanup). Its writes, data and disk slot alike, already get
	// iscsi.ErrReservationConflict.
	// It is also resources.ErrFenced (errors.Is), so the group takes a
	// fence operation that finds it for a fence, not a failure.
	ErrFenced error = fencedError{}
	// ErrNoArray: no array answered, so nothing could be fenced; a takeover
	// must not start.
	ErrNoArray = errors.New("fence: no array is reachable, so nothing could be fenced")
)

// fencedError is ErrFenced.
type fencedError struct{}

func (fencedError) Error() string {
	return "fence: this node has been fenced off the arrays (another node removed its reservation key); " +
		"stop everything; it rejoins only after a clean restart or mirrorctl cleanup"
}

func (fencedError) Is(target error) bool { return target == resources.ErrFenced }

// Config is what the fence agent needs. The node builds it from the
// cluster file (nodes[].fence_key, default DeriveKey(cluster, node)) and
// the iSCSI sessions it opened.
type Config struct {
	// Key is this node's reservation key (fence_key); not 0.
	Key uint64
	// Peers are the other nodes' keys: a takeover with no victims named
	// fences them all.
	Peers []uint64
	// Arrays: every array of the volume, each with this node's sessions.
	Arrays []Array
	// Log receives what the agent did and why; default: discarded.
	Log *slog.Logger
	// PreemptDrain: after a takeover that removed a victim with plain
	// PREEMPT (the array refused PREEMPT AND ABORT, as tgtd does), Takeover
	// waits this long before it returns, so that the victim's writes the
	// array admitted before the PREEMPT (which still complete: tgtd checks
	// a command's reservation when it admits it) have landed before the
	// new owner reads the arrays. 0: DefaultPreemptDrain; negative: no
	// wait (an array that completes nothing admitted late). Where every
	// such array offers an ordered barrier (iscsi.Disk.Barrier: one task
	// set for all initiators), the barrier proves those writes ended and
	// Takeover does not wait.
	PreemptDrain time.Duration
	// NoBarrier waits PreemptDrain even where the arrays offer an ordered
	// barrier.
	NoBarrier bool
}

// DefaultPreemptDrain is Config.PreemptDrain's default. On tgtd 1.0.85 the
// victim's queued writes landed within tens of milliseconds of the
// PREEMPT (120 FUA writes of 64 KiB in flight; resources/fence
// drain_tgtd_test.go).
const DefaultPreemptDrain = 500 * time.Millisecond

// Array is one array as this node reaches it.
type Array struct {
	// Name is how results and errors name the array (e.g. "array-a").
	Name string
	// Volume is the volume's session (iscsi.PurposeVolume): the mirror leg;
	// reservation commands go through it.
	Volume *iscsi.Disk
	// DiskHeartbeat is the disk heartbeat's session
	// (iscsi.PurposeDiskHeartbeat), which writes its slot and so is
	// registered too; nil when the array carries no disk heartbeat.
	DiskHeartbeat *iscsi.Disk
}

// Validate rejects an unusable configuration, naming the field.
func (c *Config) Validate() error {
	if c.Key == 0 {
		return fmt.Errorf("fence: Key (fence_key) is 0; give each node a non-zero key or leave it to DeriveKey")
	}
	for _, p := range c.Peers {
		if p == 0 || p == c.Key {
			return fmt.Errorf("fence: peer key %s is 0 or this node's own key; every node needs a key of its own (fence_key)", FormatKey(p))
		}
	}
	if len(c.Arrays) == 0 {
		return fmt.Errorf("fence: no Arrays to fence on")
	}
	seen := map[string]bool{}
	for i, a := range c.Arrays {
		switch {
		case a.Name == "" || seen[a.Name]:
			return fmt.Errorf("fence: Arrays[%d].Name %q is empty or used twice", i, a.Name)
		case a.Volume == nil:
			return fmt.Errorf("fence: Arrays[%d] (%s) has no Volume session", i, a.Name)
		}
		seen[a.Name] = true
	}
	return nil
}

// Fence is the fence agent: SCSI-3 persistent reservations on every array
// through this node's own sessions. Its methods run one at a time; each
// works on every array in parallel and reports per array.
type Fence struct {
	cfg    Config
	log    *slog.Logger
	arrays []*array

	mu      sync.Mutex // one operation at a time
	fenced  bool       // an operation found us fenced; cleared by Register
	active  bool       // we should hold the reservation (Takeover/Acquire done, no Release since)
	start   StartMode
	victims []uint64
	// owed is the wait a plain PREEMPT calls for that has not been waited
	// out yet (a takeover whose context ended during it).
	owed time.Duration
}

// New checks cfg and returns the agent. It sends nothing: call Register
// at start-up.
func New(cfg Config) (*Fence, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := &Fence{cfg: cfg, log: cfg.Log}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.cfg.PreemptDrain == 0 {
		f.cfg.PreemptDrain = DefaultPreemptDrain
	}
	for _, a := range cfg.Arrays {
		f.arrays = append(f.arrays, &array{Array: a, group: &iscsi.RegistrationGroup{}})
	}
	return f, nil
}

// Result says what an operation found and did on each array.
type Result struct {
	Op     string
	Arrays []ArrayResult
	// Drained is how long Takeover waited, after removing a victim with
	// plain PREEMPT, for the victim's writes admitted before it
	// (Config.PreemptDrain).
	Drained time.Duration
	// Barrier: after a plain PREEMPT, an ordered barrier on every array
	// concerned proved the victim's writes admitted before it ended
	// (no timed wait).
	Barrier bool
}

// ArrayResult is one array's part of a Result.
type ArrayResult struct {
	Array string
	// Unreachable: the array did not answer (its session is down or timed
	// out); nothing was done there.
	Unreachable bool
	// Registered: every writing session of this node is registered.
	Registered bool
	// Holder: this node holds the WE-RO reservation.
	Holder bool
	// Kept: Release left this node's reservation in place, because a
	// peer's key is not registered on the array (a node fenced off and not
	// rejoined): without a reservation, that node could write again.
	Kept bool
	// Preempted are the victim keys this call removed, and Aborted says
	// whether PREEMPT AND ABORT did it (false: the array refused it, as
	// tgtd does, and plain PREEMPT did).
	Preempted []uint64
	Aborted   bool
	// Restored counts sessions whose registration had to be restored
	// (tgtd forgets it when a session ends).
	Restored int
	// Keys are the keys registered at the end (one per I_T nexus).
	Keys []uint64
	// Notes say why the agent did something unusual (an array that lost
	// its reservations, a stale reservation taken back).
	Notes []string
	// Err is why the operation failed on this array (wrapping ErrFenced
	// if this node was fenced there).
	Err error
}

// Fenced names the arrays where the operation succeeded: for Takeover,
// the victims are off the array and this node holds the reservation.
func (r Result) Fenced() []string {
	var n []string
	for _, a := range r.Arrays {
		if !a.Unreachable && a.Err == nil {
			n = append(n, a.Array)
		}
	}
	return n
}

// Unreachable names the arrays that did not answer.
func (r Result) Unreachable() []string {
	var n []string
	for _, a := range r.Arrays {
		if a.Unreachable {
			n = append(n, a.Array)
		}
	}
	return n
}

// String is one line per array, for logs and mirrorctl.
func (r Result) String() string {
	var b strings.Builder
	for _, a := range r.Arrays {
		fmt.Fprintf(&b, "%s %s: ", r.Op, a.Array)
		switch {
		case a.Unreachable:
			b.WriteString("unreachable")
		case a.Err != nil:
			fmt.Fprintf(&b, "failed: %v", a.Err)
		default:
			fmt.Fprintf(&b, "registered %v, holder %v", a.Registered, a.Holder)
			if a.Kept {
				b.WriteString(" (kept: a fenced peer has not rejoined)")
			}
			if len(a.Preempted) > 0 {
				how := "PREEMPT (the array refused PREEMPT AND ABORT)"
				if a.Aborted {
					how = "PREEMPT AND ABORT"
				}
				fmt.Fprintf(&b, ", removed %s by %s", formatKeys(a.Preempted), how)
			}
		}
		for _, n := range a.Notes {
			fmt.Fprintf(&b, "; %s", n)
		}
		b.WriteString("\n")
	}
	if r.Barrier {
		fmt.Fprintf(&b, "%s: the victims' writes admitted before the PREEMPT ended (ordered barrier)\n", r.Op)
	}
	if r.Drained > 0 {
		fmt.Fprintf(&b, "%s: waited %v for the victims' writes admitted before the PREEMPT\n", r.Op, r.Drained)
	}
	return b.String()
}

func formatKeys(keys []uint64) string {
	s := make([]string, len(keys))
	for i, k := range keys {
		s[i] = FormatKey(k)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// Register registers this node's key from every writing session of every
// reachable array (REGISTER AND IGNORE EXISTING KEY): at start-up, and as
// the clean rejoin of a fenced node. It is idempotent. Unreachable arrays
// are reported, not an error; a later Check or Takeover registers there.
func (f *Fence) Register(ctx context.Context) (Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.run(ctx, goal{op: opRegister, me: f.cfg.Key})
	if err == nil {
		f.fenced = false
	}
	return r, err
}

// Takeover fences victims (default: every peer) off every reachable
// array: it makes sure this node is registered, holds the WE-RO
// reservation, and removes each victim key still registered with PREEMPT
// AND ABORT (PREEMPT where the array refuses it). It works on the arrays
// one at a time in the order of their names and stops at the first
// failure, so of two nodes taking over from each other at once exactly
// one wins. It fails if any
// reachable array could not be fenced, if no array is reachable
// (ErrNoArray), or if this node was fenced itself (ErrFenced): a node that
// lost its key never preempts back.
//
// Where an array refused PREEMPT AND ABORT and plain PREEMPT removed a
// victim, the victim's commands the array admitted before may still
// complete: Takeover then sends an ordered barrier there (Result.Barrier:
// it ended, so did they) or, where the array offers none, waits
// Config.PreemptDrain before it returns (Result.Drained), so they have
// landed before this node reads the arrays. If ctx ends during that wait,
// Takeover fails, and the next Takeover or Acquire waits it out in full.
func (f *Fence) Takeover(ctx context.Context, victims ...uint64) (Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(victims) == 0 {
		victims = f.cfg.Peers
	}
	if slices.Contains(victims, f.cfg.Key) || slices.Contains(victims, 0) {
		return Result{Op: opTakeover.String()}, fmt.Errorf("fence: takeover with this node's own key or 0 among the victims %s", formatKeys(victims))
	}
	r, err := f.activate(ctx, goal{op: opTakeover, me: f.cfg.Key, victims: victims})
	if plainPreempt(r) && f.cfg.PreemptDrain > 0 {
		f.owed = f.cfg.PreemptDrain
		if err == nil && !f.cfg.NoBarrier && f.barrier(r) {
			f.owed, r.Barrier = 0, true
		}
	}
	var derr error
	r.Drained, derr = f.drain(ctx)
	return r, errors.Join(err, derr)
}

// barrier sends an ordered barrier to every array where r removed a
// victim by plain PREEMPT; true if each one proved the victim's commands
// admitted before the PREEMPT ended (else the timed drain stays owed).
func (f *Fence) barrier(r Result) bool {
	for _, ar := range r.Arrays {
		if len(ar.Preempted) == 0 || ar.Aborted {
			continue
		}
		i := slices.IndexFunc(f.arrays, func(a *array) bool { return a.Name == ar.Array })
		if i < 0 {
			return false
		}
		start := time.Now()
		if err := f.arrays[i].Volume.Barrier(); err != nil {
			f.log.Info("fence: no ordered barrier after the plain PREEMPT; waiting instead", "array", ar.Array, "err", err)
			return false
		}
		f.log.Info("fence: the victims' writes admitted before the plain PREEMPT ended (ordered barrier)", "array", ar.Array,
			"after", time.Since(start))
	}
	return true
}

// plainPreempt says whether r removed a victim by plain PREEMPT on some
// array, which lets the victim's queued commands complete.
func plainPreempt(r Result) bool {
	for _, a := range r.Arrays {
		if len(a.Preempted) > 0 && !a.Aborted {
			return true
		}
	}
	return false
}

// drain waits out f.owed, or fails when ctx ends first (the wait stays
// owed). Called with f.mu held: no operation runs meanwhile.
func (f *Fence) drain(ctx context.Context) (time.Duration, error) {
	d := f.owed
	if d <= 0 {
		return 0, nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		f.owed = 0
		f.log.Info("fence: waited for the victims' writes admitted before a plain PREEMPT", "wait", d)
		return d, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("fence: the victims are fenced, but the %v wait for their writes admitted before the PREEMPT was cut short "+
			"(run Takeover again before using the arrays): %w", d, ctx.Err())
	}
}

// Acquire is the clean hand-over: register, and reserve WE-RO if nobody
// holds a reservation; the peer stays registered (its disk heartbeat
// keeps writing). A WE-RO reservation a registered peer holds is enough
// (under Registrants Only every registrant may write): a peer keeps its
// reservation on a clean stop while a node it fenced has not rejoined
// (see Release), and that node, after its Register, acquires under it.
// Any other reservation (another type, or a key that is no peer's) is an
// error. The arrays cannot tell a peer that kept its reservation on a
// clean stop from one still running: only call Acquire after the peer's
// clean stop (the engine's multi-mount protection checks it again).
func (f *Fence) Acquire(ctx context.Context) (Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.activate(ctx, goal{op: opAcquire, me: f.cfg.Key})
	var derr error
	r.Drained, derr = f.drain(ctx) // a takeover's wait cut short
	return r, errors.Join(err, derr)
}

func (f *Fence) activate(ctx context.Context, g goal) (Result, error) {
	if f.fenced {
		return Result{Op: g.op.String()}, fmt.Errorf("fence: refusing to %s: %w", g.op, ErrFenced)
	}
	r, err := f.run(ctx, g)
	if err == nil {
		f.active = true
	}
	return r, err
}

// Release drops this node's reservation on a clean stop and keeps its
// registrations, so its disk heartbeat goes on writing. On an array where
// a peer's key is not registered (a node this one fenced, not rejoined
// yet) it keeps the reservation and reports it (ArrayResult.Kept): with
// no reservation held, that node could write again. A reservation this
// node does not hold is left alone. A fenced node has nothing to
// release: ErrFenced.
func (f *Fence) Release(ctx context.Context) (Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.active = false
	return f.run(ctx, goal{op: opRelease, me: f.cfg.Key})
}

// Check verifies on every reachable array that this node is still
// registered through every writing session and, while it is active
// (after Takeover or Acquire, before Release), holds the reservation or
// finds a registered peer's WE-RO reservation (see Acquire). A missing
// key with the array's PR generation kept is ErrFenced. It repairs what
// an array restart loses (tgtd keeps reservations in memory): the
// registrations, and the reservation of an active node.
//
// A node found fenced stays fenced: Check then sends nothing and answers
// ErrFenced until Register.
func (f *Fence) Check(ctx context.Context) (Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fenced {
		return Result{Op: opCheck.String()}, fmt.Errorf("fence: check: %w", ErrFenced)
	}
	return f.run(ctx, goal{op: opCheck, me: f.cfg.Key, active: f.active})
}

// Fenced reports whether an operation found this node fenced (until the
// next successful Register).
func (f *Fence) Fenced() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fenced
}

// Active reports whether this node holds (should hold) the reservation.
func (f *Fence) Active() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.active
}

// run does g on every array in parallel and gathers the results. Called
// with f.mu held.
//
// Except for Register (the deliberate rejoin), it first reads every
// reachable array, and if one of them shows this node fenced it takes no
// step on any: a fenced node must not join (register on) an array it
// never joined, nor preempt there, while its operation on the others
// finds it fenced.
func (f *Fence) run(ctx context.Context, g goal) (Result, error) {
	g.peers = f.cfg.Peers
	if g.op != opRegister {
		if r, fenced := f.fencedAnywhere(g); fenced {
			return r, f.verdict(g, r)
		}
	}
	if g.op == opTakeover {
		return f.runInOrder(ctx, g)
	}
	res := Result{Op: g.op.String(), Arrays: make([]ArrayResult, len(f.arrays))}
	done := make(chan int, len(f.arrays))
	for i, a := range f.arrays {
		go func() {
			res.Arrays[i] = a.do(ctx, g, f.log)
			done <- i
		}()
	}
	finished := make([]bool, len(f.arrays))
	for range f.arrays {
		select {
		case i := <-done:
			finished[i] = true
		case <-ctx.Done():
			// The arrays still working finish in the background (their
			// commands are bounded by the iSCSI timeout); report them.
			out := Result{Op: res.Op}
			for i, a := range f.arrays {
				if finished[i] {
					out.Arrays = append(out.Arrays, res.Arrays[i])
				} else {
					out.Arrays = append(out.Arrays, ArrayResult{Array: a.Name, Err: fmt.Errorf("fence: %s on %s: %w", g.op, a.Name, ctx.Err())})
				}
			}
			return out, f.verdict(g, out)
		}
	}
	return res, f.verdict(g, res)
}

// runInOrder does g on one array at a time, in the order of their names
// (the same on every node), and stops at the first array where it fails:
// two nodes taking over from each other at once meet on the first array
// they both reach, where one removes the other, and the loser never
// touches the others. In parallel, each could win a different array and
// both lose. An unreachable array is passed (reported, not fatal); one
// that hangs delays the next by up to the iSCSI timeout.
func (f *Fence) runInOrder(ctx context.Context, g goal) (Result, error) {
	res := Result{Op: g.op.String(), Arrays: make([]ArrayResult, len(f.arrays))}
	order := make([]int, len(f.arrays))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(x, y int) int { return strings.Compare(f.arrays[x].Name, f.arrays[y].Name) })
	failed := ""
	for _, i := range order {
		a := f.arrays[i]
		switch {
		case failed != "":
			res.Arrays[i] = ArrayResult{Array: a.Name, Err: fmt.Errorf("fence: %s on %s: not attempted: it failed on %s first", g.op, a.Name, failed)}
		case ctx.Err() != nil:
			res.Arrays[i] = ArrayResult{Array: a.Name, Err: fmt.Errorf("fence: %s on %s: %w", g.op, a.Name, ctx.Err())}
		default:
			res.Arrays[i] = a.do(ctx, g, f.log)
			if res.Arrays[i].Err != nil {
				failed = a.Name
			}
		}
	}
	return res, f.verdict(g, res)
}

// fencedAnywhere reads every array in parallel and, if any shows this
// node fenced, returns the result that says so (the arrays that do not
// show it are reported untouched).
func (f *Fence) fencedAnywhere(g goal) (Result, bool) {
	type answer struct {
		fenced bool
		note   string
	}
	answers := make([]answer, len(f.arrays))
	var wg sync.WaitGroup
	for i, a := range f.arrays {
		wg.Go(func() {
			fenced, note := a.fencedHere(g)
			answers[i] = answer{fenced, note}
		})
	}
	wg.Wait()
	var on []string
	for i, a := range f.arrays {
		if answers[i].fenced {
			on = append(on, a.Name)
			f.log.Warn("fence: this node was fenced", "array", a.Name, "why", answers[i].note)
		}
	}
	if len(on) == 0 {
		return Result{}, false
	}
	r := Result{Op: g.op.String()}
	for i, a := range f.arrays {
		ar := ArrayResult{Array: a.Name}
		if answers[i].fenced {
			ar.Err = fmt.Errorf("fence: %s on %s: %w (%s)", g.op, a.Name, ErrFenced, answers[i].note)
		} else {
			ar.Err = fmt.Errorf("fence: %s on %s: nothing done: this node is fenced on %s: %w", g.op, a.Name, strings.Join(on, ", "), ErrFenced)
		}
		r.Arrays = append(r.Arrays, ar)
	}
	return r, true
}

// verdict turns the per-array results into the operation's error.
func (f *Fence) verdict(g goal, r Result) error {
	var errs []error
	reached := 0
	for _, a := range r.Arrays {
		if errors.Is(a.Err, ErrFenced) {
			f.fenced = true
			f.active = false
		}
		if a.Err != nil {
			errs = append(errs, a.Err)
		}
		if !a.Unreachable {
			reached++
		}
	}
	if reached == 0 && (g.op == opTakeover || g.op == opAcquire) {
		errs = append(errs, ErrNoArray)
	}
	return errors.Join(errs...)
}
