#!/usr/bin/env bash
# Run inside the Debian 13 root by `make test-next-stack` (scripts/next-stack/build-root.sh):
# `make setup` (must pick the next stack by itself), `make test`, `make run`, each timed.
# Summary lines "next-stack: <step> <seconds> s rc=<rc>" go to stdout and test-artifacts/next-stack.txt.
set -uo pipefail
cd "$(dirname "$0")/../.."
mkdir -p test-artifacts
summary=test-artifacts/next-stack.txt
: >"$summary"
note() { echo "next-stack: $*" | tee -a "$summary"; }
step() {  # step NAME CMD... -> runs CMD, records its wall time and exit status
  local name=$1 t0 rc; shift
  t0=$(date +%s)
  "$@"; rc=$?
  note "$name $(($(date +%s) - t0)) s rc=$rc"
  return "$rc"
}
note "$(date -u +%FT%TZ) $(. /etc/os-release; echo "$PRETTY_NAME"), glibc $(getconf GNU_LIBC_VERSION | cut -d' ' -f2), $(python3 --version)"
picked=$(scripts/next-stack/pick-stack auto)
[ "${picked%% *}" = next ] || { note "setup would pick '$picked', not the next stack"; exit 1; }
step setup make setup || exit 1
rc=0
step test nice -n 10 make test PYTEST_ARGS="${PYTEST_ARGS:--q -p no:cacheprovider}" || rc=1
step run nice -n 10 make run || rc=1
exit "$rc"
