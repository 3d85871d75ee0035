#!/usr/bin/env bash
# Builds the appliance's Debian package with plain dpkg-deb (no debhelper):
#
#   deploy/build-deb.sh                         # cargo build --release, then package
#   deploy/build-deb.sh --binary PATH --version 0.1.0-2 --out DIR --compress gzip
#
# Prints the path of the .deb on its last line. Contents: /usr/bin/provisioner, the
# systemd unit, /etc/provisioner/{provisioner.yaml,profiles,images,infra,gitops}
# (conffiles, from the repository; gitops/ is what the cluster hand-off applies and
# checks, settings.yaml's repository URL the operator's to set), the LXC drop-in and
# the README. State in /var/lib/provisioner is created by postinst, never shipped,
# so upgrades cannot touch it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
binary=""
version=""
out="${CARGO_TARGET_DIR:-$repo/target}/deb"
compress=xz

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --compress) compress=$2; shift 2 ;;
    -h | --help) usage 0 ;;
    *) echo "build-deb.sh: unknown argument $1" >&2; usage 2 ;;
  esac
done

# Tools: dpkg-deb comes with dpkg; readelf/objdump/strip with binutils.
need=()
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v readelf >/dev/null && command -v objdump >/dev/null && command -v strip >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "build-deb.sh: missing ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ -z "$binary" ]; then
  (cd "$repo" && cargo build --release --locked -p provisioner)
  binary="${CARGO_TARGET_DIR:-$repo/target}/release/provisioner"
fi
[ -x "$binary" ] || { echo "build-deb.sh: no executable at $binary" >&2; exit 1; }

if [ -z "$version" ]; then
  upstream=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n1)
  version="$upstream-1"
fi
arch=$(dpkg --print-architecture)

# Depends from the ELF: every NEEDED library must map to a package we know.
glibc=$(objdump -T "$binary" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)
depends="libc6 (>= $glibc)"
while read -r lib; do
  case "$lib" in
    libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | ld-linux-*.so.2) ;;
    libgcc_s.so.1) depends="$depends, libgcc-s1" ;;
    *) echo "build-deb.sh: no Debian package known for $lib" >&2; exit 1 ;;
  esac
done < <(readelf -d "$binary" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p')
# ca-certificates: the Kubernetes client (kube, rustls) loads the system roots for a
# cluster whose kubeconfig carries no CA, and `images pull` fetches over HTTPS; a
# minimal Debian root has none (the package test's hand-off failed without them).
depends="$depends, ipxe, adduser, ca-certificates"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
  "$root/etc/provisioner" "$root/usr/share/provisioner/systemd" "$root/usr/share/doc/provisioner"
# Debug sections stay in the build tree; symbols stay for backtraces.
strip --strip-debug -o "$root/usr/bin/provisioner" "$binary"
chmod 0755 "$root/usr/bin/provisioner"
install -m 0644 "$here/systemd/provisioner.service" "$root/lib/systemd/system/"
install -m 0644 "$here/systemd/no-mountns.conf" "$root/usr/share/provisioner/systemd/"
install -m 0644 "$here/provisioner.yaml" "$root/etc/provisioner/"
for d in profiles images infra gitops; do
  cp -r "$repo/$d" "$root/etc/provisioner/$d"
done
find "$root/etc" -type d -exec chmod 0755 {} + -o -type f -exec chmod 0644 {} +
install -m 0644 "$here/README.md" "$root/usr/share/doc/provisioner/README.md"
cat > "$root/usr/share/doc/provisioner/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: provisioner

Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
for s in preinst postinst prerm postrm; do
  install -m 0755 "$here/debian/$s" "$root/DEBIAN/$s"
done
(cd "$root" && find etc -type f | sort | sed 's|^|/|') > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/control" <<CONTROL
Package: provisioner
Version: $version
Architecture: $arch
Maintainer: provisioner maintainers <root@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $depends
Section: net
Priority: optional
Description: zero-touch bare-metal provisioning appliance
 DHCP/proxyDHCP, TFTP and HTTP/iPXE network boot for Talos and k0s nodes,
 with an embedded machine inventory, backups and a hardened systemd unit.
CONTROL

mkdir -p "$out"
deb="$out/provisioner_${version}_${arch}.deb"
case "$compress" in
  xz) zopts=(-Zxz) ;;
  gzip) zopts=(-Zgzip -z1) ;;
  none) zopts=(-Znone) ;;
  *) echo "build-deb.sh: --compress xz|gzip|none" >&2; exit 2 ;;
esac
dpkg-deb --root-owner-group "${zopts[@]}" --build "$root" "$deb" >/dev/null
echo "$deb"
