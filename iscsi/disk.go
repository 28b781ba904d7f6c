package iscsi

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Disk is one LUN reached through its own session. It implements hamirror's
// mirror.Leg interface. Commands fail fast when the target does not answer
// within Config.Timeout; the Disk then logs in again in the background every
// ReconnectInterval, and calls succeed again once the target is back.
//
// Offsets and lengths must be multiples of BlockSize.
//
// A Disk from OpenInBackground may not have logged in yet: until its first
// login it is not Ready, every command fails fast with ErrNotConnected, and
// Size, BlockSize, Capacity, Info and Limits are zero. See OpenInBackground.
type Disk struct {
	url  URL
	name string
	cfg  Config

	blockSize uint32
	blocks    uint64
	capacity  Capacity
	inquiry   Inquiry
	limits    Limits

	stats struct {
		unitAttentions, busyRetries, reconnects, aborted atomic.Uint64
		reregistrations, registrationsLost               atomic.Uint64
		lastUA                                           atomic.Uint32 // ASC<<8 | ASCQ
	}

	ops     sync.Pool // *ioOp
	waiters sync.Pool // *syncWaiter

	mu   sync.Mutex
	sess *session
	keep struct { // KeepRegistered's request
		key   uint64
		group *RegistrationGroup
	}
	lastErr error
	closed  bool
	quit    chan struct{}
	wg      sync.WaitGroup

	// ready is set once the LUN was identified (blockSize, blocks,
	// capacity, inquiry and limits are written before and never after);
	// readyCh is closed then.
	ready   atomic.Bool
	readyCh chan struct{}
}

// OpenLeg parses spec (iscsi://[user@]host[:port]/target-iqn/lun), logs in,
// identifies the LUN (INQUIRY, VPD, READ CAPACITY(16)) and returns the Disk.
// The first login must succeed; later failures are handled by reconnecting.
func OpenLeg(ctx context.Context, spec string, cfg Config) (*Disk, error) {
	u, err := ParseURL(spec)
	if err != nil {
		return nil, err
	}
	return Open(ctx, u, cfg)
}

// Open is OpenLeg with a parsed URL.
//
// Each Disk is its own session, so its ISID is SessionISID of the
// configured base (the node's for cfg.Purpose by default), the purpose and
// the LUN's target and number: stable per node, purpose and LUN, as
// persistent reservations need, and different for two LUNs of one target
// or two purposes, which would otherwise reinstate (drop) each other.
func Open(ctx context.Context, u URL, cfg Config) (*Disk, error) {
	d, err := newDisk(u, cfg)
	if err != nil {
		return nil, err
	}
	s, err := d.connect(ctx)
	if err != nil {
		return nil, err
	}
	if err := d.identify(s); err != nil {
		s.close()
		return nil, fmt.Errorf("%s: %w", d.name, err)
	}
	d.sess = s
	d.wg.Add(1)
	go d.maintain()
	return d, nil
}

// OpenLegInBackground is OpenLeg for an array that may be down: it checks
// spec and cfg (the only errors) and returns the Disk at once, logging in
// in the background, at once and then every ReconnectInterval until the
// first login succeeds. Until then the Disk is not Ready: its I/O and
// reservation commands fail fast with ErrNotConnected (which is also
// ErrDisconnected: "the array does not answer"), Connected is false, and
// Size, BlockSize, Capacity, Info and Limits are zero. The first login
// identifies the LUN (INQUIRY, VPD, READ CAPACITY(16)), restores a
// registration KeepRegistered asked for (guarded, as after any reconnect)
// and only then carries I/O; from then on the Disk is an ordinary one,
// reconnecting by itself, and later logins must find the same size.
//
// The node opens every session this way, once per array and purpose for
// the whole run (tgtd binds registrations to sessions), and hands them to
// the engine and the fence agent. The engine must treat a Disk that is not
// Ready as a leg that is down: never size, assemble, examine or write with
// it; start without it (degraded, if the other leg is there), or wait with
// WaitReady; re-add it only after WaitReady (the mirror's BeforeReAdd runs
// the fence agent there, as for any returning array). The fence agent
// reports such an array unreachable (not fenced, not fatal).
func OpenLegInBackground(spec string, cfg Config) (*Disk, error) {
	u, err := ParseURL(spec)
	if err != nil {
		return nil, err
	}
	return OpenInBackground(u, cfg)
}

