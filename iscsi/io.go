package iscsi

import (
	"context"
	"errors"
	"fmt"
)

// maxCommandBytes caps one READ/WRITE when the LUN advertises no limit.
const maxCommandBytes = 8 << 20

// check validates an I/O range and returns its first LBA and block count.
func (d *Disk) check(op string, off, n int64) (uint64, uint64, error) {
	if !d.ready.Load() {
		return 0, 0, d.notReady()
	}
	if d.cfg.ReadOnly && op != "read" {
		return 0, 0, fmt.Errorf("%s: %s: %w (opened read-only)", d.name, op, ErrWriteProtected)
	}
	bs := int64(d.blockSize)
	if off < 0 || n < 0 || off%bs != 0 || n%bs != 0 {
		return 0, 0, fmt.Errorf("iscsi: %s: %s of %d bytes at %d: %w (%d bytes)", d.name, op, n, off, ErrAlignment, bs)
	}
	if off+n > d.Size() || off+n < off {
		return 0, 0, fmt.Errorf("iscsi: %s: %s of %d bytes at %d beyond the end (%d bytes)", d.name, op, n, off, d.Size())
	}
	return uint64(off / bs), uint64(n / bs), nil
}

// chunkBlocks is the most blocks one READ/WRITE carries.
func (d *Disk) chunkBlocks() uint64 {
	n := uint64(maxCommandBytes / d.blockSize)
	if m := uint64(d.limits.MaxTransferBlocks); m > 0 && m < n {
		n = m
	}
	return max(n, 1)
}

// ReadAt reads len(p) bytes at off with READ(16). A short transfer is an
// error. It is StartReadAt waiting for its end.
func (d *Disk) ReadAt(p []byte, off int64) error {
	return d.rwSync(false, p, off, false)
}

// WriteAt writes p at off with WRITE(16); with fua the data is on stable
// media when WriteAt returns. It is StartWriteAt waiting for its end.
func (d *Disk) WriteAt(p []byte, off int64, fua bool) error {
	return d.rwSync(true, p, off, fua)
}

// Flush makes completed writes durable (SYNCHRONIZE CACHE(16)).
func (d *Disk) Flush() error {
	_, err := d.do(command{Op: "SYNCHRONIZE CACHE(16)", CDB: cdbSyncCache16()})
	return err
}

// ZeroMethod says how Zero will clear a range.
type ZeroMethod int

const (
	ZeroWrite     ZeroMethod = iota // WRITE(16) of zero blocks
	ZeroWriteSame                   // WRITE SAME(16) of one zero block
	ZeroUnmap                       // UNMAP (unmapped blocks read as zeros)
)

// zeroMethod picks how to clear with the LUN's advertised abilities: UNMAP
// only where Block Limits allow it and unmapped blocks read back as zeros
// (LBPRZ); WRITE SAME only where Block Limits give a maximum length;
// neither where Config.ZeroByWriting says to write (see ZeroWritingMode).
func (d *Disk) zeroMethod(unmap bool) ZeroMethod {
	if d.zeroByWriting() {
		return ZeroWrite
	}
	l, c := d.limits, d.capacity
	if unmap && l.UnmapSupported && c.LBPRZ && l.MaxUnmapBlocks > 0 && l.MaxUnmapDescriptors > 0 {
		return ZeroUnmap
	}
	if l.MaxWriteSameBlocks > 0 {
		return ZeroWriteSame
	}
	return ZeroWrite
}

// writeSameUnmaps says whether a zeroing WRITE SAME may carry the UNMAP
// bit: only where the LUN advertises it (LBPWS) and unmapped blocks read
// as zeros (LBPRZ). Linux LIO advertises LBPWS (emulate_tpws) over backing
// devices that keep their data on discard (LBPRZ 0) and then only
// discards: the range would keep its old data, and two legs would differ.
func (d *Disk) writeSameUnmaps(unmap bool) bool {
	return unmap && d.limits.WriteSameUnmap && d.capacity.LBPRZ
}

// Zero makes [off, off+length) read as zeros: UNMAP or WRITE SAME(16) where
// the LUN advertises them (Block Limits VPD) and Config.ZeroByWriting
// allows them, else writes of zero blocks. By default (ZeroWritingAuto) a
// tgtd LUN is zeroed by writing: tgtd runs UNMAP and WRITE SAME for
// initiators its reservation shuts out, so a fenced node could clear the
// new owner's data; a WRITE gets RESERVATION CONFLICT.
//
// A large range takes many commands. Zero issues none once Config.Timeout
// has passed since it began (it returns an error wrapping
// context.DeadlineExceeded): its caller, such as the mirror engine whose
// I/O timeout is a little longer, has given up by then, and a command
// landing later could overwrite newer data. Callers with ranges that may
// take longer cut them or use ZeroContext.
func (d *Disk) Zero(off, length int64, unmap bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.Timeout)
	defer cancel()
	return d.ZeroContext(ctx, off, length, unmap)
}

