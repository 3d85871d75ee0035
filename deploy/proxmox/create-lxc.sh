#!/usr/bin/env bash
# Creates, or upgrades, the provisioner appliance as an unprivileged Proxmox LXC on
# the management VLAN. Run as root on a Proxmox VE host:
#
#   create-lxc.sh --deb provisioner_0.1.0-1_amd64.deb --vlan 10 \
#                 --ip 10.10.10.5/24 --gw 10.10.10.1 [options]
#
#   --ctid N            container id                              [210]
#   --hostname NAME                                               [provisioner]
#   --bridge BR         VLAN-aware bridge of the management VLAN   [vmbr0]
#   --vlan TAG          802.1Q tag of the management VLAN         (required)
#   --ip CIDR           static address; also the advertised server_ip (required)
#   --gw IP             default gateway                           (required)
#   --nameserver IP                                               [the gateway]
#   --storage ID        rootfs storage                            [local-lvm]
#   --disk GIB / --memory MIB / --cores N                         [4 / 512 / 1]
#   --template-storage ID                                         [local]
#   --template FILE     e.g. debian-12-standard_12.7-1_amd64.tar.zst [newest listed]
#   --ssh-key FILE      authorized key for root in the container
#   --firewall          write /etc/pve/firewall/<ctid>.fw (README lists the rules)
#   --sandbox MODE      auto | full | no-mountns                  [auto]
#   --dry-run           print every command instead of running it
#   --assume-exists     with --dry-run: print the path for an existing container
#
# Idempotent: an existing container is kept (its settings are not changed), the
# package is installed or upgraded (a newer .deb upgrades; the same version is a
# no-op), /etc/default/provisioner is rewritten and the service restarted.
set -euo pipefail

ctid=210
hostname=provisioner
bridge=vmbr0
vlan=""
ip=""
gw=""
nameserver=""
storage=local-lvm
disk=4
memory=512
cores=1
tstore=local
template=""
ssh_key=""
firewall=0
sandbox=auto
dry_run=0
assume_exists=0
deb=""

die() { echo "create-lxc.sh: $*" >&2; exit 1; }
usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --deb) deb=$2; shift 2 ;;
    --ctid) ctid=$2; shift 2 ;;
    --hostname) hostname=$2; shift 2 ;;
    --bridge) bridge=$2; shift 2 ;;
    --vlan) vlan=$2; shift 2 ;;
    --ip) ip=$2; shift 2 ;;
    --gw) gw=$2; shift 2 ;;
    --nameserver) nameserver=$2; shift 2 ;;
    --storage) storage=$2; shift 2 ;;
    --disk) disk=$2; shift 2 ;;
    --memory) memory=$2; shift 2 ;;
    --cores) cores=$2; shift 2 ;;
    --template-storage) tstore=$2; shift 2 ;;
    --template) template=$2; shift 2 ;;
    --ssh-key) ssh_key=$2; shift 2 ;;
    --firewall) firewall=1; shift ;;
    --sandbox) sandbox=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --assume-exists) assume_exists=1; shift ;;
    -h | --help) usage 0 ;;
    *) echo "create-lxc.sh: unknown argument $1" >&2; usage 2 ;;
  esac
done

[ -n "$deb" ] || die "--deb is required"
[ -f "$deb" ] || die "no package at $deb"
[[ "$ctid" =~ ^[0-9]+$ ]] || die "--ctid must be a number"
if ! [[ "$vlan" =~ ^[0-9]+$ ]] || [ "$vlan" -lt 1 ] || [ "$vlan" -gt 4094 ]; then
  die "--vlan must be 1-4094"
