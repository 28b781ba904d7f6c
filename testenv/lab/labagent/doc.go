// Command labagent runs inside every QEMU lab VM (it is baked into the lab's
// initramfs). It serves the lab's command channel on the virtio-serial port
// named "lab.agent" and carries small tools the scenarios use:
//
//	labagent serve                       # started by /init: run commands for the host
//	labagent uart send /dev/ttyS1 50     # send 50 messages with the heartbeat serial medium
//	labagent uart recv /dev/ttyS1 50 30s # receive and check them (exit 1 on loss)
//	labagent write -path /dev/md0 -bs 4096 -random -size 67108864
//	labagent iscsi probe iscsi://10.77.3.254:3260/iqn.2026-01.lab:a/1
//	labagent seqd -listen :7000 -file /srv/data/seq   # the failover story's app: "N" in, fsync, "ok N" out
//
// Frames on the channel follow package agentproto.
package main
