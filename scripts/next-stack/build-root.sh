#!/usr/bin/env bash
# Build (once, cached) a Debian 13 "trixie" root with debootstrap and run a command in it on a
# copy of this checkout: the next stack (Python 3.13, glibc 2.41, TFX 1.21) verified on a
# Debian 12 machine. Root only (debootstrap, mount, chroot).
#
#   scripts/next-stack/build-root.sh                 # build the root if needed, then `make test-next-stack-inside`
#   scripts/next-stack/build-root.sh CMD...          # ... then run CMD in the copy (e.g. make run)
#
# MEDFLOW_NEXT_ROOT  where the root lives (default ~/.cache/medflow/trixie-root); delete it to rebuild.
# MEDFLOW_SHARED_DATA  the real-data folder (default ../shared/data), bind-mounted read-only.
# DEBIAN_MIRROR      default http://deb.debian.org/debian
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
root=${MEDFLOW_NEXT_ROOT:-$HOME/.cache/medflow/trixie-root}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
data=${MEDFLOW_SHARED_DATA:-$repo/../shared/data}
# The interpreter and build tools, plus what .ci/run installs for the tests (it installs any it
# finds missing itself, inside the root, so this list only saves that step).
packages=python3,python3-venv,python3-dev,build-essential,make,git,ca-certificates,procps,tzdata
packages+=,orthanc,orthanc-dicomweb,chromium,chromium-driver,tesseract-ocr,tesseract-ocr-eng
stamp=$root/.medflow-root-ready

die() { echo "build-root: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and chroot); run it with sudo"
command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap"

if [ "$(cat "$stamp" 2>/dev/null)" != "$packages" ]; then
  echo "build-root: building Debian 13 root at $root (minutes; cached afterwards)"
  rm -rf "$root" && mkdir -p "$(dirname "$root")"
  debootstrap --variant=minbase --include="$packages" trixie "$root.partial" "$mirror" \
    >"$root.debootstrap.log" 2>&1 || die "debootstrap failed; see $root.debootstrap.log"
  mv "$root.partial" "$root"
  printf '%s' "$packages" >"$stamp"
else
  echo "build-root: reusing cached Debian 13 root at $root"
fi

# A copy of the checkout (tracked and untracked-not-ignored files) at /work/medflow, the data at
# /work/shared/data (the tests look beside the checkout). The copy's .venv is kept between runs.
dest=$root/work/medflow
mkdir -p "$dest" "$root/work/shared/data"
find "$dest" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
(cd "$repo" && git ls-files -z -co --exclude-standard | tar --null -T - -cf -) | tar -C "$dest" -xf -
cp -L /etc/resolv.conf "$root/etc/resolv.conf"

[ "$#" -gt 0 ] || set -- make test-next-stack-inside
cmd=$(printf '%q ' "$@")
# A private mount namespace: every mount below disappears when the command ends.
exec unshare --mount --propagation private bash -euo pipefail -c '
  root=$1 data=$2 cmd=$3
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev"
  mount -t sysfs sys "$root/sys"
  mount -t tmpfs -o size=8g tmpfs "$root/tmp"
  mount -t tmpfs tmpfs "$root/dev/shm"
  if [ -d "$data" ]; then mount --bind -o ro "$data" "$root/work/shared/data"; fi
  exec chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 TERM=dumb MEDFLOW_IN_NEXT_ROOT=1 /bin/bash -c "cd /work/medflow && $cmd"
' build-root "$root" "$data" "$cmd"