// OpenInBackground is OpenLegInBackground with a parsed URL.
func OpenInBackground(u URL, cfg Config) (*Disk, error) {
	d, err := newDisk(u, cfg)
	if err != nil {
		return nil, err
	}
	d.wg.Add(1)
	go d.maintain()
	return d, nil
}

// newDisk checks cfg and makes the Disk, not yet logged in.
func newDisk(u URL, cfg Config) (*Disk, error) {
	cfg.EnsureDefaults()
	cfg.ISID = SessionISID(cfg.ISID, cfg.Purpose, u.Target, u.LUN)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Disk{url: u, name: u.String(), cfg: cfg, quit: make(chan struct{}), readyCh: make(chan struct{})}, nil
}

// Ready reports whether the Disk has logged in once and identified the
// LUN: Size, BlockSize, Capacity, Info and Limits are valid and stay so. A
// Disk from Open or OpenLeg is Ready from the start.
func (d *Disk) Ready() bool { return d.ready.Load() }

// WaitReady waits until the Disk is Ready, ctx ends (its error) or the
// Disk is closed (ErrClosed).
func (d *Disk) WaitReady(ctx context.Context) error {
	select {
	case <-d.readyCh:
		return nil
	case <-d.quit:
		if d.ready.Load() {
			return nil
		}
		return fmt.Errorf("%s: %w before the first login", d.name, ErrClosed)
	case <-ctx.Done():
		return fmt.Errorf("%s: waiting for the first login: %w", d.name, ctx.Err())
	}
}

func (d *Disk) connect(ctx context.Context) (*session, error) {
	li, err := dialLogin(ctx, &d.cfg, d.url.Host, d.url.User, d.url.Target)
	if err != nil {
		return nil, err
	}
	live := liveness{Timeout: d.cfg.Timeout, PingInterval: d.cfg.PingInterval}
	return newSession(li.nc, li.br, li.params, li.last, live, d.cfg.QueueDepth, d.cfg.Now), nil
}

// identify runs the identification commands on the first session s,
// before it carries any I/O, and makes the Disk Ready.
func (d *Disk) identify(s *session) error {
	if err := d.run(s, command{Op: "TEST UNIT READY", CDB: cdbTestUnitReady()}); err != nil {
		return err
	}
	inq, err := d.inquiryOn(s)
	if err != nil {
		return err
	}
	if inq.DeviceType != 0 {
		return fmt.Errorf("iscsi: LUN %d is SCSI device type %#x, not a disk", d.url.LUN, inq.DeviceType)
	}
	capa, err := d.readCapacityOn(s)
	if err != nil {
		return err
	}
	if capa.BlockSize == 0 {
		return fmt.Errorf("%w: READ CAPACITY(16) reports a block size of 0", ErrProtocol)
	}
	limits, err := d.readLimits(s)
	if err != nil {
		return err
	}
	d.inquiry, d.capacity, d.limits = inq, capa, limits
	d.blockSize, d.blocks = capa.BlockSize, capa.Blocks
	d.ready.Store(true)
	close(d.readyCh)
	return nil
}

// maintain logs in for the first time (OpenInBackground) and rebuilds
// the session whenever it dies, until Close.
func (d *Disk) maintain() {
	defer d.wg.Done()
	for first := !d.ready.Load(); ; first = false {
		d.mu.Lock()
		s := d.sess
		d.mu.Unlock()
		if s != nil {
			select {
			case <-s.dead:
				d.mu.Lock()
				d.lastErr = s.failure()
				d.sess = nil
				d.mu.Unlock()
			case <-d.quit:
				return
			}
		}
		if !first {
			select {
			case <-time.After(d.cfg.ReconnectInterval):
			case <-d.quit:
				return
			}
		}
		// A login in progress is abandoned when the Disk is closed.
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-d.quit:
				cancel()
			case <-ctx.Done():
			}
		}()
		ns, err := d.connect(ctx)
		cancel()
		if err != nil {
			d.mu.Lock()
			d.lastErr = err
			d.mu.Unlock()
			continue
		}
		// The new session carries no I/O until it is proven to reach the
		// same LUN (or, on the first login, has identified it) and, if
		// asked, holds its registration again.
		if d.ready.Load() {
			err = d.revalidate(ns)
		} else if err = d.identify(ns); err != nil {
			err = fmt.Errorf("%s: identifying the LUN at the first login: %w", d.name, err)
		}
		if err == nil {
			err = d.restoreRegistration(ns)
		}
		if err != nil {
			ns.close()
			d.mu.Lock()
			d.lastErr = err
			d.mu.Unlock()
			continue
		}
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			ns.close()
			return
		}
		d.sess = ns
		d.mu.Unlock()
		d.stats.reconnects.Add(1)
	}
}