fi
[[ "$ip" =~ ^[0-9]+(\.[0-9]+){3}/[0-9]+$ ]] || die "--ip must be an IPv4 address with a prefix, e.g. 10.10.10.5/24"
[[ "$gw" =~ ^[0-9]+(\.[0-9]+){3}$ ]] || die "--gw must be an IPv4 address"
case "$sandbox" in auto | full | no-mountns) ;; *) die "--sandbox must be auto, full or no-mountns" ;; esac
[ "$assume_exists" = 0 ] || [ "$dry_run" = 1 ] || die "--assume-exists only goes with --dry-run"
[ -z "$ssh_key" ] || [ -f "$ssh_key" ] || die "no key file at $ssh_key"
nameserver=${nameserver:-$gw}
server_ip=${ip%/*}
unit=provisioner.service
dropin=/etc/systemd/system/provisioner.service.d/no-mountns.conf

# quote ARG: ARG as the shell reads it back (single quotes only where needed).
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# run CMD...: the one place that changes anything; --dry-run prints it instead.
run() {
  if [ "$dry_run" = 1 ]; then
    local line="" arg
    for arg in "$@"; do
      line+="${line:+ }$(quote "$arg")"
    done
    echo "$line"
  else
    "$@"
  fi
}

# write_file PATH CONTENT: a file on this host (dry-run prints it as a heredoc).
write_file() {
  if [ "$dry_run" = 1 ]; then
    printf "cat > %s <<'EOF'\n%sEOF\n" "$1" "$2"
  else
    printf '%s' "$2" > "$1"
  fi
}

# in_ct CMD...: a command inside the container.
in_ct() { run pct exec "$ctid" -- "$@"; }

if [ "$dry_run" = 0 ]; then
  [ "$(id -u)" -eq 0 ] || die "run as root on the Proxmox host"
  if ! command -v pct >/dev/null || ! command -v pveam >/dev/null; then
    die "pct/pveam not found: is this a Proxmox VE host?"
  fi
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
else
  work=/tmp/provisioner-lxc
fi

# 1. The container, unless it exists.
exists=$assume_exists
if [ "$dry_run" = 0 ] && pct status "$ctid" >/dev/null 2>&1; then
  exists=1
fi
if [ "$exists" = 1 ]; then
  if [ "$dry_run" = 0 ]; then
    pct config "$ctid" | grep -q '^unprivileged: 1' || die "CT $ctid exists and is privileged; refusing"
  fi
  echo "# CT $ctid exists: keeping its settings, upgrading the package"
else
  if [ -z "$template" ]; then
    run pveam update
    if [ "$dry_run" = 1 ]; then
      template="debian-12-standard_12.7-1_amd64.tar.zst"
      echo "# template: the newest debian-12-standard in 'pveam available --section system'"
    else
      template=$(pveam available --section system | awk '{print $2}' | grep '^debian-12-standard_' | sort -V | tail -n1)
      [ -n "$template" ] || die "no debian-12-standard template listed by pveam"
    fi
  fi
  if [ "$dry_run" = 1 ] || ! pveam list "$tstore" | grep -q "vztmpl/$template"; then
    run pveam download "$tstore" "$template"
  fi
  create=(pct create "$ctid" "$tstore:vztmpl/$template"
    --hostname "$hostname" --ostype debian --arch amd64
    --unprivileged 1 --features nesting=0
    --cores "$cores" --memory "$memory" --swap 0 --rootfs "$storage:$disk"
    --net0 "name=eth0,bridge=$bridge,tag=$vlan,ip=$ip,gw=$gw,firewall=1"
    --nameserver "$nameserver" --onboot 1)
  if [ -n "$ssh_key" ]; then
    create+=(--ssh-public-keys "$ssh_key")
  fi
  run "${create[@]}"
fi

# 2. Firewall rules for the container's NIC (firewall=1 on net0).
if [ "$firewall" = 1 ]; then
  write_file "/etc/pve/firewall/$ctid.fw" "[OPTIONS]
enable: 1
policy_in: DROP
policy_out: ACCEPT

[RULES]
IN ACCEPT -p udp -dport 67 # DHCP / proxyDHCP
IN ACCEPT -p udp -dport 69 # TFTP
IN ACCEPT -p udp -dport 4011 # PXE boot server
IN ACCEPT -p tcp -dport 80 # HTTP boot
IN ACCEPT -p tcp -dport 443 # HTTPS boot
IN ACCEPT -p tcp -dport 8080 # API when exposed
IN SSH(ACCEPT)
"
fi

# 3. Running, booted.
if [ "$exists" = 0 ] || { [ "$dry_run" = 0 ] && ! pct status "$ctid" | grep -q running; }; then
  run pct start "$ctid"
fi
# "degraded" (some unit failed) still means booted; the service is checked below.
in_ct systemctl is-system-running --wait || true

# 4. The advertised address: one stable, configured IP (boot-protocols.md §9).
write_file "$work/default-provisioner" "# Written by create-lxc.sh; read by provisioner.service (EnvironmentFile).
PROVISIONER_SERVER_IP=$server_ip
PROVISIONER_INTERFACE=eth0
"
run pct push "$ctid" "$work/default-provisioner" /etc/default/provisioner --perms 0644

# 5. Install or upgrade the package; apt resolves its dependencies (ipxe, adduser).
run pct push "$ctid" "$deb" /root/provisioner.deb
in_ct env DEBIAN_FRONTEND=noninteractive apt-get update -q
in_ct env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
  -o Dpkg::Options::=--force-confold /root/provisioner.deb

# 6. Start with the full sandbox; fall back only where the CT cannot provide it.
install_dropin() {
  in_ct install -D -m 0644 /usr/share/provisioner/systemd/no-mountns.conf "$dropin"
  in_ct systemctl daemon-reload
}
if [ "$sandbox" = no-mountns ]; then
  install_dropin
fi
in_ct systemctl enable "$unit"
if [ "$sandbox" = auto ] && [ "$dry_run" = 1 ]; then
  echo "# if the restart fails with status 226/NAMESPACE, --sandbox auto runs:"
  echo "#   pct exec $ctid -- install -D -m 0644 /usr/share/provisioner/systemd/no-mountns.conf $dropin"
  echo "#   pct exec $ctid -- systemctl daemon-reload"
  echo "#   pct exec $ctid -- systemctl restart $unit"
  run pct exec "$ctid" -- systemctl restart "$unit"
elif ! run pct exec "$ctid" -- systemctl restart "$unit"; then
  status=$(pct exec "$ctid" -- systemctl show -p ExecMainStatus --value "$unit" || true)
  if [ "$sandbox" = auto ] && [ "$status" = 226 ]; then
    echo "create-lxc.sh: WARNING: this container cannot give the service a private mount" >&2
    echo "  namespace (226/NAMESPACE; AppArmor without nesting). Installing $dropin," >&2
    echo "  which keeps the user, capabilities, NoNewPrivileges and syscall filter." >&2
    install_dropin
    run pct exec "$ctid" -- systemctl restart "$unit" || true
  fi
fi

# 7. Check.
if [ "$dry_run" = 0 ] && ! pct exec "$ctid" -- systemctl is-active --quiet "$unit"; then
  pct exec "$ctid" -- journalctl -u "$unit" -n 30 --no-pager >&2 || true
  die "$unit is not running in CT $ctid"
fi
in_ct provisioner check
echo "# provisioner serves on $server_ip (VLAN $vlan, CT $ctid)."
echo "# DHCP relays / helper addresses: $server_ip. External DHCP snippet:"
echo "#   pct exec $ctid -- provisioner dhcp-snippet --for dnsmasq"
