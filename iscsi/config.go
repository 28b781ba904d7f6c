package iscsi

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

// Config tunes an initiator. The zero value works: EnsureDefaults fills in
// every unset field with the default documented next to it.
type Config struct {
	// InitiatorName is our IQN. Default: DefaultInitiatorName(), which is
	// stable per node (derived from the host name).
	InitiatorName string
	// Purpose says what the session is for (default PurposeVolume); it is
	// part of the ISID, so one node's sessions of different purposes to one
	// LUN never reinstate each other.
	Purpose Purpose
	// ISID is the base of the initiator session ID half of the I_T nexus;
	// persistent reservations are bound to the nexus. Default (all zero):
	// DeriveISID(InitiatorName, Purpose), stable per node and purpose. A
	// Disk's session uses SessionISID(ISID, Purpose, target, LUN). Set it
	// only to tell two simulated nodes with one initiator name apart.
	ISID [6]byte

	// CHAP: User (default: the user of the iscsi:// URL) and the secret,
	// given inline (from a config file) or read from SecretFile. Never take
	// secrets from a command line.
	User       string
	Secret     string
	SecretFile string
	// Mutual CHAP: the target must prove it knows TargetSecret. TargetUser,
	// if set, must match the name it authenticates with.
	TargetUser       string
	TargetSecret     string
	TargetSecretFile string

	// Timeout: a command or NOP-Out ping unanswered this long fails all
	// outstanding I/O and drops the connection. Default 5s (the kernel
	// initiator's default of 120s is what hamirror exists to avoid).
	Timeout time.Duration
	// PingInterval: send a NOP-Out when nothing was received for this long.
	// Default Timeout/2, so a silent target is detected within 1.5 Timeout.
	PingInterval time.Duration
	// ReconnectInterval: how often a Disk retries login while its target is
	// away. Default 1s.
	ReconnectInterval time.Duration

	// HeaderDigest and DataDigest ask for CRC32C digests (default off; the
	// target may still refuse them).
	HeaderDigest bool
	DataDigest   bool
	// MaxRecvDataSegmentLength we declare; default 256 KiB.
	MaxRecvDataSegmentLength uint32
	// MaxBurstLength we offer; default 16 MiB - 1 KiB (the RFC maximum).
	MaxBurstLength uint32
	// FirstBurstLength we offer (unsolicited data per command); default 256 KiB.
	FirstBurstLength uint32
	// InitialR2T asks the target to solicit all non-immediate data
	// (default false: unsolicited Data-Out is allowed).
	InitialR2T bool
	// NoImmediateData stops data being sent with the command PDU.
	NoImmediateData bool
	// QueueDepth bounds the commands in flight on a session; default 128
	// (the target's CmdSN window bounds it too).
	QueueDepth int
	// ReadOnly refuses WriteAt and Zero locally (ErrWriteProtected), for
	// examining a leg without any chance of changing it.
	ReadOnly bool
	// ZeroByWriting says when Zero writes zero blocks instead of the UNMAP
	// or WRITE SAME the LUN advertises (cluster file:
	// iscsi.zero_by_writing): ZeroWritingAuto (default, "" too) on arrays
	// known to let them through a reservation (tgtd), ZeroWritingAlways,
	// or ZeroWritingNever. See ZeroWritingMode.
	ZeroByWriting ZeroWritingMode

	// Dial opens the TCP connection; default a net.Dialer with Timeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Now is the clock the liveness rules use; default time.Now.
	Now func() time.Time
	// Rand supplies CHAP challenges; default crypto/rand.
	Rand io.Reader
}

// DefaultInitiatorName is this node's IQN: iqn.2026-01.org.hamirror:HOSTNAME.
func DefaultInitiatorName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "localhost"
	}
	return "iqn.2026-01.org.hamirror:" + strings.ToLower(h)
}

