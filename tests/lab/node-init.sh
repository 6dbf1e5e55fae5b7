#!/bin/bash
# PID 1 of one node of the network-namespace lab (tests/src/netlab.rs starts it as
#   ip netns exec NETNS unshare --pid --fork --kill-child --mount-proc --uts node-init.sh DIR HOSTNAME
# so the node has its own network, mount, UTS and PID namespaces).
#
# Everything it changes is private to the node: the hostname, and bind mounts of DIR's files over
# /run, /root, /opt, /var/log and a few /etc entries, plus svc-shim over systemctl and service.
# It starts sshd, then reaps orphans until it is killed; when it dies, the kernel kills every
# process of the node.
set -euo pipefail
dir=$1
name=$2
tools=$(cd "$(dirname "$0")" && pwd)

hostname "$name"
mkdir -p "$dir/run/sshd" "$dir/run/svc" "$dir/run/dnsmasq"
chmod 0755 "$dir/run" "$dir/run/sshd"
mount --bind "$dir/run" /run
mount --bind "$dir/root" /root
mount --bind "$dir/opt" /opt
mount --bind "$dir/log" /var/log
for sub in keepalived openvswitch; do
    if [ -d "$dir/etc/$sub" ] && [ -d "/etc/$sub" ]; then mount --bind "$dir/etc/$sub" "/etc/$sub"; fi
done
for f in hosts dnsmasq.conf iproute2/rt_tables; do
    if [ -e "$dir/etc/$f" ] && [ -e "/etc/$f" ]; then mount --bind "$dir/etc/$f" "/etc/$f"; fi
done
mount --bind "$tools/svc-shim" /usr/bin/systemctl
mount --bind "$tools/svc-shim" /usr/sbin/service

/usr/sbin/sshd -f "$dir/sshd_config" -E /var/log/sshd.log
echo ready > "$dir/run/node.ready"

set +e
trap 'kill -KILL -1 2>/dev/null; exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
