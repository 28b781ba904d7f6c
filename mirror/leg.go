package mirror

// Leg is one side of the mirror: a file, a block device or an iSCSI LUN.
//
// Implementations must be safe for concurrent use by many goroutines. A Leg
// enforces no deadline of its own beyond what its transport needs; the engine
// puts its I/O timeout around every call and fails a leg that exceeds it.
type Leg interface {
	// Name is how the leg is shown to an operator: a path or an iscsi:// URL.
	Name() string
	// Size is the leg's capacity in bytes, metadata area included.
	Size() int64
	// ReadAt fills p from offset off. A short read is an error.
	ReadAt(p []byte, off int64) error
	// WriteAt writes p at offset off. With fua the data is durable (on
	// stable media) when WriteAt returns; otherwise it is durable after the
	// next successful Flush.
	WriteAt(p []byte, off int64, fua bool) error
	// Flush makes every write completed before the call durable.
	Flush() error
	// Zero makes [off, off+length) read as zeros. With unmap the leg may
	// deallocate the range (punch a hole, SCSI UNMAP) as long as it then
	// reads as zeros.
	Zero(off, length int64, unmap bool) error
	// Close releases the leg. It does not flush.
	Close() error
}
