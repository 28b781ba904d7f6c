package traffic

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/channel"
	"github.com/hamirror/hamirror/heartbeat/registry"
)

// Options configure a node's traffic service.
type Options struct {
	Self     heartbeat.NodeID
	Dir      string // data files: DIR/NODE.dat
	Net      channel.Net
	Sampler  Sampler       // default NetlinkSampler{}
	Interval time.Duration // sampling interval (default 10s)
	// Table returns the current index table (the registry's).
	Table func() registry.Table
	// ReportFailed tells the coordinator this node's backup target failed (R9).
	ReportFailed func(ctx context.Context, target heartbeat.NodeID) error
	// Note records events for the management log.
	Note    func(msg string)
	Timeout time.Duration // one request to a peer (default 2s)
	Clock   func() time.Time
	Logf    func(string, ...any)
}

// Service samples this node's NICs into its data file, streams the file
// to the backup target, keeps the files of the nodes it backs up, and
// answers traffic queries.
type Service struct {
	opt  Options
	kick chan struct{}

	mu       sync.Mutex
	files    map[heartbeat.NodeID]*file
	sent     map[heartbeat.NodeID]uint64 // per target: the highest of our samples it confirmed
	reported map[string]bool             // target|table version already reported failed
	next     uint64
}

const (
	opAppend = "traffic.append"
	opRead   = "traffic.read"
	// chunk bounds the samples of one request (well under the channel's
	// message limit).
	chunk = 2000
)

// New opens the data files and registers the request handlers.
func New(opt Options) (*Service, error) {
	if opt.Sampler == nil {
		opt.Sampler = NetlinkSampler{}
	}
	if opt.Interval <= 0 {
		opt.Interval = 10 * time.Second
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 2 * time.Second
	}
	if opt.Clock == nil {
		opt.Clock = time.Now
	}
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	if opt.Note == nil {
		opt.Note = func(string) {}
	}
	if err := os.MkdirAll(opt.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("traffic: %w", err)
	}
	s := &Service{opt: opt, kick: make(chan struct{}, 1), files: map[heartbeat.NodeID]*file{},
		sent: map[heartbeat.NodeID]uint64{}, reported: map[string]bool{}}
	ents, err := os.ReadDir(opt.Dir)
	if err != nil {
		return nil, fmt.Errorf("traffic: %w", err)
	}
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), ".dat"); ok && id != "" {
			if _, err := s.file(heartbeat.NodeID(id)); err != nil {
				return nil, err
			}
		}
	}
	own, err := s.file(opt.Self)
	if err != nil {
		return nil, err
	}
	s.next = own.highest() + 1
	opt.Net.Handle(opAppend, s.handleAppend)
	opt.Net.Handle(opRead, s.handleRead)
	return s, nil
}

func (s *Service) file(id heartbeat.NodeID) (*file, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.files[id]; f != nil {
		return f, nil
	}
	if len(id) > maxName || strings.ContainsAny(string(id), "/\x00") || id == "." || id == ".." {
		return nil, fmt.Errorf("traffic: node name %q", id)
	}
	f, err := openFile(s.opt.Dir, id, s.opt.Logf)
	if err != nil {
		return nil, err
	}
	s.files[id] = f
	return f, nil
}

// Kick makes the sender look at the table again (call it on a new table).
func (s *Service) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// SampleNow takes one sample into the local data file.
func (s *Service) SampleNow() (Sample, error) {
	cs, err := s.opt.Sampler.Sample()
	if err != nil {
		return Sample{}, err
	}
	own, _ := s.file(s.opt.Self)
	s.mu.Lock()
	smp := Sample{Node: s.opt.Self, Seq: s.next, Time: s.opt.Clock(), Ifaces: cs}
	s.next++
	s.mu.Unlock()
	if _, err := own.append([]Sample{smp}); err != nil {
		return smp, err
	}
	return smp, nil
}

// Run samples every Interval and streams to the backup target until ctx
// ends.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.opt.Interval)
	defer t.Stop()
	for {
		if _, err := s.SampleNow(); err != nil {
			s.opt.Logf("traffic: sampling: %v", err)
		}
		s.Push(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
	}
}

type appendReq struct {
	Node    heartbeat.NodeID `json:"node"`
	Records [][]byte         `json:"records"`
}

type appendReply struct {
	High uint64 `json:"high"` // the highest sample of node the target holds
}

type readReq struct {
	Node  heartbeat.NodeID `json:"node"`
	After uint64           `json:"after"`
	Since time.Time        `json:"since,omitzero"`
	Limit int              `json:"limit"`
}

type readReply struct {
	Samples [][]byte `json:"samples"`
	High    uint64   `json:"high"`
}

func (s *Service) call(ctx context.Context, to heartbeat.NodeID, op string, req, reply any) error {
	return channel.CallJSON(ctx, s.opt.Net, s.opt.Timeout, to, op, req, reply)
}

