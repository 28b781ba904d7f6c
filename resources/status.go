package resources

import (
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// Status is the group as this node sees it, for `mirrorctl status` (its
// JSON form is what `mirrorctl status --json` prints under "group").
type Status struct {
	Node        heartbeat.NodeID `json:"node"`
	State       GroupState       `json:"state"`
	Current     string           `json:"current,omitempty"` // being started or stopped
	Role        string           `json:"role"`              // membership's proposal
	Eligible    bool             `json:"eligible"`
	Standby     bool             `json:"standby"`
	Maintenance bool             `json:"maintenance"`
	Moving      bool             `json:"moving,omitempty"`
	// Reason says why the group is blocked, fenced or failed.
	Reason string `json:"reason,omitempty"`
	// Waiting says why the group does not start here although it should.
	Waiting            string           `json:"waiting,omitempty"`
	MigrationThreshold int              `json:"migration_threshold"`
	FailureTimeout     time.Duration    `json:"failure_timeout_ns"`
	Resources          []ResourceStatus `json:"resources"`
}

// ResourceStatus is one resource of the group.
type ResourceStatus struct {
	Name        string        `json:"name"`
	Type        string        `json:"type"`
	State       ResourceState `json:"state"`
	Failures    int           `json:"failures"` // within failure_timeout
	LastError   string        `json:"last_error,omitempty"`
	LastMonitor time.Time     `json:"last_monitor,omitzero"`
}

// Status returns a snapshot.
func (g *Group) Status() Status {
	s, cur := g.state()
	st := Status{Node: g.self, State: s, Current: cur, Role: g.role.String(), Eligible: g.isEligible(),
		Standby: g.standby, Maintenance: g.maintenance, Moving: g.moving, Reason: g.reason(s),
		Waiting: g.notes["gate"], MigrationThreshold: g.cfg.MigrationThreshold, FailureTimeout: g.cfg.FailureTimeout}
	for _, r := range g.res {
		st.Resources = append(st.Resources, ResourceStatus{Name: r.spec.Name, Type: r.spec.Type, State: r.state,
			Failures: len(r.failures), LastError: r.lastErr, LastMonitor: r.lastMonitor})
	}
	return st
}
