package mlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/channel"
)

// Options configure a node's management log.
type Options struct {
	Dir   string           // the log's folder (segments and spools)
	Self  heartbeat.NodeID //
	Peers []heartbeat.NodeID
	Net   channel.Net
	// Timeout bounds the delivery of one entry to one peer (default 2s);
	// past it the entry is spooled for that peer.
	Timeout time.Duration
	// SyncInterval is how often the log exchanges with every peer in the
	// background, and how long a peer that failed is not tried again by
	// Write (default 5s).
	SyncInterval time.Duration
	MaxSize      int64 // a segment is rotated past this size (default 16 MiB)
	Keep         int   // segments kept (default 8)
	// PeerUp, if set, is membership's view: a peer it reports down is
	// spooled for at once, without a delivery attempt.
	PeerUp func(heartbeat.NodeID) bool
	// Slog, if set, also receives every entry written through Log.
	Slog  *slog.Logger
	Clock func() time.Time
	Logf  func(string, ...any)
}

// Log is one node's management log.
type Log struct {
	opt   Options
	store *store

	wmu sync.Mutex // serialises writes: sequence order is delivery order

	pmu   sync.RWMutex
	peers map[heartbeat.NodeID]*peer

	stats struct{ spooled, exchanges, failures atomic.Uint64 }
}

type peer struct {
	id    heartbeat.NodeID
	spool *spool
	mu    sync.Mutex // held while delivering to or exchanging with this peer
	down  bool       // an exchange must come before the next live delivery
	retry atomic.Int64
}

// Open opens (or creates) the log in opt.Dir: a torn last record is cut,
// the next sequence number follows the highest this log holds of this
// node (high.json keeps it past rotation).
func Open(opt Options) (*Log, error) {
	if opt.Self == "" || opt.Dir == "" {
		return nil, errors.New("mlog: Self and Dir are required")
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 2 * time.Second
	}
	if opt.SyncInterval <= 0 {
		opt.SyncInterval = 5 * time.Second
	}
	if opt.MaxSize <= 0 {
		opt.MaxSize = 16 << 20
	}
	if opt.Keep <= 0 {
		opt.Keep = 8
	}
	if opt.Clock == nil {
		opt.Clock = time.Now
	}
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	st, err := openStore(opt.Dir, opt.MaxSize, opt.Keep, opt.Logf)
	if err != nil {
		return nil, err
	}
	l := &Log{opt: opt, store: st, peers: map[heartbeat.NodeID]*peer{}}
	l.SetPeers(opt.Peers)
	if opt.Net != nil {
		opt.Net.Handle(opAppend, l.handleAppend)
		opt.Net.Handle(opExchange, l.handleExchange)
		opt.Net.Handle(opDone, l.handleDone)
	}
	return l, nil
}

// Close closes the log file.
func (l *Log) Close() error { return l.store.close() }

// SetPeers sets the nodes the log is written to (after a node was removed
// for good: its spool is deleted).
func (l *Log) SetPeers(ids []heartbeat.NodeID) {
	l.pmu.Lock()
	defer l.pmu.Unlock()
	for id, p := range l.peers {
		if !slices.Contains(ids, id) {
			p.mu.Lock()
			p.spool.trim(^uint64(0))
			p.mu.Unlock()
			delete(l.peers, id)
		}
	}
	for _, id := range ids {
		if id != l.opt.Self && l.peers[id] == nil {
			// down: exchange before the first live delivery (this node may
			// have crashed between its own log and the peer's).
			l.peers[id] = &peer{id: id, spool: newSpool(l.opt.Dir, id, l.opt.Logf), down: true}
		}
	}
}

func (l *Log) peerList() []*peer {
	l.pmu.RLock()
	defer l.pmu.RUnlock()
	ps := make([]*peer, 0, len(l.peers))
	for _, p := range l.peers {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b *peer) int {
		if a.id < b.id {
			return -1
		}
		return 1
	})
	return ps
}

// Write appends one entry: durable in the local log and, for every peer,
// in the peer's log or (peer unreachable) in the local spool for that
// peer before it returns. It fails only when the local log or a spool
// cannot be written.
func (l *Log) Write(ctx context.Context, level slog.Level, component, msg string, fields ...Field) (Entry, error) {
	e := Entry{Node: l.opt.Self, Level: max(min(level, 127), -128), Component: cut(component, MaxName), Message: cut(msg, MaxMessage)}
	for _, f := range fields {
		if len(e.Fields) == MaxFields {
			break
		}
		if f.Key == "" {
			continue
		}
		e.Fields = append(e.Fields, Field{Key: cut(f.Key, MaxName), Value: cut(f.Value, MaxValue)})
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	e.Time = l.opt.Clock()
	e, err := l.store.appendOwn(e)
	if err != nil {
		return e, err
	}
	ps := l.peerList()
	errs := make([]error, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.deliver(ctx, p, e)
		}()
	}
	wg.Wait()
	return e, errors.Join(errs...)
}