// EnsureDefaults fills unset fields with their defaults.
func (c *Config) EnsureDefaults() {
	if c.InitiatorName == "" {
		c.InitiatorName = DefaultInitiatorName()
	}
	if c.ISID == ([6]byte{}) {
		c.ISID = DeriveISID(c.InitiatorName, c.Purpose)
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.PingInterval == 0 {
		c.PingInterval = c.Timeout / 2
	}
	if c.ReconnectInterval == 0 {
		c.ReconnectInterval = time.Second
	}
	if c.MaxRecvDataSegmentLength == 0 {
		c.MaxRecvDataSegmentLength = 256 << 10
	}
	if c.MaxBurstLength == 0 {
		c.MaxBurstLength = 16776192
	}
	if c.FirstBurstLength == 0 {
		c.FirstBurstLength = min(256<<10, c.MaxBurstLength)
	}
	if c.QueueDepth == 0 {
		c.QueueDepth = 128
	}
	if c.ZeroByWriting == "" {
		c.ZeroByWriting = ZeroWritingAuto
	}
	if c.Dial == nil {
		d := &net.Dialer{Timeout: c.Timeout}
		c.Dial = d.DialContext
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
}

// Validate rejects impossible settings, naming the field.
func (c *Config) Validate() error {
	switch {
	case !validName(c.InitiatorName):
		return fmt.Errorf("iscsi: InitiatorName %q is not an iqn./eui./naa. name", c.InitiatorName)
	case !c.Purpose.valid():
		return fmt.Errorf("iscsi: Purpose %d is not one of the defined purposes", c.Purpose)
	case c.Timeout < 10*time.Millisecond:
		return fmt.Errorf("iscsi: Timeout %v is too short", c.Timeout)
	case c.PingInterval <= 0 || c.ReconnectInterval <= 0:
		return fmt.Errorf("iscsi: PingInterval and ReconnectInterval must be positive")
	case c.MaxRecvDataSegmentLength < 512 || c.MaxRecvDataSegmentLength > maxDataSegment:
		return fmt.Errorf("iscsi: MaxRecvDataSegmentLength %d not in [512, 2^24-1]", c.MaxRecvDataSegmentLength)
	case c.MaxBurstLength < 512 || c.MaxBurstLength > maxDataSegment:
		return fmt.Errorf("iscsi: MaxBurstLength %d not in [512, 2^24-1]", c.MaxBurstLength)
	case c.FirstBurstLength < 512 || c.FirstBurstLength > c.MaxBurstLength:
		return fmt.Errorf("iscsi: FirstBurstLength %d not in [512, MaxBurstLength]", c.FirstBurstLength)
	case c.QueueDepth < 1:
		return fmt.Errorf("iscsi: QueueDepth %d must be at least 1", c.QueueDepth)
	case c.Secret != "" && c.SecretFile != "":
		return fmt.Errorf("iscsi: set Secret or SecretFile, not both")
	case c.TargetSecret != "" && c.TargetSecretFile != "":
		return fmt.Errorf("iscsi: set TargetSecret or TargetSecretFile, not both")
	}
	return c.ZeroByWriting.check()
}

func validName(n string) bool {
	return len(n) > 4 && len(n) <= 223 && (strings.HasPrefix(n, "iqn.") || strings.HasPrefix(n, "eui.") || strings.HasPrefix(n, "naa."))
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("iscsi: reading CHAP secret: %w", err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("iscsi: CHAP secret file %s is empty", path)
	}
	return s, nil
}

// chap builds the CHAP state for a login, or nil for no authentication.
func (c *Config) chap(urlUser string) (*chapState, error) {
	user := c.User
	if user == "" {
		user = urlUser
	}
	secret := c.Secret
	if c.SecretFile != "" {
		var err error
		if secret, err = readSecret(c.SecretFile); err != nil {
			return nil, err
		}
	}
	tsecret := c.TargetSecret
	if c.TargetSecretFile != "" {
		var err error
		if tsecret, err = readSecret(c.TargetSecretFile); err != nil {
			return nil, err
		}
	}
	if user == "" && secret == "" {
		if tsecret != "" {
			return nil, fmt.Errorf("iscsi: mutual CHAP needs a CHAP user and secret too")
		}
		return nil, nil
	}
	if user == "" || secret == "" {
		return nil, fmt.Errorf("iscsi: CHAP needs both a user and a secret (user %q; set Secret or SecretFile)", user)
	}
	return &chapState{user: user, secret: secret, targetUser: c.TargetUser, targetSecret: tsecret, rand: c.Rand}, nil
}

// wantParams is what we offer in operational negotiation.
func (c *Config) wantParams() Params {
	return Params{
		HeaderDigest:             c.HeaderDigest,
		DataDigest:               c.DataDigest,
		MaxRecvDataSegmentLength: c.MaxRecvDataSegmentLength,
		MaxBurstLength:           c.MaxBurstLength,
		FirstBurstLength:         c.FirstBurstLength,
		InitialR2T:               c.InitialR2T,
		ImmediateData:            !c.NoImmediateData,
		MaxOutstandingR2T:        1,
	}
}
