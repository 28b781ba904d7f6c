package iscsi

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"time"
)

// loggedIn is a connection that finished login, before full-feature I/O.
type loggedIn struct {
	nc     net.Conn
	br     *bufio.Reader
	params Params
	last   sn
	tsih   uint16
}

// dialLogin connects to host and logs in to target (discovery when target
// is empty). The whole exchange is bounded by cfg.Timeout.
func dialLogin(ctx context.Context, cfg *Config, host, urlUser, target string) (*loggedIn, error) {
	chap, err := cfg.chap(urlUser)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	nc, err := cfg.Dial(ctx, "tcp", host)
	if err != nil {
		return nil, fmt.Errorf("%w: connecting to %s: %w", ErrDisconnected, host, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	m := newLoginMachine(loginSetup{
		InitiatorName: cfg.InitiatorName, TargetName: target, Discovery: target == "",
		ISID: cfg.ISID, Want: cfg.wantParams(), CHAP: chap,
	})
	br := bufio.NewReaderSize(nc, 256<<10)
	params, last, tsih, err := runLogin(readWriter{br, nc}, m, 0, 0)
	if err != nil {
		nc.Close()
		what := "target " + target
		if target == "" {
			what = "discovery"
		}
		return nil, fmt.Errorf("iscsi: login to %s at %s: %w", what, host, err)
	}
	if !stop() {
		nc.Close()
		return nil, fmt.Errorf("%w: login to %s timed out", ErrTimeout, host)
	}
	nc.SetDeadline(time.Time{})
	return &loggedIn{nc: nc, br: br, params: params, last: last, tsih: tsih}, nil
}

type readWriter struct {
	r *bufio.Reader
	w net.Conn
}

func (rw readWriter) Read(p []byte) (int, error)  { return rw.r.Read(p) }
func (rw readWriter) Write(p []byte) (int, error) { return rw.w.Write(p) }

// Discovered is one target a SendTargets discovery returned.
type Discovered struct {
	Name      string
	Addresses []string // "host:port,tpgt"
}

// Discover logs in to a discovery session at host[:port] and returns the
// targets it reports (SendTargets=All).
func Discover(ctx context.Context, host string, cfg Config) ([]Discovered, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	host = HostPort(host)
	li, err := dialLogin(ctx, &cfg, host, "", "")
	if err != nil {
		return nil, err
	}
	defer li.nc.Close()
	li.nc.SetDeadline(time.Now().Add(cfg.Timeout))
	d := Digests{Header: li.params.HeaderDigest, Data: li.params.DataDigest}
	var data []byte
	ttt := uint32(reservedTag)
	exp := li.last.StatSN + 1
	for round := 0; ; round++ {
		if round > 64 {
			return nil, fmt.Errorf("%w: SendTargets answer did not end", ErrProtocol)
		}
		req := textRequest{Final: true, ITT: 1, TTT: ttt, CmdSN: li.last.ExpCmdSN, ExpStatSN: exp}
		if round == 0 {
			req.Data = encodeText([]kv{{"SendTargets", "All"}})
		}
		bufs, err := req.encode().writeBuffers(d)
		if err != nil {
			return nil, err
		}
		if _, err := bufs.WriteTo(li.nc); err != nil {
			return nil, fmt.Errorf("iscsi: discovery at %s: %w", host, err)
		}
		p, err := ReadPDU(li.br, d, int(li.params.MaxRecvDataSegmentLength))
		if err != nil {
			return nil, fmt.Errorf("iscsi: discovery at %s: %w", host, err)
		}
		if p.Opcode() == opReject {
			return nil, fmt.Errorf("%w: target rejected SendTargets", ErrProtocol)
		}
		r, err := decodeTextResponse(p)
		if err != nil {
			return nil, err
		}
		exp = r.StatSN + 1
		data = append(data, r.Data...)
		if len(data) > 1<<20 {
			return nil, fmt.Errorf("%w: SendTargets answer over 1 MiB", ErrProtocol)
		}
		if r.Final {
			break
		}
		ttt = r.TTT
	}
	// Log out politely; errors do not matter any more.
	lo := logoutRequest{ITT: 2, CmdSN: li.last.ExpCmdSN, ExpStatSN: exp}
	if bufs, err := lo.encode().writeBuffers(d); err == nil {
		bufs.WriteTo(li.nc)
		ReadPDU(li.br, d, int(li.params.MaxRecvDataSegmentLength))
	}
	return parseSendTargets(data)
}

func parseSendTargets(data []byte) ([]Discovered, error) {
	pairs, err := decodeText(data)
	if err != nil {
		return nil, err
	}
	var out []Discovered
	for _, p := range pairs {
		switch p.Key {
		case "TargetName":
			out = append(out, Discovered{Name: p.Value})
		case "TargetAddress":
			if len(out) == 0 {
				return nil, fmt.Errorf("%w: TargetAddress before any TargetName", ErrProtocol)
			}
			out[len(out)-1].Addresses = append(out[len(out)-1].Addresses, strings.TrimSpace(p.Value))
		}
	}
	return out, nil
}
