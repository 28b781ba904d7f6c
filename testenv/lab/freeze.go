package lab

import "fmt"

// Freeze pauses the whole VM (QEMU's monitor command stop): its virtual
// CPUs and clocks stand still while its NICs, disks and serial line stay
// attached, as a hung server or a VM its hypervisor paused. Its peers see
// nothing from it; its open TCP connections and iSCSI sessions stay open
// on the other side. Thaw resumes it where it stopped, unaware of the gap.
// For a power cut, use Stop.
func (n *Node) Freeze() error { return n.monitorQuiet("stop") }

// Thaw resumes a VM paused by Freeze (QEMU's monitor command cont).
func (n *Node) Thaw() error { return n.monitorQuiet("cont") }

// monitorQuiet runs a monitor command that answers nothing on success.
func (n *Node) monitorQuiet(cmd string) error {
	out, err := n.Monitor(cmd)
	if err == nil && out != "" {
		err = fmt.Errorf("%s: monitor %s: %s", n.Name, cmd, out)
	}
	return err
}