// ZeroContext is Zero that issues no further command once ctx is done: the
// commands already sent complete (the array may still apply them), the
// rest of the range is left as it was, and the error wraps ctx.Err().
func (d *Disk) ZeroContext(ctx context.Context, off, length int64, unmap bool) error {
	lba, blocks, err := d.check("zero", off, length)
	if err != nil {
		return err
	}
	done := int64(0)
	method := d.zeroMethod(unmap)
	var step uint64
	switch method {
	case ZeroUnmap:
		step = uint64(d.limits.MaxUnmapBlocks)
	case ZeroWriteSame:
		step = min(d.limits.MaxWriteSameBlocks, 1<<22)
	default:
		step = min(d.chunkBlocks(), uint64((1<<20)/d.blockSize))
	}
	step = max(step, 1)
	var zeros []byte
	for blocks > 0 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("iscsi: %s: zero of %d bytes at %d stopped after %d bytes: %w", d.name, length, off, done, err)
		}
		n := min(blocks, step)
		var err error
		switch method {
		case ZeroUnmap:
			cdb, params := unmapParams(lba, uint32(n))
			_, err = d.do(command{Op: "UNMAP", CDB: cdb, Write: params})
		case ZeroWriteSame:
			_, err = d.do(command{Op: "WRITE SAME(16)", CDB: cdbWriteSame16(lba, uint32(n), d.writeSameUnmaps(unmap)), Write: make([]byte, d.blockSize)})
		default:
			if zeros == nil {
				zeros = make([]byte, step*uint64(d.blockSize))
			}
			_, err = d.do(command{Op: "WRITE(16)", CDB: cdbRW16(scsiWrite16, lba, uint32(n), false), Write: zeros[:n*uint64(d.blockSize)]})
		}
		if err != nil {
			if method != ZeroWrite && errors.Is(err, ErrIllegalRequest) {
				// Advertised but refused: fall back to writing zeros.
				method, step = ZeroWrite, min(d.chunkBlocks(), uint64((1<<20)/d.blockSize))
				continue
			}
			return err
		}
		lba += n
		blocks -= n
		done += int64(n) * int64(d.blockSize)
	}
	return nil
}

// TestUnitReady checks that the LUN is ready (absorbing UNIT ATTENTION).
func (d *Disk) TestUnitReady() error {
	_, err := d.do(command{Op: "TEST UNIT READY", CDB: cdbTestUnitReady()})
	return err
}

// The identification commands below run on session s, or on the Disk's
// current session when s is nil (a first login identifies the LUN on its
// new session before that session carries any I/O).

// Inquiry reads the standard INQUIRY data and the serial number and device
// identification VPD pages (where supported).
func (d *Disk) Inquiry() (Inquiry, error) { return d.inquiryOn(nil) }

func (d *Disk) inquiryOn(s *session) (Inquiry, error) {
	buf := make([]byte, 96)
	res, err := d.on(s, command{Op: "INQUIRY", CDB: cdbInquiry(false, 0, uint16(len(buf))), Read: buf})
	if err != nil {
		return Inquiry{}, err
	}
	inq, err := decodeStdInquiry(buf[:res.Received])
	if err != nil {
		return inq, err
	}
	supported, err := d.supportedVPD(s)
	if err != nil {
		return inq, err
	}
	if supported[0x80] {
		b, err := d.vpd(s, 0x80)
		if err != nil {
			return inq, err
		}
		if inq.Serial, err = decodeSerialVPD(b); err != nil {
			return inq, err
		}
	}
	if supported[0x83] {
		b, err := d.vpd(s, 0x83)
		if err != nil {
			return inq, err
		}
		if inq.DeviceIDs, err = decodeDeviceIDVPD(b); err != nil {
			return inq, err
		}
	}
	return inq, nil
}

// supportedVPD reads the Supported VPD Pages page (0x00).
func (d *Disk) supportedVPD(s *session) (map[byte]bool, error) {
	pages, err := d.vpd(s, 0x00)
	if err != nil {
		return nil, err
	}
	return decodeSupportedVPD(pages)
}

// vpd reads one VPD page.
func (d *Disk) vpd(s *session, page byte) ([]byte, error) {
	buf := make([]byte, 1024)
	res, err := d.on(s, command{Op: fmt.Sprintf("INQUIRY VPD %#02x", page), CDB: cdbInquiry(true, page, uint16(len(buf))), Read: buf})
	if err != nil {
		return nil, err
	}
	return buf[:res.Received], nil
}

func (d *Disk) readLimits(s *session) (Limits, error) {
	var l Limits
	supported, err := d.supportedVPD(s)
	if err != nil {
		return l, err
	}
	if supported[0xb0] {
		b, err := d.vpd(s, 0xb0)
		if err != nil {
			return l, err
		}
		if err := decodeBlockLimitsVPD(b, &l); err != nil {
			return l, err
		}
	}
	if supported[0xb2] {
		b, err := d.vpd(s, 0xb2)
		if err != nil {
			return l, err
		}
		if err := decodeLBPVPD(b, &l); err != nil {
			return l, err
		}
	}
	return l, nil
}

// ReadCapacity runs READ CAPACITY(16).
func (d *Disk) ReadCapacity() (Capacity, error) { return d.readCapacityOn(nil) }

func (d *Disk) readCapacityOn(s *session) (Capacity, error) {
	buf := make([]byte, 32)
	res, err := d.on(s, command{Op: "READ CAPACITY(16)", CDB: cdbReadCapacity16(32), Read: buf})
	if err != nil {
		return Capacity{}, err
	}
	return decodeCapacity16(buf[:res.Received])
}

// ReportLUNs lists the target's LUNs.
func (d *Disk) ReportLUNs() ([]uint64, error) {
	buf := make([]byte, 8+8*256)
	res, err := d.do(command{Op: "REPORT LUNS", CDB: cdbReportLUNs(uint32(len(buf))), Read: buf})
	if err != nil {
		return nil, err
	}
	return decodeReportLUNs(buf[:res.Received])
}

// ZeroMethod reports how Zero(…, unmap) clears a range on this LUN.
func (d *Disk) ZeroMethod(unmap bool) ZeroMethod { return d.zeroMethod(unmap) }
