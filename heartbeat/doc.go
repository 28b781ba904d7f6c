// Package heartbeat is hamirror's cluster membership: failure detection
// over several media, start-up roles and the node index table.
//
// Media: UDP unicast on each private NIC (bound to it), a raw 8N1 serial
// line (length + CRC32 framing, resync on garbage) and disk slots on the
// arrays. Every frame carries a boot ID and a per-medium sequence number
// and is signed with HMAC-SHA256 under the cluster key; forged, corrupted,
// replayed and misdirected frames are counted and never acted on.
//
// Freshness across restarts: every run of a node draws a random run nonce,
// and every frame echoes the nonces of the peers its sender has heard. A
// frame is a beat only if it echoes the receiver's current nonce, so a
// capture of a peer's earlier frames, replayed to a node that restarted
// since, cannot keep a dead peer alive; no state on disk is needed (see
// Machine.Receive and the wire format in frame.go).
//
// The decisions are a pure state machine (Machine): frames and clock ticks
// in, events and frames to send out. A peer is dead only when every
// medium has been silent for timing.dead AND its disk slot stopped
// advancing; silent networks with an advancing slot mean "partitioned":
// no takeover, an alarm. Roles (active/standby) are proposals to the
// resources layer, which fences before acting.
//
// Takeover terms (roles.go). A node that becomes active claims a new
// term, one more than the highest it has seen (every heartbeat carries
// its sender's term; the highest is kept in state_dir, recorded before it
// is used, so it grows across restarts). Where two live nodes both claim
// the active role, the later claim wins: the higher term, or in the same
// term the node that ranks first; the other yields at once, with an
// alarm. So a node that was stopped or paused while active (SIGSTOP, a
// paused VM, even one whose clock stood still) and comes back still
// claiming the role yields to the peer that found it dead, fenced it and
// took over, instead of taking the service back. A later claim is no
// proof of a later fence (a claim's fence may fail, or land late): only
// the arrays know, and the resources layer goes by them; a standby defers
// to every live active peer, whatever its term. Two live nodes can still
// both claim the role until their claims reach each other (after a
// partition, or when both turn candidates while the news travels slower
// than timing.warn): a claim is a proposal, not a lease. The resources
// layer must never start the group while a live peer claims the role (its
// gate already refuses to), and must take a live peer's standby as
// yielding to this node only once the peer has heard this node's claim
// (PeerView.Term >= View.Term): a standby sent before that says nothing
// about what the peer does next.
//
// A node that did not run for a while (SIGSTOP, a paused VM, a swap
// storm) judges only after its media could deliver what queued meanwhile,
// and a stall long enough to make a live peer look dead is not counted as
// the peers' silence (stall.go); the runner hands the machine every frame
// that arrived before each tick.
//
// What the failover layer (resources, docs/HA.md) gets besides node states
// and the role proposal:
//   - SetAppState: an opaque blob (at most MaxAppState = 512 bytes) carried
//     in every heartbeat on every medium, disk slots included, and sent at
//     once when it changes. Peers take it only from beats, in send order,
//     and see it as PeerApp, View, Status (base64 in JSON) and EventApp.
//   - SetEligible(false): the node never elects itself, yields the active
//     role at once and advertises it, so peers leave it out of elections
//     (standby, migration threshold, fenced, a move). Eligible again, it is
//     a candidate timing.warn later; an active peer stays active.
//   - cluster.failback (default false): hand the active role back to the
//     preferred node once it has been alive and eligible (and its ping
//     score steady) for max(timing.warn, cluster.failback_delay).
//   - View: one consistent snapshot (own role, term and eligibility, each
//     peer's state, role, term, eligibility, app state and age) for the
//     group machine; Status has the terms too (mirrorctl status).
//
// Running one member (mirrord does this):
//
//	cfg, err := heartbeat.LoadFile("/etc/hamirror/cluster.yaml", "node1")
//	key, err := heartbeat.LoadKey(cfg.KeyFile)      // refuses a group/world-readable file
//	links, err := heartbeat.OpenLinks(cfg)           // NICs, serial line, disks with a path
//	// disks on mirror legs: off, size, n, _ := mirror.HeartbeatSlots(leg)
//	//   dl, _ := cfg.DiskLinkFor("disk-a", legAsReaderWriterAt, off, size, n)
//	//   links = append(links, dl)
//	boot, err := heartbeat.NextBoot(cfg.StateDir, time.Now())
//	m, err := heartbeat.NewMember(cfg, key, links, heartbeat.MemberOptions{
//		Boot:     boot,
//		StateDir: cfg.StateDir, // the highest takeover term, read now, written before use
//		OnEvent:  func(e heartbeat.Event) { /* to resources: role, node, app events */ },
//	})
//	m.SetEligible(!standby)             // before Run too: a persisted standby
//	go m.Run(ctx)
//	m.SetAppState(appState)              // <= 512 bytes, sent at once
//	v := m.View()                        // role, peers' states and app states, one snapshot
//	b, at, ok := m.PeerApp("node2")
//	st := m.Status() // nodes, media, roles, index table, refused frames
//
// The cluster file's heartbeat sections (defaults in DefaultConfig):
//
//	cluster:
//	  name: pair1
//	  key_file: /etc/hamirror/cluster.key   # chmod 600
//	  preferred: node1                      # active when both start together
//	  failback: false                       # true: hand the role back to preferred
//	  port: 5405
//	  baud: 115200
//	  state_dir: /var/lib/hamirror           # boot ID counter, takeover term
//	timing: {keepalive: 200ms, warn: 1s, dead: 2s, initdead: 10s}
//	nodes:
//	  - id: node1
//	    address: 192.168.10.1               # public address, shown in the index table
//	    links:
//	      - {medium: nic1, interface: eth1, address: 10.0.1.1}
//	      - {medium: nic2, interface: eth2, address: 10.0.2.1}
//	    serial: /dev/ttyS1
//	  - id: node2
//	    ...
//	disks:
//	  - {name: disk-a, slot_size: 1024, slots: 4}  # no path: the mirror leg's slots
//	ping: {targets: [192.168.10.254], interval: 1s}
package heartbeat
