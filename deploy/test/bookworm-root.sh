#!/usr/bin/env bash
# Unpacks a minimal Debian 12 (bookworm) root into DIR, for the packaging tests:
#
#   deploy/test/bookworm-root.sh DIR
#
# The root is made once with `debootstrap --variant=minbase` from Debian's
# repository and cached as a tarball under $PROVISIONER_DEPLOY_CACHE (default
# /var/tmp/provisioner-deploy-cache), so later runs unpack it in seconds. The cache
# also holds apt-archives/, which tests bind-mount over /var/cache/apt/archives so
# packages are downloaded once. Concurrent callers wait on a lock. Run as root.
set -euo pipefail

dest=${1:?usage: bookworm-root.sh DIR}
cache=${PROVISIONER_DEPLOY_CACHE:-/var/tmp/provisioner-deploy-cache}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
tarball="$cache/bookworm-minbase.tar"

mkdir -p "$cache/apt-archives/partial"
exec 9>"$cache/lock"
flock 9
if [ ! -s "$tarball" ]; then
  if ! command -v debootstrap >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  work=$(mktemp -d "$cache/build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "bookworm-root.sh: debootstrap bookworm from $mirror (once; cached in $cache)" >&2
  debootstrap --variant=minbase bookworm "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 20 "$work/debootstrap.log" >&2
    exit 1
  }
  tar -C "$work/root" -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
fi
flock -u 9

mkdir -p "$dest"
tar -C "$dest" -xf "$tarball"
# The build host's resolver, so apt inside the root can reach the repository.
cp -L /etc/resolv.conf "$dest/etc/resolv.conf"
echo "$dest"
