package traffic

import (
	"fmt"
	"net"
	"slices"

	"github.com/vishvananda/netlink"
)

// Sampler reads the NIC counters of this node.
type Sampler interface {
	Sample() ([]Counters, error)
}

// NetlinkSampler reads every interface's counters with one RTM_GETLINK
// dump (github.com/vishvananda/netlink) in the caller's network
// namespace. Interfaces lists the NICs to keep; empty: all but loopback.
type NetlinkSampler struct {
	Interfaces []string
}

// Sample implements Sampler.
func (n NetlinkSampler) Sample() ([]Counters, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("traffic: listing links over netlink: %w", err)
	}
	var out []Counters
	for _, l := range links {
		a := l.Attrs()
		if a == nil || a.Statistics == nil {
			continue
		}
		if len(n.Interfaces) > 0 && !slices.Contains(n.Interfaces, a.Name) {
			continue
		}
		if len(n.Interfaces) == 0 && a.Flags&net.FlagLoopback != 0 {
			continue
		}
		st := a.Statistics
		out = append(out, Counters{Name: a.Name, RxBytes: st.RxBytes, TxBytes: st.TxBytes, RxPackets: st.RxPackets,
			TxPackets: st.TxPackets, RxErrors: st.RxErrors, TxErrors: st.TxErrors, RxDropped: st.RxDropped, TxDropped: st.TxDropped})
	}
	slices.SortFunc(out, func(a, b Counters) int {
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
	if len(out) > maxIfaces {
		out = out[:maxIfaces]
	}
	return out, nil
}
