package lab

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// LIO is the Linux kernel's iSCSI target (target_core_mod with its block
// backstore, iscsi_target_mod), the array most NAS and Linux storage
// appliances run, configured by hand through configfs inside a lab VM, as
// targetcli would: one target, TPG 1 with a portal on the node's iSCSI
// address, one LUN per LIOLUN (each a slice of one of the node's disks,
// through device mapper), explicit ACLs with CHAP for the initiators named
// in LIOConfig.ACLs, and demo-mode access without authentication for every
// other initiator (generate_node_acls), so a node's mirrord can use a LUN
// with its default settings.
//
//	a, err := lab.StartLIO(ctx, l.Node("n2"), lab.LIOConfig{Disk: "scratch",
//		LUNs: []lab.LIOLUN{{Name: "leg", Size: 16 << 20}, {Name: "slow", Size: 8 << 20, WriteDelay: 2 * time.Second}},
//		ACLs: []lab.LIOACL{{Initiator: "iqn.2026-01.org.hamirror.lab:one", User: "one", Secret: "secret-one-12"}}})
//	d, err := iscsi.OpenLeg(ctx, a.URL(0), iscsi.Config{Dial: l.Dial, User: "one", Secret: "secret-one-12", ...})
//	a.SetEnabled(ctx, false) // the TPG stops: sessions dropped, logins refused
//	a.Restart(ctx)           // an array reboot: configuration and reservations rebuilt from nothing
type LIO struct {
	Node   *Node
	IQN    string // target name
	Portal string // host:port on the node's iSCSI network
	cfg    LIOConfig
	dev    string // the VM's device of cfg.Disk
}

// LIOConfig describes a LIO array on one node.
type LIOConfig struct {
	// Name makes the target iqn.2026-01.lab:NAME; default "lio".
	Name string
	// Disk is the name of the node's disk (NodeConfig.Disks) whose space
	// the LUNs take, in order from its start.
	Disk string
	LUNs []LIOLUN
	ACLs []LIOACL
	// Port is the portal's TCP port; default 3260.
	Port int
}

// LIOLUN is one LUN: LUN number = its index in LIOConfig.LUNs, for the
// ACLs' initiators (mapped LUN) and demo-mode ones alike.
type LIOLUN struct {
	// Name names the backstore and is the LUN's unit serial number (VPD
	// page 0x80: LIO lists no VPD page at all without one).
	Name string
	Size int64 // bytes, a multiple of 512
	// WriteDelay holds every write (and flush) this long in dm-delay
	// below the backstore: commands stay in flight at the array long
	// enough for a test to act on them (PREEMPT AND ABORT, a TPG
	// disabled mid-write). Reads are not delayed.
	WriteDelay time.Duration
	// ThinProvisioning advertises UNMAP and WRITE SAME with UNMAP
	// (emulate_tpu, emulate_tpws), as an appliance offering thin LUNs
	// does. The lab's disks keep their data on discard, so unmapped
	// blocks do not read as zeros (LBPRZ 0).
	ThinProvisioning bool
}

// LIOACL is an explicit ACL: the initiator sees every LUN and must log in
// with CHAP (one-way, or mutual when TargetSecret is set).
type LIOACL struct {
	Initiator                string
	User, Secret             string
	TargetUser, TargetSecret string
}

// LIOIQN is the target name of the LIO array called name.
func LIOIQN(name string) string { return "iqn.2026-01.lab:" + name }

// StartLIO configures a LIO array on node n (its iSCSI address) and
// returns once the portal accepts logins. Stop it with LIO.Stop.
func StartLIO(ctx context.Context, n *Node, cfg LIOConfig) (*LIO, error) {
	if cfg.Name == "" {
		cfg.Name = "lio"
	}
	if cfg.Port == 0 {
		cfg.Port = 3260
	}
	a := &LIO{Node: n, IQN: LIOIQN(cfg.Name), Portal: n.Addr(NetISCSI) + ":" + strconv.Itoa(cfg.Port), cfg: cfg}
	for i, d := range n.cfg.Disks {
		if d.Name == cfg.Disk {
			a.dev = "/dev/vd" + string(rune('a'+i))
		}
	}
	if a.dev == "" {
		return nil, fmt.Errorf("lio: node %s has no disk %q", n.Name, cfg.Disk)
	}
	for _, l := range cfg.LUNs {
		if l.Name == "" || strings.ContainsAny(l.Name, " /'\"$") || l.Size <= 0 || l.Size%512 != 0 {
			return nil, fmt.Errorf("lio: LUN %q of %d bytes: want a plain name and a positive multiple of 512 bytes", l.Name, l.Size)
		}
	}
	for _, acl := range cfg.ACLs {
		if acl.User == "" || acl.Secret == "" {
			return nil, fmt.Errorf("lio: ACL of %s needs a CHAP user and secret", acl.Initiator)
		}
	}
	if err := a.run(ctx, a.teardownScript(true)+"\n"+a.setupScript(true)); err != nil {
		return nil, fmt.Errorf("lio on %s: %w", n.Name, err)
	}
	return a, nil
}

