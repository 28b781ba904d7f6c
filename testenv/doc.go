// Package testenv holds hamirror's test labs: network-namespace labs on one
// host (fast), the QEMU lab with real kernels, test iSCSI arrays, and the
// benchmark and demo harnesses under testenv/cmd (the HA demo's story is
// testenv/hademo).
package testenv
