package iscsi

import (
	"fmt"
	"io"
)

// Login stages (CSG/NSG values).
const (
	stageSecurity    = 0
	stageOperational = 1
	stageFullFeature = 3
)

// loginSetup is what a login needs to know.
type loginSetup struct {
	InitiatorName string
	TargetName    string // empty for discovery
	Discovery     bool
	ISID          [6]byte
	Want          Params
	CHAP          *chapState // nil: AuthMethod=None
}

// loginMachine is the initiator's login phase as a pure state machine:
// first() gives the first request's flags and pairs, next() consumes each
// Login Response and gives the next request, until done.
type loginMachine struct {
	setup   loginSetup
	stage   byte
	step    int // within the security stage: 0 AuthMethod, 1 CHAP_A, 2 CHAP_R sent
	neg     *negotiator
	opsSent bool
	done    bool
	tsih    uint16
}

// loginStep is one request to send.
type loginStep struct {
	Transit  bool
	CSG, NSG byte
	Pairs    []kv
}

func newLoginMachine(s loginSetup) *loginMachine {
	return &loginMachine{setup: s, neg: newNegotiator(s.Want, s.Discovery)}
}

func (m *loginMachine) first() loginStep {
	s := m.setup
	pairs := []kv{{"InitiatorName", s.InitiatorName}}
	if s.Discovery {
		pairs = append(pairs, kv{"SessionType", "Discovery"})
	} else {
		pairs = append(pairs, kv{"SessionType", "Normal"}, kv{"TargetName", s.TargetName})
	}
	if s.CHAP != nil {
		pairs = append(pairs, kv{"AuthMethod", "CHAP"})
		return loginStep{Transit: false, CSG: stageSecurity, NSG: stageOperational, Pairs: pairs}
	}
	pairs = append(pairs, kv{"AuthMethod", "None"})
	return loginStep{Transit: true, CSG: stageSecurity, NSG: stageOperational, Pairs: pairs}
}

// loginStatusError turns a non-zero Status-Class/Detail into an error.
func loginStatusError(class, detail byte) error {
	switch {
	case class == 1:
		return fmt.Errorf("%w: target redirects the login (status %02x%02x); redirection is not supported, use the address it names", ErrLogin, class, detail)
	case class == 2 && detail == 1:
		return fmt.Errorf("%w: the target rejected our CHAP credentials (check user and secret)", ErrAuth)
	case class == 2 && detail == 2:
		return fmt.Errorf("%w: this initiator is not allowed to access the target (check the target's ACL for our IQN)", ErrLogin)
	case class == 2 && (detail == 3 || detail == 4):
		return fmt.Errorf("%w: the target name was not found on this portal", ErrLogin)
	case class == 2:
		return fmt.Errorf("%w: initiator error %02x%02x", ErrLogin, class, detail)
	case class == 3:
		return fmt.Errorf("%w: target error %02x%02x (out of resources or service unavailable); retrying later may work", ErrLogin, class, detail)
	}
	return fmt.Errorf("%w: status %02x%02x", ErrLogin, class, detail)
}

// next consumes a response and returns the next request. When done is
// true the session is in full feature phase and no request follows.
func (m *loginMachine) next(r loginResponse) (step loginStep, done bool, err error) {
	if r.StatusClass == 2 && r.StatusDetail == 1 && m.setup.CHAP == nil {
		// We sent no credentials: the target (Linux LIO, for one) refuses
		// AuthMethod=None for this initiator.
		return step, false, fmt.Errorf("%w: the target requires CHAP for this initiator; configure a CHAP user and secret for this leg", ErrAuth)
	}
	if r.StatusClass != 0 {
		return step, false, loginStatusError(r.StatusClass, r.StatusDetail)
	}
	if r.CSG != m.stage {
		return step, false, fmt.Errorf("%w: login response in stage %d, we are in stage %d", ErrProtocol, r.CSG, m.stage)
	}
	pairs, err := decodeText(r.Data)
	if err != nil {
		return step, false, err
	}
	if r.Continue {
		return step, false, fmt.Errorf("%w: login responses spanning several PDUs are not supported", ErrProtocol)
	}
	m.tsih = r.TSIH
	switch m.stage {
	case stageSecurity:
		return m.security(r, pairs)
	case stageOperational:
		return m.operational(r, pairs)
	}
	return step, false, fmt.Errorf("%w: login response after login completed", ErrProtocol)
}