// revalidate checks that a new session reaches the same LUN with the same
// size (absorbing the UNIT ATTENTIONs a reconnect brings).
func (d *Disk) revalidate(s *session) error {
	if err := d.run(s, command{Op: "TEST UNIT READY", CDB: cdbTestUnitReady()}); err != nil {
		return err
	}
	buf := make([]byte, 32)
	if err := d.run(s, command{Op: "READ CAPACITY(16)", CDB: cdbReadCapacity16(32), Read: buf}); err != nil {
		return err
	}
	c, err := decodeCapacity16(buf)
	if err != nil {
		return err
	}
	if c.Blocks != d.blocks || c.BlockSize != d.blockSize {
		return fmt.Errorf("iscsi: %s changed size from %d x %d to %d x %d bytes; not reconnecting",
			d.name, d.blocks, d.blockSize, c.Blocks, c.BlockSize)
	}
	return nil
}

// session returns the live session or why there is none.
func (d *Disk) session() (*session, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("%s: %w", d.name, ErrClosed)
	}
	if !d.ready.Load() {
		return nil, d.notReadyLocked()
	}
	if d.sess == nil || d.sess.isDead() {
		switch {
		case d.lastErr == nil:
			return nil, fmt.Errorf("%s: %w (reconnecting in the background)", d.name, ErrDisconnected)
		case errors.Is(d.lastErr, ErrDisconnected):
			return nil, fmt.Errorf("%s: %w (reconnecting in the background)", d.name, d.lastErr)
		}
		return nil, fmt.Errorf("%s: %w (reconnecting in the background; last failure: %w)", d.name, ErrDisconnected, d.lastErr)
	}
	return d.sess, nil
}

// notReady is the error of a Disk that has not logged in yet (or was
// closed before it did).
func (d *Disk) notReady() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.notReadyLocked()
}

func (d *Disk) notReadyLocked() error {
	switch {
	case d.closed:
		return fmt.Errorf("%s: %w", d.name, ErrClosed)
	case d.lastErr != nil:
		return fmt.Errorf("%s: %w (logging in in the background every %v; last failure: %w)", d.name, ErrNotConnected, d.cfg.ReconnectInterval, d.lastErr)
	}
	return fmt.Errorf("%s: %w (logging in in the background)", d.name, ErrNotConnected)
}

// Retry policy for SCSI conditions that resolve themselves.
const (
	maxUnitAttentionRetries = 8
	busyBackoffStart        = 5 * time.Millisecond
	busyBackoffMax          = 200 * time.Millisecond
)

// do runs c on the current session with the retry policy.
func (d *Disk) do(c command) (result, error) {
	s, err := d.session()
	if err != nil {
		return result{}, err
	}
	return d.runResult(s, c)
}

func (d *Disk) run(s *session, c command) error {
	_, err := d.runResult(s, c)
	return err
}

// runResult executes c on s: UNIT ATTENTION is retried a few times (a
// reconnect, a reservation change or a LUN resize raise one), and so is
// TASK ABORTED (another initiator's PREEMPT AND ABORT: the retry meets the
// UNIT ATTENTION and then the RESERVATION CONFLICT that says what
// happened); BUSY and TASK SET FULL are retried with backoff until
// Timeout. Transport errors are never retried: the caller (the mirror)
// must learn quickly.
func (d *Disk) runResult(s *session, c command) (result, error) {
	c.LUN = d.url.LUN
	var start time.Time
	backoff := busyBackoffStart
	for ua := 0; ; {
		res, err := s.exec(c)
		if err != nil {
			return res, fmt.Errorf("%s: %w", d.name, err)
		}
		err = res.check(c.Op)
		switch {
		case err == nil:
			return res, nil
		case d.absorb(err, &ua):
			continue
		case errors.Is(err, ErrBusy):
			if start.IsZero() {
				start = time.Now()
			}
			if time.Since(start) < d.cfg.Timeout {
				d.stats.busyRetries.Add(1)
				time.Sleep(backoff)
				backoff = min(2*backoff, busyBackoffMax)
				continue
			}
		}
		return res, fmt.Errorf("%s: %w", d.name, err)
	}
}