// URL is the iscsi:// address of LUN lun.
func (a *LIO) URL(lun int) string {
	return "iscsi://" + a.Portal + "/" + a.IQN + "/" + strconv.Itoa(lun)
}

// tpg is the configfs folder of the target portal group.
func (a *LIO) tpg() string { return "/sys/kernel/config/target/iscsi/" + a.IQN + "/tpgt_1" }

// SetEnabled enables or disables the TPG. Disabling it closes every
// session at once and refuses new logins (status 0301, "service
// unavailable") until it is enabled again; the LUNs and their persistent
// reservations stay.
func (a *LIO) SetEnabled(ctx context.Context, on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	return a.run(ctx, "echo "+v+" >"+a.tpg()+"/enable")
}

// Restart is an array reboot: the whole configuration is removed (the
// sessions dropped, the persistent reservations, which LIO keeps in memory
// without APTPL, forgotten) and set up again over the same data.
func (a *LIO) Restart(ctx context.Context) error {
	return a.run(ctx, a.teardownScript(false)+"\n"+a.setupScript(false))
}

// Stop removes the array from the node (configuration and device-mapper
// slices); the data stays on the node's disk.
func (a *LIO) Stop(ctx context.Context) error { return a.run(ctx, a.teardownScript(true)) }

// Backing returns the host file that holds LUN lun's data and the offset
// where it starts: what the array stored, read without asking it.
func (a *LIO) Backing(lun int) (path string, off int64) {
	for _, l := range a.cfg.LUNs[:lun] {
		off += l.Size
	}
	return a.Node.DiskPath(a.cfg.Disk), off
}

// ReadBacking reads n bytes at off of LUN lun from the host file.
func (a *LIO) ReadBacking(lun int, off int64, n int) ([]byte, error) {
	path, base := a.Backing(lun)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	_, err = f.ReadAt(b, base+off)
	return b, err
}

func (a *LIO) run(ctx context.Context, script string) error {
	res, err := a.Node.Run(ctx, script)
	if err != nil {
		return err
	}
	return res.Err()
}

// dmName is the device-mapper device of LUN l.
func (a *LIO) dmName(l LIOLUN) string { return "lio-" + a.cfg.Name + "-" + l.Name }

