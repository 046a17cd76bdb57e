#!/usr/bin/env bash
# Build (once, cached) a Debian 13 "trixie" root with debootstrap and run a command in it on a
# clean clone of this checkout: the next stack (Python 3.13, glibc 2.41, TFX 1.21) verified on
# any Linux, e.g. Debian 12. Root only (debootstrap, mount, chroot).
#
#   scripts/next-stack/build-root.sh          # = make test-next-stack: setup, test, run inside
#   scripts/next-stack/build-root.sh CMD...   # run CMD in the clone instead (e.g. make setup)
#
# MEDFLOW_NEXT_ROOT      where the root lives (default ~/.cache/medflow/trixie-root); rm -rf to rebuild
# MEDFLOW_NEXT_WORKTREE  1: copy the working tree's uncommitted files over the clone of HEAD
# MEDFLOW_NEXT_KEEP      1: run in the clone as it is (debugging one test while another run goes on)
# MEDFLOW_SHARED_DATA    the real-data folder (default ../shared/data), bind-mounted read-only
# DEBIAN_MIRROR          default http://deb.debian.org/debian
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
root=${MEDFLOW_NEXT_ROOT:-$HOME/.cache/medflow/trixie-root}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
data=${MEDFLOW_SHARED_DATA:-$repo/../shared/data}
# debootstrap resolves only simple dependency sets: the base here, the rest with apt inside.
base=python3,python3-venv,make,git,ca-certificates
# Compilers for any sdist with C code, plus what .ci/run installs for the tests (.ci/run runs in
# CI, not here: it would install what is missing itself).
packages="build-essential python3-dev procps curl orthanc orthanc-dicomweb chromium chromium-driver
  tesseract-ocr tesseract-ocr-eng"
stamp=$root/.medflow-root-ready
want_stamp="$base $packages"

die() { echo "build-root: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and chroot); run it with sudo"
command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap"

in_root() {  # in_root ROOT CMD: run CMD (a bash string) chrooted, in a private mount namespace
  unshare --mount --propagation private bash -euo pipefail -c '
    root=$1 data=$2
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount -t sysfs sys "$root/sys"
    mount -t tmpfs -o size=8g tmpfs "$root/tmp"
    mount -t tmpfs tmpfs "$root/dev/shm"
    if [ -d "$data" ] && [ -d "$root/work/shared/data" ]; then
      mount --bind -o ro "$data" "$root/work/shared/data"
    fi
    exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb MEDFLOW_IN_NEXT_ROOT=1 \
      DEBIAN_FRONTEND=noninteractive SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
      REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      /bin/bash -euo pipefail -c "$3"
  ' in-root "$1" "$data" "$2"
}

install_packages() {  # install_packages ROOT: the package list, with apt inside the root
  # shellcheck disable=SC2086  # the package list is split on purpose
  in_root "$1" "apt-get update -qq && apt-get install -y -qq --no-install-recommends $(echo $packages) && apt-get clean" \
    >>"$root.build.log" 2>&1 || die "apt-get install in the root failed; see $root.build.log"
}

current=$(cat "$stamp" 2>/dev/null || true)
if [ -n "$current" ] && [ "${current%% *}" = "$base" ] && [ "$current" != "$want_stamp" ]; then
  # Same debootstrap base, a changed package list: apt adds what is new to the cached root.
  echo "build-root: installing the changed package list into the cached root"
  install_packages "$root"
  printf '%s' "$want_stamp" >"$stamp"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want_stamp" ]; then
  echo "build-root: building the Debian 13 root at $root (minutes; cached afterwards)"
  log=$root.build.log
  rm -rf "$root" "$root.partial" && mkdir -p "$(dirname "$root")"
  debootstrap --variant=minbase --include="$base" trixie "$root.partial" "$mirror" >"$log" 2>&1 ||
    die "debootstrap failed; see $log"
  cp -L /etc/resolv.conf "$root.partial/etc/resolv.conf"
  # No service starts inside the root (Orthanc's: the tests start their own on loopback).
  printf '#!/bin/sh\nexit 101\n' >"$root.partial/usr/sbin/policy-rc.d"
  chmod +x "$root.partial/usr/sbin/policy-rc.d"
  install_packages "$root.partial"
  printf '%s' "$want_stamp" >"$root.partial/.medflow-root-ready"
  mv "$root.partial" "$root"
else
  echo "build-root: reusing the cached Debian 13 root at $root"
fi

# A clean clone of the checkout's HEAD at /work/medflow (MEDFLOW_NEXT_WORKTREE=1 adds the working
# tree's tracked and untracked-not-ignored files on top), the data at /work/shared/data (the tests
# look beside the checkout). Only the clone's .venv is kept between runs.
dest=$root/work/medflow
mkdir -p "$root/work/shared/data"
if [ -n "${MEDFLOW_NEXT_KEEP:-}" ] && [ -d "$dest/.git" ]; then
  echo "build-root: MEDFLOW_NEXT_KEEP: /work/medflow as it is"
else
  [ -d "$dest/.git" ] || git clone -q --no-checkout "$repo" "$dest"
  git -C "$dest" fetch -q "$repo" HEAD
  git -C "$dest" checkout -q -f --detach FETCH_HEAD
  git -C "$dest" clean -q -fdx -e /.venv
  if [ -n "${MEDFLOW_NEXT_WORKTREE:-}" ]; then
    (cd "$repo" && git ls-files -z -co --exclude-standard | tar --null -T - -cf -) | tar -C "$dest" -xf -
  fi
  echo "build-root: /work/medflow = $(git -C "$repo" rev-parse --short HEAD)${MEDFLOW_NEXT_WORKTREE:+ + working tree}"
fi
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
# This machine's own CAs (a TLS-inspecting proxy's, say) are trusted inside too.
if [ -n "$(ls -A /usr/local/share/ca-certificates 2>/dev/null)" ]; then
  cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
  in_root "$root" "update-ca-certificates >/dev/null 2>&1"
fi

[ "$#" -gt 0 ] || set -- scripts/next-stack/inside.sh
in_root "$root" "cd /work/medflow && $(printf '%q ' "$@")"
