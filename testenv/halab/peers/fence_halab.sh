#!/bin/bash
# fence_halab: a fence agent (Red Hat fence-agent conventions, as Pacemaker's
# fencer runs them) that asks the halab power switch to cut or restore a lab
# node's power. It writes "ACTION NODE" to POWER_DIR/req-ID and waits for
# POWER_DIR/req-ID.reply ("ok on", "ok off" or "error TEXT"); see
# testenv/halab/power.go. Options come on stdin (key=value lines) or as
# -o ACTION -n NODE [--power-dir DIR].
action=reboot
plug=
power_dir='@POWER_DIR@'

set_opt() {
	case "$1" in
	action|option) action=$2 ;;
	plug|port|nodename) [ -z "$plug" ] || [ "$1" != nodename ] && plug=$2 ;;
	power_dir) power_dir=$2 ;;
	esac
}

if [ $# -eq 0 ] && ! [ -t 0 ]; then
	while IFS= read -r line; do
		line=${line%%#*}
		[ -n "$line" ] || continue
		set_opt "${line%%=*}" "${line#*=}"
	done
fi
while [ $# -gt 0 ]; do
	case "$1" in
	-o|--action) action=$2; shift ;;
	--action=*) action=${1#*=} ;;
	-n|--plug) plug=$2; shift ;;
	--plug=*) plug=${1#*=} ;;
	--power-dir) power_dir=$2; shift ;;
	esac
	shift
done

metadata() {
	cat <<'EOF'
<?xml version="1.0" ?>
<resource-agent name="fence_halab" shortdesc="Power fencing of halab lab nodes">
<longdesc>Asks the halab failover lab's power switch to cut (off, reboot) or restore (on) the power of a lab node.</longdesc>
<vendor-url>https://github.com/hamirror/hamirror</vendor-url>
<parameters>
	<parameter name="action" unique="0" required="1">
		<getopt mixed="-o, --action=[action]" />
		<content type="string" default="reboot" />
		<shortdesc lang="en">Fencing action</shortdesc>
	</parameter>
	<parameter name="plug" unique="0" required="1" obsoletes="port">
		<getopt mixed="-n, --plug=[node]" />
		<content type="string" />
		<shortdesc lang="en">The lab node (n1 or n2)</shortdesc>
	</parameter>
	<parameter name="port" unique="0" required="0" deprecated="1">
		<getopt mixed="-n, --plug=[node]" />
		<content type="string" />
		<shortdesc lang="en">The lab node (n1 or n2)</shortdesc>
	</parameter>
	<parameter name="power_dir" unique="0" required="0">
		<getopt mixed="--power-dir=[dir]" />
		<content type="string" />
		<shortdesc lang="en">The lab's power switch folder</shortdesc>
	</parameter>
</parameters>
<actions>
	<action name="on" automatic="0" />
	<action name="off" />
	<action name="reboot" />
	<action name="status" />
	<action name="list" />
	<action name="monitor" />
	<action name="metadata" />
	<action name="validate-all" />
</actions>
</resource-agent>
EOF
}

# request ACTION: ask the switch, print its reply.
request() {
	local id="$$-$RANDOM" i
	local req="$power_dir/req-$id"
	echo "$1 $plug" >"$power_dir/.tmp-req-$id" && mv "$power_dir/.tmp-req-$id" "$req" || return 1
	for ((i = 0; i < 3000; i++)); do
		[ -f "$req.reply" ] && break
		sleep 0.01
	done
	cat "$req.reply" 2>/dev/null || echo "error no reply from the power switch in $power_dir"
	rm -f "$req" "$req.reply"
}

case "$action" in
metadata) metadata; exit 0 ;;
monitor|validate-all) [ -d "$power_dir" ]; exit $? ;;
list) echo n1; echo n2; exit 0 ;;
status|off|on|reboot)
	if [ -z "$plug" ]; then
		echo "fence_halab: no node given (plug=n1)" >&2
		exit 1
	fi
	reply=$(request "$action")
	case "$action $reply" in
	"status ok on") exit 0 ;;
	"status ok off") exit 2 ;;
	"off ok off"|"reboot ok on"|"reboot ok off"|"on ok on") exit 0 ;;
	esac
	echo "fence_halab: $action $plug: $reply" >&2
	exit 1 ;;
*)
	echo "fence_halab: unknown action $action" >&2
	exit 1 ;;
esac
