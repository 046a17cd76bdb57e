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
mkdir -p "$dir/db" "$dir/auth"

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

"$kubectl" create namespace "$ns" --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
for name in db auth; do
  secret="medflow-db"; [ "$name" = auth ] && secret="medflow-dashboard-auth"
  "$kubectl" -n "$ns" create secret generic "$secret" --from-file="$dir/$name" \
    --dry-run=client -o yaml | "$kubectl" apply -f -
done
echo "secrets applied in namespace $ns; values kept in $dir (git-ignored)"