// absorb reports whether a command that ended with err is sent again
// at once: a UNIT ATTENTION or TASK ABORTED, while *retries (the
// command's count of them) is below the limit. It counts what it absorbs.
func (d *Disk) absorb(err error, retries *int) bool {
	if *retries >= maxUnitAttentionRetries {
		return false
	}
	var se *SenseError
	switch {
	case errors.As(err, &se) && se.Key == SenseUnitAttention:
		d.stats.unitAttentions.Add(1)
		d.stats.lastUA.Store(uint32(se.ASC)<<8 | uint32(se.ASCQ))
	case errors.Is(err, ErrAborted):
		d.stats.aborted.Add(1)
	default:
		return false
	}
	*retries++
	return true
}

// Name is the leg's iscsi:// URL.
func (d *Disk) Name() string { return d.name }

// Size is the LUN's capacity in bytes; 0 until the Disk is Ready.
func (d *Disk) Size() int64 {
	if !d.ready.Load() {
		return 0
	}
	return int64(d.blocks) * int64(d.blockSize)
}

// BlockSize is the LUN's logical block size; 0 until the Disk is Ready.
func (d *Disk) BlockSize() int {
	if !d.ready.Load() {
		return 0
	}
	return int(d.blockSize)
}

// Capacity is what READ CAPACITY(16) reported at the first login.
func (d *Disk) Capacity() Capacity {
	if !d.ready.Load() {
		return Capacity{}
	}
	return d.capacity
}

// Info is the LUN's identification from INQUIRY and its VPD pages; use
// Serial and DeviceIDs to check that two legs are different LUNs. Zero
// until the Disk is Ready.
func (d *Disk) Info() Inquiry {
	if !d.ready.Load() {
		return Inquiry{}
	}
	return d.inquiry
}

// Limits are the LUN's Block Limits and provisioning VPD values; zero
// until the Disk is Ready.
func (d *Disk) Limits() Limits {
	if !d.ready.Load() {
		return Limits{}
	}
	return d.limits
}

// Connected reports whether a session is currently logged in.
func (d *Disk) Connected() bool {
	_, err := d.session()
	return err == nil
}

// Close logs out and stops reconnecting. It does not flush.
func (d *Disk) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	s := d.sess
	d.sess = nil
	close(d.quit)
	d.mu.Unlock()
	if s != nil {
		s.close()
	}
	d.wg.Wait()
	return nil
}

// Params are the operational parameters negotiated on the current session
// (zero Params when disconnected).
func (d *Disk) Params() Params {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sess == nil {
		return Params{}
	}
	return d.sess.params
}

// Stats counts what the Disk absorbed on its own.
type Stats struct {
	UnitAttentions uint64 // UNIT ATTENTION conditions retried
	BusyRetries    uint64 // BUSY / TASK SET FULL retries
	Reconnects     uint64 // sessions re-established after a failure
	// Aborted counts commands the target ended with TASK ABORTED
	// (another initiator's PREEMPT AND ABORT or task management) and
	// that were sent again.
	Aborted uint64
	// Reregistrations counts reconnects after which KeepRegistered had
	// to register the new session again (tgtd forgets a session's
	// registration with the session); RegistrationsLost counts reconnects
	// that found this node preempted, so the session stayed unregistered.
	Reregistrations, RegistrationsLost uint64
	// LastUnitAttention is the ASC/ASCQ of the last UNIT ATTENTION
	// absorbed (e.g. 0x2a04 reservations released, 0x2a05 registrations
	// preempted, 0x2900 reset).
	LastUnitAttention uint16
}

// Stats returns the Disk's counters.
func (d *Disk) Stats() Stats {
	return Stats{
		UnitAttentions: d.stats.unitAttentions.Load(),
		BusyRetries:    d.stats.busyRetries.Load(),
		Reconnects:     d.stats.reconnects.Load(),
		Aborted:        d.stats.aborted.Load(),

		Reregistrations:   d.stats.reregistrations.Load(),
		RegistrationsLost: d.stats.registrationsLost.Load(),

		LastUnitAttention: uint16(d.stats.lastUA.Load()),
	}
}
