package registry

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// Storage is what a node reports about the storage its services use (R11).
type Storage struct {
	Location string `json:"location"` // the folder holding the services' data
	Total    uint64 `json:"total_bytes"`
	Free     uint64 `json:"free_bytes"`
}

// Registration is a node's report to the coordinator (R11).
type Registration struct {
	ID        heartbeat.NodeID `json:"id"`
	Addresses []string         `json:"addresses"`
	Storage   Storage          `json:"storage"`
	// Run is random per start of the node's services: a registration with
	// a new run is a restart.
	Run uint64 `json:"run"`
}

// Node is one row of the index table: the R7 row (ID, addresses, backup
// target and its IP, Normal/Failed) and the R11 registration.
type Node struct {
	heartbeat.Row
	Storage    Storage   `json:"storage"`
	Registered time.Time `json:"registered,omitzero"` // last registration the coordinator took
	Run        uint64    `json:"run,omitempty"`       // the run of that registration
}

// Removed is a node removed for good, and the node that held its data.
type Removed struct {
	ID           heartbeat.NodeID `json:"id"`
	BackupTarget heartbeat.NodeID `json:"backup_target"`
}

// Table is the cluster index table the coordinator keeps and sends to
// every node. (Term, Version) orders tables: Term grows when another node
// becomes coordinator, Version with every change.
type Table struct {
	Term        uint64           `json:"term"`
	Version     uint64           `json:"version"`
	Coordinator heartbeat.NodeID `json:"coordinator"`
	Nodes       []Node           `json:"nodes"`
	Removed     []Removed        `json:"removed,omitempty"`
}

// Newer reports whether t supersedes o. Equal (term, version) from two
// coordinators (a healed split) goes to the coordinator that ranks first.
func (t Table) Newer(o Table, rank func(a, b heartbeat.NodeID) bool) bool {
	switch {
	case t.Term != o.Term:
		return t.Term > o.Term
	case t.Version != o.Version:
		return t.Version > o.Version
	}
	return t.Coordinator != o.Coordinator && rank(t.Coordinator, o.Coordinator)
}

// Clone returns a deep copy.
func (t Table) Clone() Table {
	c := t
	c.Nodes = make([]Node, len(t.Nodes))
	for i, n := range t.Nodes {
		n.Addresses = slices.Clone(n.Addresses)
		c.Nodes[i] = n
	}
	c.Removed = slices.Clone(t.Removed)
	return c
}

// Row returns node id's row.
func (t Table) Row(id heartbeat.NodeID) (Node, bool) {
	for _, n := range t.Nodes {
		if n.ID == id {
			return n, true
		}
	}
	return Node{}, false
}

// IsRemoved reports whether id was removed for good.
func (t Table) IsRemoved(id heartbeat.NodeID) (Removed, bool) {
	for _, r := range t.Removed {
		if r.ID == id {
			return r, true
		}
	}
	return Removed{}, false
}

// hb converts to the heartbeat package's table, whose Fail and Rejoin
// implement the R9 re-assignment rules.
func (t Table) hb() heartbeat.Table {
	h := heartbeat.Table{Version: t.Version, Coordinator: t.Coordinator}
	for _, n := range t.Nodes {
		h.Rows = append(h.Rows, n.Row)
	}
	return h
}

func (t *Table) setRows(h heartbeat.Table) {
	for i := range t.Nodes {
		t.Nodes[i].Row = h.Rows[i]
	}
}

// Fail marks id Failed and re-assigns (R9).
func (t *Table) Fail(id heartbeat.NodeID) bool {
	h := t.hb()
	if !h.Fail(id) {
		return false
	}
	t.setRows(h)
	return true
}

// Rejoin marks id Normal and rebuilds the backup ring.
func (t *Table) Rejoin(id heartbeat.NodeID) bool {
	h := t.hb()
	if !h.Rejoin(id) {
		return false
	}
	t.setRows(h)
	return true
}

// Remove deletes id for good (R14): first as if it failed, so those that
// backed up to it get its target; Failed rows whose data it held point at
// that target too (the removed node hands their data over if it can).
func (t *Table) Remove(id heartbeat.NodeID) bool {
	row, ok := t.Row(id)
	if !ok {
		return false
	}
	t.Fail(id)
	row, _ = t.Row(id)
	t.Removed = append(t.Removed, Removed{ID: id, BackupTarget: row.BackupTarget})
	t.Nodes = slices.DeleteFunc(t.Nodes, func(n Node) bool { return n.ID == id })
	h := t.hb()
	for i, n := range t.Nodes {
		if n.BackupTarget != id {
			continue
		}
		// A Failed row whose data the removed node held: the next Normal node.
		next := heartbeat.NodeID("")
		for k := 1; k <= len(t.Nodes); k++ {
			c := t.Nodes[(i+k)%len(t.Nodes)]
			if c.State == heartbeat.Normal && c.ID != n.ID {
				next = c.ID
				break
			}
		}
		h.Rows[i].BackupTarget, h.Rows[i].BackupAddr = next, ""
		if r, ok := t.Row(next); ok && len(r.Addresses) > 0 {
			h.Rows[i].BackupAddr = r.Addresses[0]
		}
	}
	t.setRows(h)
	return true
}

// save writes t to path atomically (temp file, fsync, rename, fsync dir).
func (t Table) save(path string) error {
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	f.Close()
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// loadTable reads a saved table; a missing file is an empty table.
func loadTable(path string) (Table, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return Table{}, nil
	}
	if err != nil {
		return Table{}, err
	}
	var t Table
	if err := json.Unmarshal(b, &t); err != nil {
		return Table{}, fmt.Errorf("registry: %s is not a table (move it away to start from the coordinator's): %w", path, err)
	}
	return t, nil
}