func cut(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// deliver puts e in p's log, or in p's spool when p cannot be reached.
// Before the first live delivery after p was unreachable, the spools are
// exchanged (R22).
func (l *Log) deliver(ctx context.Context, p *peer, e Entry) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := l.opt.Clock()
	up := l.opt.PeerUp == nil || l.opt.PeerUp(p.id)
	if p.down && up && now.UnixNano() >= p.retry.Load() {
		if err := l.exchangeLocked(ctx, p); err != nil {
			l.opt.Logf("mlog: exchange with %s: %v", p.id, err)
			p.retry.Store(now.Add(l.opt.SyncInterval).UnixNano())
		}
	}
	if !p.down && up {
		if err := l.sendLive(ctx, p, e); err == nil {
			return nil
		} else {
			l.opt.Logf("mlog: entry %d to %s: %v: spooled", e.Seq, p.id, err)
			p.down = true
			p.retry.Store(now.Add(l.opt.SyncInterval).UnixNano())
			l.stats.failures.Add(1)
		}
	}
	p.down = true
	l.stats.spooled.Add(1)
	return p.spool.add(e)
}

// Wire messages (JSON; entries travel as their checksummed records).
const (
	opAppend   = "mlog.append"
	opExchange = "mlog.exchange"
	opDone     = "mlog.done"
)

type appendReq struct {
	Records [][]byte `json:"records"`
}

type exchangeReq struct {
	Spool [][]byte                    `json:"spool"` // the caller's spool for the callee
	Have  map[heartbeat.NodeID]uint64 `json:"have"`  // the caller's log, per origin
}

type exchangeReply struct {
	Entries [][]byte                    `json:"entries"` // what the callee holds that the caller lacks (one page)
	Have    map[heartbeat.NodeID]uint64 `json:"have"`
	Spool   bool                        `json:"spool"`          // the callee holds a spool for the caller
	More    bool                        `json:"more,omitempty"` // Entries is not all of it: ask again
}

// pageBytes bounds the records of one message, well under the channel's
// limit (channel.MaxMessage) once base64 and JSON are added, and small
// enough to travel and be fsynced within a short services.log_timeout:
// what piled up during a long cut travels in as many messages as it
// needs, and an exchange cut half way keeps the pages it got.
const pageBytes = 256 << 10

// page returns the records of the first entries of es that fit pageBytes
// (at least one) and how many entries that is.
func page(es []Entry) ([][]byte, int, error) {
	var out [][]byte
	size := 0
	for i, e := range es {
		b, err := AppendRecord(nil, e)
		if err != nil {
			return nil, 0, err
		}
		if i > 0 && size+len(b) > pageBytes {
			return out, i, nil
		}
		size += len(b)
		out = append(out, b)
	}
	return out, len(es), nil
}

type doneReq struct {
	Push [][]byte                    `json:"push"`
	Have map[heartbeat.NodeID]uint64 `json:"have"`
}