// setupScript creates the device-mapper slices (when devices) and the
// configfs tree, and waits for the portal to listen.
func (a *LIO) setupScript(devices bool) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("set -e")
	p("C=/sys/kernel/config; grep -q \" $C configfs\" /proc/mounts || mount -t configfs none $C")
	p("T=$C/target; TPG=%s", a.tpg())
	// LIO saves PR state (APTPL) under db_root/pr and fails REGISTER when
	// it cannot (iscsi.Disk names this folder in the error).
	p(`mkdir -p "$(cat $T/dbroot)/pr"`)
	start := int64(0)
	for _, l := range a.cfg.LUNs {
		sectors, off := l.Size/512, start/512
		start += l.Size
		dm := a.dmName(l)
		if devices {
			table := fmt.Sprintf("0 %d linear %s %d", sectors, a.dev, off)
			if l.WriteDelay > 0 {
				table = fmt.Sprintf("0 %d delay %s %d 0 %s %d %d", sectors, a.dev, off, a.dev, off, l.WriteDelay.Milliseconds())
			}
			p("dmsetup create --noudevsync %s --table '%s' && dmsetup mknodes %s", dm, table, dm)
		}
		d := "$T/core/iblock_0/" + l.Name
		p("mkdir -p %s", d)
		p("printf %%s udev_path=/dev/mapper/%s >%s/control", dm, d)
		p("echo 1 >%s/enable", d)
		p("printf %%s %s >%s/wwn/vpd_unit_serial", l.Name, d)
		if l.ThinProvisioning {
			p("echo 1 >%s/attrib/emulate_tpu; echo 1 >%s/attrib/emulate_tpws", d, d)
		}
	}
	p("mkdir -p $TPG")
	for i, l := range a.cfg.LUNs {
		p("mkdir $TPG/lun/lun_%d && ln -s $T/core/iblock_0/%s $TPG/lun/lun_%d/%s", i, l.Name, i, l.Name)
	}
	p("mkdir $TPG/np/%s", a.Portal)
	p("echo 0 >$TPG/attrib/authentication")
	p("echo 1 >$TPG/attrib/generate_node_acls; echo 1 >$TPG/attrib/cache_dynamic_acls")
	p("echo 0 >$TPG/attrib/demo_mode_write_protect")
	for _, acl := range a.cfg.ACLs {
		p("A=$TPG/acls/%s; mkdir $A", acl.Initiator)
		for i := range a.cfg.LUNs {
			p("mkdir $A/lun_%d && ln -s $TPG/lun/lun_%d $A/lun_%d/lun_%d", i, i, i, i)
		}
		// Values without a newline: LIO compares CHAP_N with the
		// stored user byte for byte.
		p("printf %%s '%s' >$A/auth/userid; printf %%s '%s' >$A/auth/password", acl.User, acl.Secret)
		if acl.TargetSecret != "" {
			p("printf %%s '%s' >$A/auth/userid_mutual; printf %%s '%s' >$A/auth/password_mutual", acl.TargetUser, acl.TargetSecret)
		}
		p("echo 1 >$A/attrib/authentication")
	}
	p("echo 1 >$TPG/enable")
	p("for i in $(seq 100); do netstat -ltn | grep -q ' %s ' && exit 0; usleep 50000; done", strings.ReplaceAll(a.Portal, ".", "\\."))
	p("echo 'portal %s not listening'; exit 1", a.Portal)
	return b.String()
}

// teardownScript removes the configfs tree (and, when devices, the
// device-mapper slices); it does what it can and never fails.
func (a *LIO) teardownScript(devices bool) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("T=/sys/kernel/config/target; TPG=%s", a.tpg())
	p(`if [ -d $TPG ]; then
	echo 0 >$TPG/enable 2>/dev/null
	for l in $TPG/acls/*/lun_*; do [ -d "$l" ] || continue; for s in "$l"/*; do [ -L "$s" ] && rm "$s"; done; rmdir "$l"; done
	for x in $TPG/acls/*; do [ -d "$x" ] && rmdir "$x"; done
	for l in $TPG/lun/lun_*; do [ -d "$l" ] || continue; for s in "$l"/*; do [ -L "$s" ] && rm "$s"; done; rmdir "$l"; done
	for x in $TPG/np/*; do [ -d "$x" ] && rmdir "$x"; done
	rmdir $TPG; rmdir ${TPG%%/*}
fi`)
	for _, l := range a.cfg.LUNs {
		p("[ -d $T/core/iblock_0/%s ] && rmdir $T/core/iblock_0/%s", l.Name, l.Name)
	}
	if devices {
		for _, l := range a.cfg.LUNs {
			p("dmsetup remove --noudevsync %s 2>/dev/null", a.dmName(l))
		}
	}
	p("true")
	return b.String()
}

// InFlight is the number of I/O requests dm-delay holds for LUN lun (one
// with a WriteDelay), from `dmsetup status`: a test knows that its writes
// reached the array and wait there.
func (a *LIO) InFlight(ctx context.Context, lun int) (int, error) {
	l := a.cfg.LUNs[lun]
	if l.WriteDelay == 0 {
		return 0, fmt.Errorf("lio: LUN %d (%s) has no WriteDelay: nothing is held in flight", lun, l.Name)
	}
	dm := a.dmName(l)
	res, err := a.Node.Run(ctx, "dmsetup status "+dm)
	if err != nil {
		return 0, err
	}
	if err := res.Err(); err != nil {
		return 0, err
	}
	// "START LENGTH delay READS WRITES FLUSHES": the bios held now.
	f := strings.Fields(res.Stdout)
	n := 0
	for i := 0; i < len(f); i++ {
		if f[i] != "delay" {
			continue
		}
		for _, v := range f[i+1:] {
			k, err := strconv.Atoi(v)
			if err != nil {
				return 0, fmt.Errorf("dmsetup status %s: %q", dm, res.Stdout)
			}
			n += k
		}
		return n, nil
	}
	return 0, fmt.Errorf("dmsetup status %s: %q has no delay target", dm, res.Stdout)
}
