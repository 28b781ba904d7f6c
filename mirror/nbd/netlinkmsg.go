package nbd

import (
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
)

// The Linux kernel's generic netlink "nbd" family (include/uapi/linux/
// nbd-netlink.h). These messages are pure data: building and decoding them
// is tested without the kernel; kernel_linux.go sends them.
const (
	genlFamily = "nbd"

	nlCmdConnect     = 1
	nlCmdDisconnect  = 2
	nlCmdReconfigure = 3
	nlCmdStatus      = 5

	nlAttrIndex             = 1
	nlAttrSizeBytes         = 2
	nlAttrBlockSizeBytes    = 3
	nlAttrTimeout           = 4
	nlAttrServerFlags       = 5
	nlAttrClientFlags       = 6
	nlAttrSockets           = 7
	nlAttrDeadConnTimeout   = 8
	nlAttrDeviceList        = 9
	nlAttrBackendIdentifier = 10

	nlSockItem = 1 // NBD_SOCK_ITEM, nested in NBD_ATTR_SOCKETS
	nlSockFD   = 1 // NBD_SOCK_FD, u32

	nlDeviceItem      = 1 // NBD_DEVICE_ITEM, nested in NBD_ATTR_DEVICE_LIST
	nlDeviceIndex     = 1 // NBD_DEVICE_INDEX, u32
	nlDeviceConnected = 2 // NBD_DEVICE_CONNECTED, u8

	// Client flags. hamirror sets neither: the device must outlive the
	// daemon so a restarted mirrord can take it back with RECONFIGURE.
	nlCFlagDestroyOnDisconnect = 1 << 0
	nlCFlagDisconnectOnClose   = 1 << 1
)

// connectConfig is what CONNECT tells the kernel about the export.
type connectConfig struct {
	Index           int    // device index, -1: let the kernel pick a free one
	SizeBytes       uint64 // export size
	BlockSize       uint64 // logical block size (512..4096)
	ServerFlags     uint64 // NBD transmission flags
	TimeoutSec      uint64 // per-request timeout; 0 keeps the kernel default
	DeadConnTimeout uint64 // seconds the kernel waits for a reconnect
	Identifier      string // backend identifier checked on RECONFIGURE
	FDs             []int  // kernel ends of the socket pairs
}

func encodeSockets(ae *netlink.AttributeEncoder, fds []int) {
	ae.Nested(nlAttrSockets, func(nae *netlink.AttributeEncoder) error {
		for _, fd := range fds {
			nae.Nested(nlSockItem, func(s *netlink.AttributeEncoder) error {
				s.Uint32(nlSockFD, uint32(fd))
				return nil
			})
		}
		return nil
	})
}

// encodeConnect builds the attributes of NBD_CMD_CONNECT.
func encodeConnect(c connectConfig) ([]byte, error) {
	if len(c.FDs) == 0 {
		return nil, errors.New("nbd: connect needs at least one socket")
	}
	if c.SizeBytes == 0 || c.BlockSize < 512 || c.BlockSize > 4096 || c.BlockSize&(c.BlockSize-1) != 0 {
		return nil, fmt.Errorf("nbd: cannot attach size %d with block size %d", c.SizeBytes, c.BlockSize)
	}
	ae := netlink.NewAttributeEncoder()
	if c.Index >= 0 {
		ae.Uint32(nlAttrIndex, uint32(c.Index))
	}
	ae.Uint64(nlAttrSizeBytes, c.SizeBytes)
	ae.Uint64(nlAttrBlockSizeBytes, c.BlockSize)
	ae.Uint64(nlAttrServerFlags, c.ServerFlags)
	ae.Uint64(nlAttrClientFlags, 0)
	if c.TimeoutSec > 0 {
		ae.Uint64(nlAttrTimeout, c.TimeoutSec)
	}
	if c.DeadConnTimeout > 0 {
		ae.Uint64(nlAttrDeadConnTimeout, c.DeadConnTimeout)
	}
	if c.Identifier != "" {
		ae.String(nlAttrBackendIdentifier, c.Identifier)
	}
	encodeSockets(ae, c.FDs)
	return ae.Encode()
}

// encodeReconfigure builds NBD_CMD_RECONFIGURE: new sockets replacing the
// dead ones of a device whose server went away.
func encodeReconfigure(index int, identifier string, deadConnTimeout uint64, fds []int) ([]byte, error) {
	if index < 0 {
		return nil, errors.New("nbd: reconfigure needs a device index")
	}
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(nlAttrIndex, uint32(index))
	if identifier != "" {
		ae.String(nlAttrBackendIdentifier, identifier)
	}
	if deadConnTimeout > 0 {
		ae.Uint64(nlAttrDeadConnTimeout, deadConnTimeout)
	}
	encodeSockets(ae, fds)
	return ae.Encode()
}

// encodeIndex builds the attributes of DISCONNECT and STATUS.
func encodeIndex(index int) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	if index >= 0 {
		ae.Uint32(nlAttrIndex, uint32(index))
	}
	return ae.Encode()
}

// decodeIndex reads NBD_ATTR_INDEX from a CONNECT reply.
func decodeIndex(b []byte) (int, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return -1, err
	}
	idx := -1
	for ad.Next() {
		if ad.Type() == nlAttrIndex {
			idx = int(ad.Uint32())
		}
	}
	if err := ad.Err(); err != nil {
		return -1, err
	}
	if idx < 0 {
		return -1, errors.New("nbd: kernel reply carries no device index")
	}
	return idx, nil
}

// DeviceStatus is one /dev/nbdN as the kernel reports it.
type DeviceStatus struct {
	Index     int
	Connected bool
}

// decodeStatus reads the device list of a STATUS reply.
func decodeStatus(b []byte) ([]DeviceStatus, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, err
	}
	var out []DeviceStatus
	for ad.Next() {
		if ad.Type() != nlAttrDeviceList {
			continue
		}
		ad.Nested(func(list *netlink.AttributeDecoder) error {
			for list.Next() {
				if list.Type() != nlDeviceItem {
					continue
				}
				d := DeviceStatus{Index: -1}
				list.Nested(func(item *netlink.AttributeDecoder) error {
					for item.Next() {
						switch item.Type() {
						case nlDeviceIndex:
							d.Index = int(item.Uint32())
						case nlDeviceConnected:
							d.Connected = item.Uint8() != 0
						}
					}
					return item.Err()
				})
				if d.Index < 0 {
					return errors.New("nbd: device item without an index")
				}
				out = append(out, d)
			}
			return list.Err()
		})
	}
	if err := ad.Err(); err != nil {
		return nil, fmt.Errorf("nbd: decoding kernel status: %w", err)
	}
	return out, nil
}
