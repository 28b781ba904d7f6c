#!/bin/busybox sh
# /init of every lab VM (generated into the initramfs by package lab).
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /mnt /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
while read -r m; do
	insmod "/lib/modules/$m.ko" || echo "lab: insmod $m failed" >/dev/console
done </etc/lab/modules

name=lab
ip link set lo up
for w in $(cat /proc/cmdline); do
	case "$w" in
	lab.name=*) name=${w#lab.name=} ;;
	lab.nic=*)
		set -- $(echo "${w#lab.nic=}" | tr ',' ' ')
		for d in /sys/class/net/*; do
			[ "$(cat "$d/address")" = "$1" ] && ip link set dev "${d##*/}" name "$2"
		done
		ip link set "$2" up
		[ -n "$3" ] && ip addr add "$3" dev "$2"
		;;
	esac
done
hostname "$name"
echo "$name" >/etc/hostname

(while :; do labagent serve >>/run/labagent.log 2>&1; sleep 1; done) </dev/null &
echo "lab: $name ready (kernel $(uname -r)); console is a root shell"
while :; do
	setsid cttyhack sh -l
	sleep 1
done