func records(es []Entry) ([][]byte, error) {
	out := make([][]byte, 0, len(es))
	for _, e := range es {
		b, err := AppendRecord(nil, e)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func decodeRecords(rs [][]byte) ([]Entry, error) {
	es := make([]Entry, 0, len(rs))
	for _, r := range rs {
		e, n, err := DecodeRecord(r)
		if err == nil && n != len(r) {
			err = fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(r)-n)
		}
		if err != nil {
			return nil, err
		}
		es = append(es, e)
	}
	return es, nil
}

func (l *Log) call(ctx context.Context, to heartbeat.NodeID, op string, req, reply any) error {
	return channel.CallJSON(ctx, l.opt.Net, l.opt.Timeout, to, op, req, reply)
}

func (l *Log) sendLive(ctx context.Context, p *peer, e Entry) error {
	if l.opt.Net == nil {
		return errors.New("no channel")
	}
	rs, err := records([]Entry{e})
	if err != nil {
		return err
	}
	return l.call(ctx, p.id, opAppend, appendReq{Records: rs}, nil)
}

// exchangeLocked runs the exchange with p (p.mu held): this node's spool
// for p goes to p's log, p's spool for this node comes to the local log,
// and both sides get what the other holds and they lack (entries of
// nodes that are down now, relayed), a page (pageBytes) per message, as
// many messages as it takes. Each side removes a spool only after
// the other reported holding its entries, and every append skips entries
// held already, so an exchange cut at any point (a crash, a cut cable) is
// simply run again.
func (l *Log) exchangeLocked(ctx context.Context, p *peer) error {
	if l.opt.Net == nil {
		return errors.New("no channel")
	}
	var rep exchangeReply
	for {
		// One page of the spool out, one page of what p holds and this
		// log lacks in, until both are through.
		sp, err := p.spool.entries()
		if err != nil {
			return err
		}
		rs, n, err := page(sp)
		if err != nil {
			return err
		}
		rep = exchangeReply{}
		if err := l.call(ctx, p.id, opExchange, exchangeReq{Spool: rs, Have: l.store.vector()}, &rep); err != nil {
			return err
		}
		got, err := decodeRecords(rep.Entries)
		if err != nil {
			return err
		}
		if _, err := l.store.append(got, appendGaps); err != nil {
			return err
		}
		if err := p.spool.trim(rep.Have[l.opt.Self]); err != nil {
			return err
		}
		// More of the spool only if p took this page whole: past a hole
		// (see appendPrefix) the push below brings the rest.
		spoolMore := n < len(sp) && rep.Have[l.opt.Self] >= sp[n-1].Seq
		if !spoolMore && !rep.More {
			break
		}
		if !spoolMore && len(got) == 0 {
			return fmt.Errorf("exchange with %s makes no progress", p.id)
		}
	}
	push, err := l.store.missing(rep.Have)
	if err != nil {
		return err
	}
	held := rep.Have[l.opt.Self] // of this node's entries, what p holds once the push is through
	for _, e := range push {
		if e.Node == l.opt.Self {
			held = max(held, e.Seq)
		}
	}
	for first := true; len(push) > 0 || (first && rep.Spool); first = false {
		prs, n, err := page(push)
		if err != nil {
			return err
		}
		if err := l.call(ctx, p.id, opDone, doneReq{Push: prs, Have: l.store.vector()}, nil); err != nil {
			return err
		}
		push = push[n:]
	}
	// p took only the part of the spool before a hole (see appendPrefix); the
	// push brought the rest from this log.
	if err := p.spool.trim(held); err != nil {
		return err
	}
	if p.spool.exists() {
		return errors.New("spool still holds entries the peer lacks")
	}
	p.down = false
	l.stats.exchanges.Add(1)
	return nil
}

func (l *Log) handleAppend(from heartbeat.NodeID, body []byte) ([]byte, error) {
	var req appendReq
	if err := channel.DecodeJSON(body, &req); err != nil {
		return nil, err
	}
	es, err := decodeRecords(req.Records)
	if err != nil {
		return nil, err
	}
	for _, e := range es {
		if e.Node != from {
			return nil, fmt.Errorf("mlog: %s sent an entry of %s as its own", from, e.Node)
		}
	}
	_, err = l.store.append(es, appendStrict)
	return nil, err
}

func (l *Log) handleExchange(from heartbeat.NodeID, body []byte) ([]byte, error) {
	var req exchangeReq
	if err := channel.DecodeJSON(body, &req); err != nil {
		return nil, err
	}
	es, err := decodeRecords(req.Spool)
	if err != nil {
		return nil, err
	}
	if _, err := l.store.append(es, appendPrefix); err != nil {
		return nil, err
	}
	missing, err := l.store.missing(req.Have)
	if err != nil {
		return nil, err
	}
	rs, n, err := page(missing)
	if err != nil {
		return nil, err
	}
	rep := exchangeReply{Entries: rs, Have: l.store.vector(), More: n < len(missing)}
	l.pmu.RLock()
	p := l.peers[from]
	l.pmu.RUnlock()
	rep.Spool = p != nil && p.spool.exists()
	return json.Marshal(rep)
}

func (l *Log) handleDone(from heartbeat.NodeID, body []byte) ([]byte, error) {
	var req doneReq
	if err := channel.DecodeJSON(body, &req); err != nil {
		return nil, err
	}
	es, err := decodeRecords(req.Push)
	if err != nil {
		return nil, err
	}
	if _, err := l.store.append(es, appendGaps); err != nil {
		return nil, err
	}
	l.pmu.RLock()
	p := l.peers[from]
	l.pmu.RUnlock()
	if p != nil {
		if err := p.spool.trim(req.Have[l.opt.Self]); err != nil {
			return nil, err
		}
		p.retry.Store(0) // it is back: the next write exchanges at once
	}
	return nil, nil
}

// Sync exchanges with every peer that membership does not report down,
// now. It returns the peers it could not reach.
func (l *Log) Sync(ctx context.Context) []heartbeat.NodeID {
	var failed []heartbeat.NodeID
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range l.peerList() {
		if l.opt.PeerUp != nil && !l.opt.PeerUp(p.id) {
			mu.Lock()
			failed = append(failed, p.id)
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.mu.Lock()
			defer p.mu.Unlock()
			if err := l.exchangeLocked(ctx, p); err != nil {
				p.down = true
				p.retry.Store(l.opt.Clock().Add(l.opt.SyncInterval).UnixNano())
				mu.Lock()
				failed = append(failed, p.id)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(failed)
	return failed
}

// Run exchanges with every peer every SyncInterval until ctx ends, so the
// logs converge even while nothing is written.
func (l *Log) Run(ctx context.Context) {
	t := time.NewTicker(l.opt.SyncInterval)
	defer t.Stop()
	for {
		l.Sync(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
