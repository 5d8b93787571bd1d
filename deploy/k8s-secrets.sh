#!/usr/bin/env bash
# The Secrets k8s/base mounts, as YAML on stdout (kubectl create secret --dry-run=client -o yaml): apply with
#   deploy/k8s-secrets.sh | kubectl apply -f -
# Made with `mrvae certs` (docs/security.md) into a local folder that keeps the CA key: run it again and it reuses
# the CA, the Redis password and the dashboard keys there, and issues fresh node certificates.
#   mrvae-tls-silo-GROUP   cert.pem, key.pem, ca.pem: a silo certificate naming the group's modalities
#   mrvae-tls-operator     cert.pem, key.pem, ca.pem: the operator certificate of the client Job (--tls)
#   mrvae-redis-password   password: Redis' requirepass, read by silos and the client from a file
#   mrvae-dashboard        browser-token (the Aspire dashboard's UI login), otlp-api-key (its OTLP API key)
#
# Usage: deploy/k8s-secrets.sh [options]
#   --certs DIR        where the CA, the certificates and the secrets are kept (default certs/k8s; mode 0700;
#                      keep it out of version control, it holds the CA key)
#   --groups "G=M ..." silo groups and their modalities (default "m01=0,1 m23=2,3 m4=4", as k8s/base)
#   --namespace NS     the Secrets' namespace (default mrvae)
#   --days N           node certificates' validity in days (default 365)
# Needs: kubectl (only its --dry-run=client, no cluster), and mrvae (./mrvae, or the command in $MRVAE_CLI).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
certs="certs/k8s"; groups="m01=0,1 m23=2,3 m4=4"; namespace="mrvae"; days=365
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --certs) certs="$2"; shift 2 ;;
    --groups) groups="$2"; shift 2 ;;
    --namespace) namespace="$2"; shift 2 ;;
    --days) days="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
command -v kubectl >/dev/null || { echo "error: kubectl not found (Debian: apt-get install kubernetes-client)" >&2; exit 1; }
read -r -a mrvae <<<"${MRVAE_CLI:-$repo/mrvae}"

mkdir -p "$certs"; chmod 700 "$certs"
# mrvae's own lines go to stderr: stdout is the YAML.
[ -f "$certs/ca/ca-key.pem" ] || "${mrvae[@]}" certs init --out "$certs/ca" --name "mrvae k8s cluster CA" >&2
secret() { # name, then kubectl create secret generic arguments
  local name="$1"; shift
  echo "---"
  kubectl create secret generic "$name" --namespace "$namespace" --dry-run=client -o yaml "$@"
}
for entry in $groups; do
  group="${entry%%=*}"; modalities="${entry#*=}"
  [ -n "$group" ] && [ -n "$modalities" ] && [ "$group" != "$entry" ] || { echo "error: --groups entry '$entry' is not GROUP=MODALITIES (e.g. m01=0,1)" >&2; exit 2; }
  "${mrvae[@]}" certs issue --ca "$certs/ca" --name "silo-$group" --role silo --modalities "$modalities" --days "$days" --out "$certs/silo-$group" >&2
  secret "mrvae-tls-silo-$group" --from-file="$certs/silo-$group/cert.pem" --from-file="$certs/silo-$group/key.pem" --from-file="$certs/silo-$group/ca.pem"
done
"${mrvae[@]}" certs issue --ca "$certs/ca" --name operator --role operator --days "$days" --out "$certs/operator" >&2
secret mrvae-tls-operator --from-file="$certs/operator/cert.pem" --from-file="$certs/operator/key.pem" --from-file="$certs/operator/ca.pem"

# Random secrets, made once and kept (0600) so that a rerun does not lock the silos out of a running Redis.
random_file() { [ -s "$1" ] || (umask 077; head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$1"); }
random_file "$certs/redis-password"; random_file "$certs/dashboard-browser-token"; random_file "$certs/dashboard-otlp-api-key"
secret mrvae-redis-password --from-file=password="$certs/redis-password"
secret mrvae-dashboard --from-file=browser-token="$certs/dashboard-browser-token" --from-file=otlp-api-key="$certs/dashboard-otlp-api-key"
echo "k8s-secrets: Secrets for $(echo "$groups" | wc -w) silo groups, the operator, Redis and the dashboard (namespace $namespace); CA and keys kept in $certs" >&2
