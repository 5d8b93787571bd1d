#!/usr/bin/env bash
# The Aspire dashboard on this machine in one command: an OpenTelemetry (OTLP) receiver with a web UI for the traces
# and metrics of mrvae silos and clients. Runs in the foreground until Ctrl-C.
#
# Usage: deploy/dashboard.sh [options]
#   --ui-port N          UI and telemetry API (default 18888)
#   --otlp-port N        OTLP over gRPC, the exporters' default protocol (default 4317)
#   --otlp-http-port N   OTLP over HTTP (default 4318)
#   --path               print the dashboard executable's path (restoring it first if needed) and exit
# Everything listens on 127.0.0.1 only and without authentication: anyone on this machine can send and read
# telemetry. The telemetry HTTP API is on (GET /api/telemetry/resources, /traces, /traces/ID, /spans, /logs).
# The executable is ASPIRE_DASHBOARD_PATH when set, else the one in the NuGet package Aspire.Dashboard.Sdk.linux-x64
# (the version in Directory.Packages.props), restored into the NuGet cache on first use through
# deploy/aspire-dashboard/. Needs: the .NET 10 SDK.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

ui=18888; grpc=4317; http=4318; path_only=0
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --ui-port) ui="${2:-}"; shift 2 ;;
    --otlp-port) grpc="${2:-}"; shift 2 ;;
    --otlp-http-port) http="${2:-}"; shift 2 ;;
    --path) path_only=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for n in ui grpc http; do
  [[ "${!n}" =~ ^[1-9][0-9]*$ ]] && [ "${!n}" -le 65535 ] || { echo "error: port must be 1-65535, got '${!n}'" >&2; exit 2; }
done

# The executable: given, or restored from the package (one small restore-only project; a few seconds when cached).
dash="${ASPIRE_DASHBOARD_PATH:-}"
if [ -z "$dash" ]; then
  command -v dotnet >/dev/null || { echo "error: dotnet not found (the .NET 10 SDK)" >&2; exit 1; }
  project="$repo/deploy/aspire-dashboard/aspire-dashboard.csproj"
  if ! out=$(dotnet restore "$project" -nologo -v quiet 2>&1); then
    printf '%s\n' "$out" >&2; echo "error: restoring Aspire.Dashboard.Sdk.linux-x64 failed (is the NuGet feed reachable?)" >&2; exit 1
  fi
  dash=$(dotnet msbuild "$project" -nologo -getProperty:AspireDashboardPath | tail -n 1)
fi
[ -f "$dash" ] || { echo "error: the Aspire dashboard is not at '$dash'" >&2; exit 1; }
cmd=("$dash")
case "$dash" in
  *.dll) cmd=(dotnet "$dash") ;;                 # older packages shipped a framework-dependent Aspire.Dashboard.dll
  *) [ -x "$dash" ] || chmod u+x "$dash" ;;      # a package cache extracted without the executable bit
esac
if [ "$path_only" = 1 ]; then echo "$dash"; exit 0; fi

for p in "$ui" "$grpc" "$http"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "error: 127.0.0.1:$p is already in use (another dashboard? choose ports with --ui-port/--otlp-port/--otlp-http-port)" >&2; exit 1
  fi
done

echo "Aspire dashboard: http://127.0.0.1:$ui   (Ctrl-C stops it)"
echo "Send telemetry to it from silos and clients:"
echo "  export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$grpc"
echo "  (or OTLP/HTTP: OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$http OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)"
# exec: the dashboard takes this process's PID, so whoever started the script stops the dashboard itself.
exec env ASPNETCORE_URLS="http://127.0.0.1:$ui" \
  ASPIRE_DASHBOARD_OTLP_ENDPOINT_URL="http://127.0.0.1:$grpc" ASPIRE_DASHBOARD_OTLP_HTTP_ENDPOINT_URL="http://127.0.0.1:$http" \
  ASPIRE_ALLOW_UNSECURED_TRANSPORT=true DASHBOARD__FRONTEND__AUTHMODE=Unsecured DASHBOARD__OTLP__AUTHMODE=Unsecured \
  DASHBOARD__API__ENABLED=true DASHBOARD__API__AUTHMODE=Unsecured \
  "${cmd[@]}"