func (m *loginMachine) security(r loginResponse, pairs []kv) (loginStep, bool, error) {
	sec := loginStep{CSG: stageSecurity, NSG: stageOperational}
	chap := m.setup.CHAP
	switch m.step {
	case 0:
		m.step = 1
		method, ok := lookup(pairs, "AuthMethod")
		if chap == nil {
			if ok && method != "None" {
				return sec, false, fmt.Errorf("%w: target requires AuthMethod=%s; configure a CHAP user and secret", ErrAuth, method)
			}
			return m.afterSecurity(r)
		}
		if method != "CHAP" {
			return sec, false, fmt.Errorf("%w: target answered AuthMethod=%.20q to our CHAP offer", ErrAuth, method)
		}
		sec.Pairs = []kv{{"CHAP_A", chapMD5}}
		return sec, false, nil
	case 1:
		m.step = 2
		ans, err := chap.answer(pairs)
		if err != nil {
			return sec, false, err
		}
		sec.Pairs, sec.Transit = ans, true
		return sec, false, nil
	default:
		if chap != nil && m.step == 2 {
			if err := chap.verify(pairs); err != nil {
				return sec, false, err
			}
			m.step = 3
		}
		return m.afterSecurity(r)
	}
}

// afterSecurity moves on once the target agrees to leave the security stage.
func (m *loginMachine) afterSecurity(r loginResponse) (loginStep, bool, error) {
	if !r.Transit {
		// The target wants another round in the security stage.
		return loginStep{Transit: true, CSG: stageSecurity, NSG: stageOperational}, false, nil
	}
	switch r.NSG {
	case stageOperational:
		m.stage = stageOperational
		m.opsSent = true
		return loginStep{Transit: true, CSG: stageOperational, NSG: stageFullFeature, Pairs: m.neg.offer()}, false, nil
	case stageFullFeature:
		m.stage = stageFullFeature
		return loginStep{}, true, nil
	}
	return loginStep{}, false, fmt.Errorf("%w: target moved to login stage %d", ErrProtocol, r.NSG)
}

func (m *loginMachine) operational(r loginResponse, pairs []kv) (loginStep, bool, error) {
	reply, err := m.neg.apply(pairs)
	if err != nil {
		return loginStep{}, false, err
	}
	if r.Transit && len(reply) == 0 {
		if r.NSG != stageFullFeature {
			return loginStep{}, false, fmt.Errorf("%w: target moved to login stage %d", ErrProtocol, r.NSG)
		}
		m.stage = stageFullFeature
		return loginStep{}, true, nil
	}
	return loginStep{Transit: true, CSG: stageOperational, NSG: stageFullFeature, Pairs: reply}, false, nil
}

// params is the negotiated result (RFC defaults for a security-only login).
func (m *loginMachine) params() Params { return m.neg.result() }

// maxLoginRounds bounds a login against a target that never finishes.
const maxLoginRounds = 16

// runLogin drives m over rw (no digests during login). It returns the
// negotiated parameters, the TSIH and the next ExpStatSN and CmdSN state.
func runLogin(rw io.ReadWriter, m *loginMachine, itt uint32, cmdSN uint32) (Params, sn, uint16, error) {
	step := m.first()
	var last sn
	expStatSN := uint32(0)
	for round := 0; ; round++ {
		if round >= maxLoginRounds {
			return Params{}, last, 0, fmt.Errorf("%w: login did not complete in %d rounds", ErrProtocol, maxLoginRounds)
		}
		req := loginRequest{
			Transit: step.Transit, CSG: step.CSG, NSG: step.NSG,
			ISID: m.setup.ISID, TSIH: 0, ITT: itt, CID: 0,
			CmdSN: cmdSN, ExpStatSN: expStatSN, Data: encodeText(step.Pairs),
		}
		if step.NSG == stageFullFeature && !step.Transit {
			req.NSG = 0
		}
		p := req.encode()
		bufs, err := p.writeBuffers(Digests{})
		if err != nil {
			return Params{}, last, 0, err
		}
		if _, err := bufs.WriteTo(rw); err != nil {
			return Params{}, last, 0, fmt.Errorf("iscsi: sending login request: %w", err)
		}
		rp, err := ReadPDU(rw, Digests{}, 65536)
		if err != nil {
			return Params{}, last, 0, fmt.Errorf("iscsi: reading login response: %w", err)
		}
		resp, err := decodeLoginResponse(rp)
		if err != nil {
			return Params{}, last, 0, err
		}
		if resp.ITT != itt {
			return Params{}, last, 0, fmt.Errorf("%w: login response for ITT %#x, expected %#x", ErrProtocol, resp.ITT, itt)
		}
		last = resp.sn
		expStatSN = resp.StatSN + 1
		var done bool
		step, done, err = m.next(resp)
		if err != nil {
			return Params{}, last, 0, err
		}
		if done {
			return m.params(), last, resp.TSIH, nil
		}
	}
}
