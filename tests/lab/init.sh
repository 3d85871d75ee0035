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
#   LAB-CONFIG-NOBEARER status=<code>       talos.config.oauth.*: the config URL
#                                           fetched without a token first
#   LAB-OAUTH-CODE user_code=<c> uuid=<u>   device authorization answered (the
#                                           code Talos prints on its console)
#   LAB-OAUTH-PENDING / -DENIED / -EXPIRED  token endpoint answers (RFC 8628)
#   LAB-OAUTH-SLOW-DOWN interval=<s>        told to poll slower
#   LAB-OAUTH-TOKEN                         access token received (never printed)
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

# GET <url> into <file> [with header <h>]; prints the HTTP status (busybox
# `wget -S` writes the status line to stderr; its log is never printed: the URL
# carries a token).
http_get() {
    if [ -n "$3" ]; then
        timeout 30 wget -S --header "$3" -O "$2" "$1" 2>/tmp/wget.log
    else
        timeout 30 wget -S -O "$2" "$1" 2>/tmp/wget.log
    fi
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

# --- Talos' talos.config.oauth.* device flow, as its client does it ---------
# siderolabs/talos internal/app/machined/pkg/runtime/v1alpha1/platform/metal/
# oauth2/oauth2.go (DeviceAuthFlow) over golang.org/x/oauth2 deviceauth.go and
# internal/token.go: form POSTs with the extra variables on both calls, an
# immediate first poll then one per interval, each poll a Basic-header try and,
# if it failed, at once a form-only one. busybox wget cannot read the body of a
# 4xx answer (the RFC 8628 error code), so the polls go through busybox nc.

# Form-encodes the few characters our values carry (Go's url.QueryEscape).
enc() { printf '%s' "$1" | sed -e 's/%/%25/g' -e 's/:/%3A/g' -e 's/ /+/g' -e 's/\//%2F/g'; }
json_str() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" "$2" | head -n 1; }
json_num() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" "$2" | head -n 1; }

# POST <url> <form> <extra header or ""> into <file> (status line, headers, body).
# Our side stays open for a second: busybox nc half-closes on end of input, which
# a server may take for an aborted request (Go's client never does that); the
# server's `Connection: close` ends nc as soon as the answer is in.
http_post_nc() {
    hp=${1#http://}; path=/${hp#*/}; hp=${hp%%/*}
    {
        printf 'POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\n' "$path" "$hp"
        printf 'Content-Length: %s\r\nConnection: close\r\n' "${#2}"
        [ -n "$3" ] && printf '%s\r\n' "$3"
        printf '\r\n%s' "$2"
        sleep 1
    } | timeout 15 nc "${hp%:*}" "${hp##*:}" >"$4" 2>/dev/null
    sed -n '1s/^HTTP\/1\.[01] \([0-9]*\).*/\1/p' "$4"
}

# The extra variables Talos sends (metal/url/value.go: uuid = SMBIOS UUID, mac =
# the first NIC's address), as form fields, keys sorted like url.Values.Encode.
oauth_form() {
    f="client_id=$(enc "$oauth_client")"
    case " $oauth_vars " in *" mac "*) f="$f&mac=$(enc "$oauth_mac")" ;; esac
    [ -n "$oauth_scopes" ] && f="$f&scope=$(enc "${oauth_scopes# }")"
    case " $oauth_vars " in *" uuid "*) f="$f&uuid=$(enc "$oauth_uuid")" ;; esac
    printf '%s' "$f"
}

# One device flow; 0 with /tmp/oauth.token written, 2 denied, 3 expired, 1 error.
oauth_flow() {
    timeout 30 wget -q --header 'Accept: application/json' --post-data "$(oauth_form)" \
        -O /tmp/oauth.da "$oauth_dev" 2>/dev/null || { echo "LAB-OAUTH-ERROR device-auth"; return 1; }
    dc=$(json_str device_code /tmp/oauth.da)
    uc=$(json_str user_code /tmp/oauth.da)
    interval=$(json_num interval /tmp/oauth.da)
    [ -n "$interval" ] || interval=5
    echo "[OAuth] please visit the URL $(json_str verification_uri /tmp/oauth.da) and enter the code $uc"
    echo "LAB-OAUTH-CODE user_code=$uc uuid=$oauth_uuid"
    grant="grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code"
    form=$(oauth_form | sed "s/^\(client_id=[^&]*\)/\1\&device_code=$dc\&$grant/")
    basic="Authorization: Basic $(printf '%s:' "$oauth_client" | base64)"
    said=""
    first=1
    while :; do
        [ -n "$first" ] || sleep "$interval"
        first=""
        st=$(http_post_nc "$oauth_tok" "$form" "$basic" /tmp/oauth.r)
        [ "$st" = 200 ] || st=$(http_post_nc "$oauth_tok" "$form" "" /tmp/oauth.r)
        if [ "$st" = 200 ]; then
            sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' /tmp/oauth.r >/tmp/oauth.token
            echo "LAB-OAUTH-TOKEN"
            return 0
        fi
        case $(sed -n 's/.*"error":"\([^"]*\)".*/\1/p' /tmp/oauth.r) in
            authorization_pending) [ -n "$said" ] || echo "LAB-OAUTH-PENDING"; said=1 ;;
            slow_down) interval=$((interval + 5)); echo "LAB-OAUTH-SLOW-DOWN interval=$interval" ;;
            access_denied) echo "LAB-OAUTH-DENIED"; return 2 ;;
            expired_token) echo "LAB-OAUTH-EXPIRED"; return 3 ;;
            *) echo "LAB-OAUTH-ERROR status=$st"; return 1 ;;
        esac
    done
}

