package iscsi

import "fmt"

// ZeroWritingMode says whether Zero may clear ranges with UNMAP and WRITE
// SAME (Config.ZeroByWriting; the cluster file's iscsi.zero_by_writing).
//
// It matters for fencing: a node fenced off a LUN by a persistent
// reservation must not be able to clear the new owner's data. SPC-4 makes
// UNMAP and WRITE SAME conflict like WRITE for a non-registrant under a
// Write Exclusive reservation, but tgtd (1.0.85) checks no reservation on
// them: its command table gives them no conflict rule, so a fenced node's
// TRIM on a thin tgtd LUN erases the new owner's blocks with GOOD status.
type ZeroWritingMode string

const (
	// ZeroWritingAuto (the default, also ""): write zero blocks on arrays
	// known to let UNMAP and WRITE SAME through a reservation (tgtd, told
	// by its standard INQUIRY: vendor "IET", product "VIRTUAL-DISK"), and
	// use UNMAP and WRITE SAME where other arrays advertise them. A tgtd
	// LUN whose vendor_id or product_id was changed is not recognised:
	// set ZeroWritingAlways for it.
	ZeroWritingAuto ZeroWritingMode = "auto"
	// ZeroWritingAlways: always write zero blocks (also for targets that
	// advertise UNMAP or WRITE SAME but implement them wrong).
	ZeroWritingAlways ZeroWritingMode = "always"
	// ZeroWritingNever: use UNMAP and WRITE SAME wherever the LUN
	// advertises them, for an operator who trusts the array to check
	// reservations on them.
	ZeroWritingNever ZeroWritingMode = "never"
)

func (m ZeroWritingMode) valid() bool {
	switch m {
	case "", ZeroWritingAuto, ZeroWritingAlways, ZeroWritingNever:
		return true
	}
	return false
}

func (m ZeroWritingMode) check() error {
	if !m.valid() {
		return fmt.Errorf("iscsi: ZeroByWriting %q (cluster file iscsi.zero_by_writing, flag --zero-by-writing): want auto, always or never", string(m))
	}
	return nil
}

// skipsReservationOnZero says whether the LUN is one of the arrays known
// to run UNMAP and WRITE SAME for initiators a reservation shuts out.
// tgtd answers the standard INQUIRY with vendor "IET" and product
// "VIRTUAL-DISK" unless its administrator set vendor_id/product_id.
func skipsReservationOnZero(inq Inquiry) bool {
	return inq.Vendor == "IET" && inq.Product == "VIRTUAL-DISK"
}

// zeroByWriting says whether Zero must write zero blocks on this LUN
// whatever it advertises.
func (d *Disk) zeroByWriting() bool {
	switch d.cfg.ZeroByWriting {
	case ZeroWritingAlways:
		return true
	case ZeroWritingNever:
		return false
	}
	return skipsReservationOnZero(d.inquiry)
}

// String names the method as the SCSI command it uses.
func (m ZeroMethod) String() string {
	switch m {
	case ZeroWrite:
		return "WRITE(16) of zero blocks"
	case ZeroWriteSame:
		return "WRITE SAME(16)"
	case ZeroUnmap:
		return "UNMAP"
	}
	return fmt.Sprintf("ZeroMethod(%d)", int(m))
}