func encode(ss []Sample) ([][]byte, error) {
	out := make([][]byte, 0, len(ss))
	for _, x := range ss {
		b, err := AppendRecord(nil, x)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func decode(node heartbeat.NodeID, rs [][]byte) ([]Sample, error) {
	out := make([]Sample, 0, len(rs))
	for _, r := range rs {
		x, n, err := DecodeRecord(r)
		if err == nil && n != len(r) {
			err = fmt.Errorf("%w: trailing bytes", ErrCorrupt)
		}
		if err == nil && x.Node != node {
			err = fmt.Errorf("%w: a sample of %s among %s's", ErrCorrupt, x.Node, node)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, nil
}

func (s *Service) handleAppend(from heartbeat.NodeID, body []byte) ([]byte, error) {
	var req appendReq
	if err := channel.DecodeJSON(body, &req); err != nil {
		return nil, err
	}
	ss, err := decode(req.Node, req.Records)
	if err != nil {
		return nil, err
	}
	f, err := s.file(req.Node)
	if err != nil {
		return nil, err
	}
	high, err := f.append(ss)
	if err != nil {
		return nil, err
	}
	return json.Marshal(appendReply{High: high})
}

func (s *Service) handleRead(_ heartbeat.NodeID, body []byte) ([]byte, error) {
	var req readReq
	if err := channel.DecodeJSON(body, &req); err != nil {
		return nil, err
	}
	s.mu.Lock()
	f := s.files[req.Node]
	s.mu.Unlock()
	if f == nil {
		return json.Marshal(readReply{})
	}
	limit := req.Limit
	if limit <= 0 || limit > chunk {
		limit = chunk
	}
	ss, err := f.read(req.After, req.Since, limit)
	if err != nil {
		return nil, err
	}
	rs, err := encode(ss)
	if err != nil {
		return nil, err
	}
	return json.Marshal(readReply{Samples: rs, High: f.highest()})
}

// send streams node's file to target from what target confirmed, in
// chunks, and returns the highest target holds.
func (s *Service) send(ctx context.Context, node, target heartbeat.NodeID, from uint64) (uint64, error) {
	f, err := s.file(node)
	if err != nil {
		return from, err
	}
	high := from
	for {
		ss, err := f.read(high, time.Time{}, chunk)
		if err != nil {
			return high, err
		}
		rs, err := encode(ss)
		if err != nil {
			return high, err
		}
		var rep appendReply
		if err := s.call(ctx, target, opAppend, appendReq{Node: node, Records: rs}, &rep); err != nil {
			return high, err
		}
		if len(ss) == 0 || rep.High >= f.highest() {
			return rep.High, nil
		}
		if rep.High <= high {
			return rep.High, fmt.Errorf("traffic: %s does not take %s's samples past %d", target, node, rep.High)
		}
		high = rep.High
	}
}

// Push brings the backup target up to date with this node's data file,
// and hands the data of Failed nodes this node holds but no longer backs
// up to their current targets. A target that cannot take the data is
// reported to the coordinator once per table version (R9); the new table
// names a new target, to which everything not yet there is sent.
func (s *Service) Push(ctx context.Context) {
	t := s.opt.Table()
	row, ok := t.Row(s.opt.Self)
	if ok && row.BackupTarget != "" && row.BackupTarget != s.opt.Self {
		target := row.BackupTarget
		s.mu.Lock()
		from, known := s.sent[target]
		s.mu.Unlock()
		var err error
		if !known { // ask what it holds: an append of nothing answers that
			var rep appendReply
			err = s.call(ctx, target, opAppend, appendReq{Node: s.opt.Self, Records: [][]byte{}}, &rep)
			from = rep.High
		}
		high := from
		if err == nil {
			high, err = s.send(ctx, s.opt.Self, target, from)
		}
		if err != nil {
			high, err = s.send(ctx, s.opt.Self, target, 0) // once more, from what it says it holds
		}
		s.mu.Lock()
		if err == nil {
			s.sent[target] = high
		} else {
			delete(s.sent, target)
		}
		key := fmt.Sprintf("%s|%d|%d", target, t.Term, t.Version)
		// A node that is Failed itself does not report: another node could
		// not reach it, so its own links are the suspect (it registers
		// again first, and sends to the same target meanwhile).
		report := err != nil && !s.reported[key] && row.State != heartbeat.Failed
		if report {
			s.reported[key] = true
		}
		s.mu.Unlock()
		if report {
			s.opt.Note(fmt.Sprintf("sending traffic data to backup target %s failed: %v; reporting it to coordinator %s", target, err, t.Coordinator))
			if rerr := s.opt.ReportFailed(ctx, target); rerr != nil {
				s.opt.Logf("traffic: reporting %s failed: %v", target, rerr)
				s.mu.Lock()
				delete(s.reported, key) // try again next time
				s.mu.Unlock()
			}
		}
	}
	s.handOff(ctx, t)
}

// handOff sends the data this node holds for Failed (or removed) nodes
// whose target is now another node: they cannot send it themselves.
func (s *Service) handOff(ctx context.Context, t registry.Table) {
	s.mu.Lock()
	var held []heartbeat.NodeID
	for id := range s.files {
		if id != s.opt.Self {
			held = append(held, id)
		}
	}
	s.mu.Unlock()
	for _, id := range held {
		row, ok := t.Row(id)
		if !ok || row.State != heartbeat.Failed || row.BackupTarget == "" || row.BackupTarget == s.opt.Self {
			continue
		}
		if _, err := s.send(ctx, id, row.BackupTarget, 0); err != nil {
			s.opt.Logf("traffic: handing %s's data to %s: %v", id, row.BackupTarget, err)
		}
	}
}

// CatchUp pulls, from every Normal node that backs up to this node, the
// samples this node lacks (a returning node, before it takes any role).
func (s *Service) CatchUp(ctx context.Context) error {
	t := s.opt.Table()
	var errs []error
	for _, n := range t.Nodes {
		if n.ID == s.opt.Self || n.State != heartbeat.Normal || n.BackupTarget != s.opt.Self {
			continue
		}
		f, err := s.file(n.ID)
		if err != nil {
			return err
		}
		for {
			var rep readReply
			if err := s.call(ctx, n.ID, opRead, readReq{Node: n.ID, After: f.highest(), Limit: chunk}, &rep); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", n.ID, err))
				break
			}
			ss, err := decode(n.ID, rep.Samples)
			if err != nil {
				errs = append(errs, err)
				break
			}
			if _, err := f.append(ss); err != nil {
				return err
			}
			if len(ss) == 0 || f.highest() >= rep.High {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// Answer is the reply to a traffic query (R10).
type Answer struct {
	Node    heartbeat.NodeID `json:"node"`
	State   string           `json:"state"`  // Normal, Failed or Removed
	Source  heartbeat.NodeID `json:"source"` // the node that answered
	Note    string           `json:"note,omitempty"`
	Samples []Sample         `json:"samples"`
}

// Query answers "traffic NODE --since T" on any node: from NODE while it
// is Normal, from its backup target when it is Failed (or was removed);
// a Normal node that does not answer is served by its backup target, and
// the answer says so.
func (s *Service) Query(ctx context.Context, node heartbeat.NodeID, since time.Time, limit int) (Answer, error) {
	t := s.opt.Table()
	a := Answer{Node: node}
	var backup heartbeat.NodeID
	if row, ok := t.Row(node); ok {
		a.State, backup = row.State.String(), row.BackupTarget
		a.Source = node
		if row.State == heartbeat.Failed {
			a.Source = backup
		}
	} else if rm, ok := t.IsRemoved(node); ok {
		a.State, a.Source, backup = "Removed", rm.BackupTarget, rm.BackupTarget
	} else if t.Version == 0 {
		return a, errors.New("no index table yet: the coordinator has not built it; try again in a few seconds")
	} else {
		return a, fmt.Errorf("%s is not in the index table (mirrorctl nodes lists the nodes)", node)
	}
	if a.Source == "" {
		return a, fmt.Errorf("%s is %s and has no backup target: its data is only on %s", node, a.State, node)
	}
	ss, err := s.readFrom(ctx, a.Source, node, since, limit)
	if err != nil && a.Source == node && backup != "" && backup != node {
		a.Note = fmt.Sprintf("%s is Normal in the index table but did not answer (%v); answered by its backup target %s", node, err, backup)
		a.Source = backup
		ss, err = s.readFrom(ctx, backup, node, since, limit)
	}
	if err != nil {
		return a, fmt.Errorf("traffic data of %s from %s: %w", node, a.Source, err)
	}
	a.Samples = ss
	return a, nil
}

func (s *Service) readFrom(ctx context.Context, src, node heartbeat.NodeID, since time.Time, limit int) ([]Sample, error) {
	if limit <= 0 || limit > chunk {
		limit = chunk
	}
	if src == s.opt.Self {
		s.mu.Lock()
		f := s.files[node]
		s.mu.Unlock()
		if f == nil {
			return nil, nil
		}
		ss, err := f.read(0, since, 0)
		if len(ss) > limit {
			ss = ss[len(ss)-limit:]
		}
		return ss, err
	}
	// Page through the remote file, keeping the newest limit samples.
	var out []Sample
	after := uint64(0)
	for {
		var rep readReply
		if err := s.call(ctx, src, opRead, readReq{Node: node, After: after, Since: since, Limit: chunk}, &rep); err != nil {
			return nil, err
		}
		ss, err := decode(node, rep.Samples)
		if err != nil {
			return nil, err
		}
		out = append(out, ss...)
		if len(out) > limit {
			out = out[len(out)-limit:]
		}
		if len(ss) == 0 || ss[len(ss)-1].Seq >= rep.High {
			return out, nil
		}
		after = ss[len(ss)-1].Seq
	}
}

// Held lists the nodes whose data this node holds, with the highest
// sample of each (status and tests).
func (s *Service) Held() map[heartbeat.NodeID]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[heartbeat.NodeID]uint64{}
	for id, f := range s.files {
		if h := f.highest(); h > 0 {
			out[id] = h
		}
	}
	return out
}