set -f
config_url=""
oauth_client=""
oauth_scopes=""
oauth_dev=""
oauth_tok=""
oauth_vars=""
callback_url=""
callback_delay=""
config_replay=""
lab_mode=""
lab_peers=""
for w in $(cat /proc/cmdline); do
    case "$w" in
        talos.config=*) config_url=${w#talos.config=} ;;
        talos.config.oauth.client_id=*) oauth_client=${w#*=} ;;
        talos.config.oauth.scope=*) oauth_scopes="$oauth_scopes ${w#*=}" ;;
        talos.config.oauth.device_auth_url=*) oauth_dev=${w#*=} ;;
        talos.config.oauth.token_url=*) oauth_tok=${w#*=} ;;
        talos.config.oauth.extra_variable=*) oauth_vars="$oauth_vars ${w#*=}" ;;
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

auth_header=""
if [ -n "$config_url" ] && [ -n "$oauth_client" ]; then
    oauth_uuid=$(cat /sys/class/dmi/id/product_uuid 2>/dev/null)
    oauth_mac=$(cat "/sys/class/net/$iface/address")
    nobearer=$(http_get "$config_url" /tmp/nobearer)
    rm -f /tmp/nobearer
    echo "LAB-CONFIG-NOBEARER status=$nobearer"
    # Talos retries the whole download (a fresh device authorization) after a
    # refusal; so do we, three times at most.
    tries=0
    until oauth_flow; do
        tries=$((tries + 1))
        [ $tries -lt 3 ] || fail "oauth"
    done
    auth_header="Authorization: Bearer $(cat /tmp/oauth.token)"
fi

if [ -n "$config_url" ]; then
    # No `wget -T`: Debian's busybox-static 1.35 wget segfaults with it.
    status=$(http_get "$config_url" /tmp/config "$auth_header") || fail "config-fetch status=$status"
    bytes=$(wc -c </tmp/config | tr -d ' ')
    sum=$(sha256sum /tmp/config | cut -d' ' -f1)
    echo "LAB-CONFIG-FETCHED bytes=$bytes sha256=$sum"
    echo "LAB-CONFIG-STATUS status=$status"
    # Facts about the document, never its contents (it carries the cluster's keys).
    doc_version=$(sed -n 's/^version: *//p' /tmp/config | head -n 1)
    doc_host=$(sed -n 's/^ *hostname: *//p' /tmp/config | head -n 1)
    echo "LAB-CONFIG-DOC version=${doc_version:-none} hostname=${doc_host:-none}"
    if [ -n "$config_replay" ]; then
        replay=$(http_get "$config_url" /tmp/replay "$auth_header")
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
