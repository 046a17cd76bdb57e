#!/usr/bin/env bash
# Create the two Secrets the manifests mount, with fresh random values, in namespace
# ${NAMESPACE:-medflow}. Values are written under k8s/secrets/ (git-ignored, mode 600) so
# you can read them (e.g. the first admin password); nothing secret is ever committed.
#
#   k8s/make-secrets.sh            # generate (once) and apply
#   DB_URL='postgresql+pg8000://USER:<password>@db.example:5432/medflow' k8s/make-secrets.sh
#                                  # external PostgreSQL instead of the in-cluster one
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ns="${NAMESPACE:-medflow}"
kubectl="${KUBECTL:-kubectl}"
dir="$here/secrets"
umask 077
mkdir -p "$dir/db" "$dir/auth" "$dir/deid"

rand() { python3 -c 'import secrets; print(secrets.token_urlsafe(32), end="")'; }
[ -s "$dir/db/password" ] || rand > "$dir/db/password"
if [ -n "${DB_URL:-}" ]; then
  printf '%s' "$DB_URL" > "$dir/db/url"
elif [ ! -s "$dir/db/url" ]; then
  printf 'postgresql+pg8000://medflow:%s@medflow-postgres:5432/medflow' \
    "$(cat "$dir/db/password")" > "$dir/db/url"
fi
[ -s "$dir/auth/cookie-key" ] || rand > "$dir/auth/cookie-key"
[ -s "$dir/auth/admin-password" ] || rand > "$dir/auth/admin-password"
# The pipeline's de-identification key (mounted into the steps by `medflow compile`'s spec).
# Keep it: the same key gives the same pseudonyms, so patients stay in one split over runs.
[ -s "$dir/deid/deid.key" ] || rand > "$dir/deid/deid.key"

"$kubectl" create namespace "$ns" --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
for name in db auth deid; do
  case "$name" in
    db) secret="medflow-db" ;;
    auth) secret="medflow-dashboard-auth" ;;
    deid) secret="medflow-deid-key" ;;
  esac
  "$kubectl" -n "$ns" create secret generic "$secret" --from-file="$dir/$name" \
    --dry-run=client -o yaml | "$kubectl" apply -f -
done
echo "secrets applied in namespace $ns; values kept in $dir (git-ignored)"
