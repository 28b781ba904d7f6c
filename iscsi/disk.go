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
	cfg.EnsureDefaults()
	cfg.ISID = SessionISID(cfg.ISID, cfg.Purpose, u.Target, u.LUN)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Disk{url: u, name: u.String(), cfg: cfg, quit: make(chan struct{})}
	s, err := d.connect(ctx)
	if err != nil {
		return nil, err
	}
	d.sess = s
	if err := d.identify(); err != nil {
		s.close()
		return nil, fmt.Errorf("%s: %w", d.name, err)
	}
	d.wg.Add(1)
	go d.maintain()
	return d, nil
}

func (d *Disk) connect(ctx context.Context) (*session, error) {
	li, err := dialLogin(ctx, &d.cfg, d.url.Host, d.url.User, d.url.Target)
	if err != nil {
		return nil, err
	}
	live := liveness{Timeout: d.cfg.Timeout, PingInterval: d.cfg.PingInterval}
	return newSession(li.nc, li.br, li.params, li.last, live, d.cfg.QueueDepth, d.cfg.Now), nil
}

// identify runs the identification commands on a fresh session.
func (d *Disk) identify() error {
	if err := d.TestUnitReady(); err != nil {
		return err
	}
	inq, err := d.Inquiry()
	if err != nil {
		return err
	}
	if inq.DeviceType != 0 {
		return fmt.Errorf("iscsi: LUN %d is SCSI device type %#x, not a disk", d.url.LUN, inq.DeviceType)
	}
	capa, err := d.ReadCapacity()
	if err != nil {
		return err
	}
	d.inquiry, d.capacity = inq, capa
	d.blockSize, d.blocks = capa.BlockSize, capa.Blocks
	d.limits, err = d.readLimits()
	return err
}

// maintain rebuilds the session whenever it dies, until Close.
func (d *Disk) maintain() {
	defer d.wg.Done()
	for {
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
		select {
		case <-time.After(d.cfg.ReconnectInterval):
		case <-d.quit:
			return
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
		// same LUN and, if asked, holds its registration again.
		err = d.revalidate(ns)
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

// Size is the LUN's capacity in bytes.
func (d *Disk) Size() int64 { return int64(d.blocks) * int64(d.blockSize) }

// BlockSize is the LUN's logical block size.
func (d *Disk) BlockSize() int { return int(d.blockSize) }

// Capacity is what READ CAPACITY(16) reported at open.
func (d *Disk) Capacity() Capacity { return d.capacity }

// Info is the LUN's identification from INQUIRY and its VPD pages; use
// Serial and DeviceIDs to check that two legs are different LUNs.
func (d *Disk) Info() Inquiry { return d.inquiry }

// Limits are the LUN's Block Limits and provisioning VPD values.
func (d *Disk) Limits() Limits { return d.limits }

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
