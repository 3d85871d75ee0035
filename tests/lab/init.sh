#!/bin/sh
# /init of the provisioner lab payload (busybox-static, Debian kernel modules).
#
# Contract with the tests (markers on the serial console, one per line):
#   LAB-INIT-STARTED                        kernel + initramfs handed over
#   LAB-DHCP-OK ip=<ip> if=<iface>          the payload got its own lease
#   LAB-CONFIG-FETCHED bytes=<n> sha256=<h> config URL from the cmdline fetched
#   LAB-CONFIG-STATUS status=<code>         HTTP status of that fetch
#   LAB-CONFIG-DOC version=<v> hostname=<h> the document's first `version:` and
#                                           `hostname:` values (Talos: v1alpha1)
#   LAB-CONFIG-REPLAY status=<code>         lab.config_replay=1: the same URL again
#   LAB-CONFIG-NONE                         no config URL on the cmdline
#   LAB-CALLBACK-DELAY <s>                  lab.callback_delay=<s>: waiting first
#   LAB-CALLBACK-OK / LAB-CALLBACK-FAILED   provisioner.callback= POST result
#   LAB-FAILED <reason>                     any failure (then power off)
#   LAB-AGENT-START                         lab.mode=talos-sim: the node agent
#                                           (second initrd) takes over; it prints
#                                           its own LAB-AGENT-* markers
# The config itself is never printed: in real profiles it carries secrets.
# Everything ends with `poweroff -f`; with QEMU's -no-reboot a kernel panic
# (panic=-1 on the cmdline) ends QEMU too, so no path hangs until a timeout.

/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mkdir -p /tmp /run
echo "LAB-INIT-STARTED"

# GET <url> into <file>; prints the HTTP status (busybox `wget -S` writes the
# status line to stderr; its log is never printed: the URL carries a token).
http_get() {
    timeout 30 wget -S -O "$2" "$1" 2>/tmp/wget.log
    rc=$?
    st=$(sed -n 's/.*HTTP\/1\.[01] \([0-9][0-9][0-9]\).*/\1/p' /tmp/wget.log | tail -n 1)
    echo "${st:-none}"
    return $rc
}

fail() {
    echo "LAB-FAILED $*"
    sync
    poweroff -f
    sleep 5
    exit 1
}

# NIC drivers are modules in Debian's kernel. virtio-net needs its chain in
# dependency order (a wrong order fails with "Unknown symbol"); modules the
# build did not find (built in, or absent) are skipped.
for m in e1000 virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev \
         virtio_pci failover net_failover virtio_net; do
    if [ -f "/lib/modules/$m.ko" ]; then
        insmod "/lib/modules/$m.ko" 2>/dev/null || echo "lab: insmod $m failed"
    fi
done

ifconfig lo 127.0.0.1 up
iface=""
i=0
while [ -z "$iface" ] && [ $i -lt 50 ]; do
    for d in /sys/class/net/*; do
        n=${d##*/}
        [ "$n" = lo ] && continue
        [ -e "$d" ] && { iface=$n; break; }
    done
    [ -z "$iface" ] && { usleep 200000; i=$((i + 1)); }
done
[ -n "$iface" ] || fail "no-network-interface"
ifconfig "$iface" up

# Debian's busybox-static udhcpc does not find a default script: pass -s.
udhcpc -i "$iface" -s /etc/udhcpc.script -n -q -t 8 -T 2 >/tmp/udhcpc.log 2>&1 \
    || { cat /tmp/udhcpc.log; fail "dhcp"; }
ip=$(ifconfig "$iface" | sed -n 's/.*inet addr:\([0-9.]*\).*/\1/p')
echo "LAB-DHCP-OK ip=$ip if=$iface"

set -f
config_url=""
callback_url=""
callback_delay=""
config_replay=""
lab_mode=""
lab_peers=""
for w in $(cat /proc/cmdline); do
    case "$w" in
        talos.config=*) config_url=${w#talos.config=} ;;
        ignition.config.url=*) config_url=${w#ignition.config.url=} ;;
        provisioner.config=*) config_url=${w#provisioner.config=} ;;
        provisioner.callback=*) callback_url=${w#provisioner.callback=} ;;
        # Test hook: a window between config fetch and callback (e.g. to
        # crash the appliance in between).
        lab.callback_delay=*) callback_delay=${w#lab.callback_delay=} ;;
        # Test hook: fetch the one-time config URL a second time.
        lab.config_replay=1) config_replay=1 ;;
        # Simulated Talos (tests/src/talos_sim.rs): run the node agent on the
        # fetched config; lab.peers= lists every control-plane address.
        lab.mode=*) lab_mode=${w#lab.mode=} ;;
        lab.peers=*) lab_peers=${w#lab.peers=} ;;
    esac
done
set +f

if [ -n "$config_url" ]; then
    # No `wget -T`: Debian's busybox-static 1.35 wget segfaults with it.
    status=$(http_get "$config_url" /tmp/config) || fail "config-fetch status=$status"
    bytes=$(wc -c </tmp/config | tr -d ' ')
    sum=$(sha256sum /tmp/config | cut -d' ' -f1)
    echo "LAB-CONFIG-FETCHED bytes=$bytes sha256=$sum"
    echo "LAB-CONFIG-STATUS status=$status"
    # Facts about the document, never its contents (it carries the cluster's keys).
    doc_version=$(sed -n 's/^version: *//p' /tmp/config | head -n 1)
    doc_host=$(sed -n 's/^ *hostname: *//p' /tmp/config | head -n 1)
    echo "LAB-CONFIG-DOC version=${doc_version:-none} hostname=${doc_host:-none}"
    if [ -n "$config_replay" ]; then
        replay=$(http_get "$config_url" /tmp/replay)
        rm -f /tmp/replay
        echo "LAB-CONFIG-REPLAY status=$replay"
    fi
else
    echo "LAB-CONFIG-NONE"
fi

if [ "$lab_mode" = talos-sim ]; then
    [ -n "$config_url" ] || fail "talos-sim-without-config"
    [ -x /bin/provisioner-lab-agent ] || fail "no-agent-in-initramfs"
    echo "LAB-AGENT-START"
    # Foreground: the agent serves until the VM is killed; if it exits, so do we.
    /bin/provisioner-lab-agent node --config /tmp/config --ip "$ip" --peers "$lab_peers"
    fail "agent-exited rc=$?"
fi

if [ -n "$callback_url" ]; then
    if [ -n "$callback_delay" ]; then
        echo "LAB-CALLBACK-DELAY $callback_delay"
        sleep "$callback_delay"
    fi
    if timeout 30 wget -q --post-data=installed -O- "$callback_url" >/dev/null 2>&1; then
        echo "LAB-CALLBACK-OK"
    else
        echo "LAB-CALLBACK-FAILED"
        fail "callback"
    fi
fi

echo "LAB-POWEROFF"
sync
poweroff -f
