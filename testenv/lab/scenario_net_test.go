package lab

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Two VMs exchange checksummed messages over the null-modem cable between
// their ttyS1 ports, in both directions, with the heartbeat's own serial
// medium (termios setup and envelope): the wiring the serial heartbeat uses.
func TestSerialLineCarriesFramesBothWays(t *testing.T) {
	l := sharedLab(t)
	n1, n2 := l.Nodes()[0], l.Nodes()[1]
	const count = 40
	for _, dir := range [][2]*Node{{n1, n2}, {n2, n1}} {
		from, to := dir[0], dir[1]
		t.Run(from.Name+"_to_"+to.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			got := make(chan Result, 1)
			go func() {
				res, err := to.Exec(ctx, "labagent", "uart", "recv", "/dev/ttyS1", fmt.Sprint(count), "60s")
				if err != nil {
					res = Result{Exit: -1, Error: err.Error()}
				}
				got <- res
			}()
			// Bytes reaching a UART nobody has open are dropped: wait until
			// the receiver holds the port.
			run(t, to, `for i in $(seq 300); do
	for p in /proc/[0-9]*; do ls -l $p/fd 2>/dev/null | grep -q 'ttyS1$' && exit 0; done
	usleep 100000
done; echo "receiver never opened /dev/ttyS1"; exit 1`)
			run(t, from, fmt.Sprintf("labagent uart send /dev/ttyS1 %d", count))
			res := <-got
			if res.Exit != 0 {
				t.Fatalf("receiver: %v", res.Err())
			}
			lines := strings.Split(strings.TrimSpace(res.Stdout), "\n")
			if len(lines) != count || lines[count-1] != fmt.Sprintf("%d beat %d from %s", count, count, from.Name) {
				t.Errorf("received %d messages, last %q", len(lines), lines[len(lines)-1])
			}
		})
	}
}

// Each node reaches the other over both private links and the iSCSI
// network, and the client side of the public network reaches both nodes
// (where a virtual IP will be watched).
func TestNICsReachPeersAndClient(t *testing.T) {
	l := sharedLab(t)
	n1, n2 := l.Nodes()[0], l.Nodes()[1]
	for _, n := range []*Node{n1, n2} {
		out := run(t, n, "ip -o addr show")
		for _, net := range Nets {
			if !strings.Contains(out, fmt.Sprintf("%s    inet %s/24", net, n.Addr(net))) {
				t.Errorf("%s: NIC %s without %s:\n%s", n.Name, net, n.Addr(net), out)
			}
		}
	}
	for _, net := range []Net{NetPriv1, NetPriv2, NetISCSI, NetPublic} {
		for _, p := range [][2]*Node{{n1, n2}, {n2, n1}} {
			run(t, p[0], fmt.Sprintf("ping -c 2 -W 5 -I %s %s", net, p[1].Addr(net)))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, n := range []*Node{n1, n2} {
		if out, err := l.Client(ctx, "busybox", "ping", "-c", "2", "-W", "5", n.Addr(NetPublic)); err != nil {
			t.Errorf("client cannot reach %s on the public net: %v\n%s", n.Name, err, out)
		}
		run(t, n, "ping -c 1 -W 5 "+ClientAddr(NetPublic))
		run(t, n, "ping -c 1 -W 5 "+ClientAddr(NetISCSI))
	}
	// Each link is its own wire: what n1 learned on each NIC is the
	// peer's MAC on that same network.
	for _, net := range Nets {
		out := run(t, n1, "ip neigh show dev "+string(net))
		if !strings.Contains(out, n2.Addr(net)+" lladdr "+n2.MAC(net)) {
			t.Errorf("on %s n1 sees neighbours %q, want %s at %s", net, out, n2.Addr(net), n2.MAC(net))
		}
	}
}

// Pulling a cable (QEMU set_link) cuts exactly that link: the guest sees
// no carrier and the peer becomes unreachable over it, the other link
// still works, and plugging it back restores it.
func TestSetLinkCutsOneLink(t *testing.T) {
	l := sharedLab(t)
	n1, n2 := l.Nodes()[0], l.Nodes()[1]
	if err := n1.SetLink(NetPriv1, false); err != nil {
		t.Fatal(err)
	}
	defer n1.SetLink(NetPriv1, true)
	if got := run(t, n1, "cat /sys/class/net/priv1/carrier"); got != "0\n" {
		t.Errorf("carrier after cut = %q", got)
	}
	ctx := context.Background()
	res, err := n1.Run(ctx, "ping -c 1 -W 2 -I priv1 "+n2.Addr(NetPriv1))
	if err != nil || res.Exit == 0 {
		t.Errorf("peer reachable over a cut link: %+v %v", res, err)
	}
	run(t, n1, "ping -c 1 -W 5 -I priv2 "+n2.Addr(NetPriv2))
	if err := n1.SetLink(NetPriv1, true); err != nil {
		t.Fatal(err)
	}
	run(t, n1, "for i in 1 2 3 4 5; do ping -c 1 -W 2 -I priv1 "+n2.Addr(NetPriv1)+" && exit 0; done; exit 1")
}

// A virtual IP moved from one node to the other is seen moving by the
// client on the public network (what the failover tests will watch).
func TestClientSeesVirtualIPMove(t *testing.T) {
	l := sharedLab(t)
	n1, n2 := l.Nodes()[0], l.Nodes()[1]
	const vip = "10.77.1.100"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if who, err := l.WhoHas(ctx, vip); err == nil {
		t.Fatalf("%s answers for the virtual IP before anyone holds it", who)
	}
	defer n1.Run(context.Background(), "ip addr del "+vip+"/24 dev public 2>/dev/null")
	defer n2.Run(context.Background(), "ip addr del "+vip+"/24 dev public 2>/dev/null")
	for _, owner := range []*Node{n1, n2} {
		for _, other := range []*Node{n1, n2} {
			if other != owner {
				run(t, other, "ip addr del "+vip+"/24 dev public 2>/dev/null; true")
			}
		}
		run(t, owner, "ip addr add "+vip+"/24 dev public && arping -U -c 1 -I public "+vip)
		who, err := l.WhoHas(ctx, vip)
		if err != nil || who != owner.Name {
			t.Errorf("virtual IP on %s: client sees %q (%v)", owner.Name, who, err)
		}
		if out, err := l.Client(ctx, "busybox", "ping", "-c", "1", "-W", "5", vip); err != nil {
			t.Errorf("client cannot ping the virtual IP on %s: %v %s", owner.Name, err, out)
		}
	}
}

// Two iSCSI arrays (tgtd in the namespace on the iSCSI network) are
// reachable from both nodes with hamirror's own initiator: what one node
// writes to an array, the other reads back.
func TestArraysOnISCSINetworkServeBothNodes(t *testing.T) {
	l := sharedLab(t)
	n1, n2 := l.Nodes()[0], l.Nodes()[1]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	arrays, err := l.StartArrays(ctx, 64<<20, "a", "b")
	if err != nil {
		if strings.Contains(err.Error(), "not installed") {
			t.Skipf("SKIPPING iSCSI arrays: %v", err)
		}
		t.Fatal(err)
	}
	defer arrays.Stop()
	for _, name := range []string{"a", "b"} {
		url := ArrayURL(name)
		for _, n := range []*Node{n1, n2} {
			if out := run(t, n, "labagent iscsi probe "+url); !strings.Contains(out, fmt.Sprintf(`"size":%d`, 64<<20)) {
				t.Errorf("%s sees %s as %s", n.Name, url, out)
			}
		}
		msg := "written by n1 to " + name
		run(t, n1, fmt.Sprintf("labagent iscsi write %s 8192 '%s'", url, msg))
		if got := run(t, n2, "labagent iscsi read "+url+" 8192 64"); got != msg {
			t.Errorf("n2 read %q from %s, want %q", got, name, msg)
		}
	}
}
