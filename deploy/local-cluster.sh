#!/usr/bin/env bash
# A MrVae cluster on this machine, on loopback only: a private redis-server (clustering), N mrvae-silo processes
# (each serving its own modalities), optionally the Aspire OTLP dashboard; then a short training through the client
# (`mrvae train --cluster redis://...`), a check of the run's metrics.jsonl, and a clean shutdown of exactly the
# processes this script started (by their recorded PIDs).
#
# Usage: deploy/local-cluster.sh [options]
#   --silos N            silo processes (default 3)
#   --groups "A B C"     modalities per silo, one comma list per silo (default: the dataset's modalities split in
#                        contiguous groups, for 5 modalities and 3 silos "0,1 2,3 4"); "-" means "any"
#   --dataset DIR        extended PolyMNIST dataset (default data/local-cluster); made if it has no spec.json
#   --train N --test N   tuples when the dataset is made (default 1024 / 256)
#   --mnist DIR          MNIST folder for making the dataset (default: mrvae's lookup order, see the README's Data section)
#   --model NAME         mrvae | mopoe | mvae | mmvae (default mrvae)
#   --steps N            training steps (default 10)     --batch N  batch size (default 32)
#   --out DIR            run directory (default runs/local-cluster)
#   --dashboard          send traces and metrics to the Aspire dashboard (UI http://127.0.0.1:18888, OTLP
#                        127.0.0.1:4317): one already running from deploy/dashboard.sh, else started here through
#                        deploy/dashboard.sh (and stopped with the cluster); skipped with a note when it cannot be had
#   --tls                secure the cluster (docs/security.md): a CA and certificates made on the fly with `mrvae certs`
#                        in RUNDIR/certs, mutual TLS between silos and with the client (an operator certificate), Redis
#                        with a password (a 0600 file, never on a command line); after training, two intruders try to
#                        get in (a client without a certificate asking for status, a silo with another CA's certificate
#                        joining) and one line each says whether they were refused; exit code 3 if either got in
#   --keep               after the run, keep the cluster up until Ctrl-C (to attach more silos, see docs/design.md)
#   --timeout S          bound for each wait: Redis and silo start (default 120); the training gets 5×S
#   --no-build           use the existing builds (src/MrVae.Silo/bin/CONFIG/net10.0/mrvae-silo.dll and
#                        src/MrVae.Cli/bin/CONFIG/net10.0/mrvae.dll; CONFIG: $MRVAE_CONFIGURATION, default Release)
# Needs: the .NET 10 SDK, redis-server (Debian: apt-get install redis-server).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

silos=3; groups=""; dataset="data/local-cluster"; ntrain=1024; ntest=256; mnist=""; model="mrvae"
steps=10; batch=32; out="runs/local-cluster"; dashboard=0; keep=0; timeout_s=120; build=1; tls=0
config="${MRVAE_CONFIGURATION:-Release}"
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --silos) silos="$2"; shift 2 ;;
    --groups) groups="$2"; shift 2 ;;
    --dataset) dataset="$2"; shift 2 ;;
    --train) ntrain="$2"; shift 2 ;;
    --test) ntest="$2"; shift 2 ;;
    --mnist) mnist="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --dashboard) dashboard=1; shift ;;
    --keep) keep=1; shift ;;
    --tls) tls=1; shift ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for n in silos ntrain ntest steps batch timeout_s; do
  [[ "${!n}" =~ ^[1-9][0-9]*$ ]] || { echo "error: ${n/timeout_s/timeout} must be a positive integer, got '${!n}'" >&2; exit 2; }
done
command -v redis-server >/dev/null || { echo "error: redis-server not found (Debian: apt-get install redis-server)" >&2; exit 1; }
command -v dotnet >/dev/null || { echo "error: dotnet not found (the .NET 10 SDK)" >&2; exit 1; }

logs="$out/cluster-logs"
mkdir -p "$logs"
pids=()      # every process this script started, in start order
names=()
t0=$SECONDS
say() { printf '[local-cluster %3ds] %s\n' "$((SECONDS - t0))" "$*"; }

# Sends TERM to the recorded processes whose name matches PATTERN, waits up to S seconds for them, then KILLs the rest.
stop_matching() {
  local pattern="$1" s="$2" i pid deadline=$((SECONDS + $2))
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    [[ "${names[$i]}" == $pattern ]] || continue
    kill -TERM "${pids[$i]}" 2>/dev/null || true
  done
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    [[ "${names[$i]}" == $pattern ]] || continue
    pid="${pids[$i]}"
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      say "${names[$i]} (pid $pid) did not stop in $s s: killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
}
fg_pid=""   # the client command running now (data make, train), if any
# Runs a command in the background and waits for it, so that INT/TERM reach the traps at once (bash runs a trap
# only after a foreground command ends).
run_fg() { "$@" & fg_pid=$!; local rc=0; wait "$fg_pid" || rc=$?; fg_pid=""; return $rc; }
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$fg_pid" ]; then kill -TERM "$fg_pid" 2>/dev/null || true; wait "$fg_pid" 2>/dev/null || true; fi
  # Silos leave the cluster (they write to Redis while doing so), then the dashboard and Redis go.
  stop_matching 'silo*' 30
  stop_matching '*' 10
  [ ${#pids[@]} -gt 0 ] && say "stopped ${#pids[@]} processes (${names[*]})"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A TCP port on 127.0.0.1 that nothing listens on, checked by connecting. It is drawn below the kernel's ephemeral
# range when there is room, so that outgoing connections (which take ephemeral ports) cannot grab it before the
# silo binds it; a silo that still loses its port is restarted on new ones (start_silo).
read -r ephemeral_low _ < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || ephemeral_low=60000
port_low=20000; port_span=$((ephemeral_low - port_low))
[ "$port_span" -ge 2000 ] || port_span=40000
# free_port VAR sets VAR, and records the port in this shell, so that no two calls hand out the same one (a command
# substitution would record it in a subshell: two silos once drew the same silo port and one was declared dead).
taken=" "
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((port_low + (RANDOM * 32768 + RANDOM) % port_span))
    case "$taken" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then taken="$taken$p "; printf -v "$1" '%s' "$p"; return 0; fi
  done
  echo "error: no free loopback port found" >&2; return 1
}
# Waits until 127.0.0.1:PORT accepts connections, PID is still alive, at most S seconds.
wait_port() {
  local port="$1" pid="$2" what="$3" s="$4" log="$5" deadline=$((SECONDS + $4))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "error: $what exited before listening on 127.0.0.1:$port; last lines of $log:" >&2; tail -n 20 "$log" >&2; return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "error: $what not listening on 127.0.0.1:$port after $s s; last lines of $log:" >&2; tail -n 20 "$log" >&2; return 1
    fi
    sleep 0.2
  done
}
start() { # name log cmd... ; records the PID
  local name="$1" log="$2"; shift 2
  "$@" >"$log" 2>&1 &
  pids+=($!); names+=("$name")
}

# 1. Builds: the silo host and the client console.
silo_dll="$repo/src/MrVae.Silo/bin/$config/net10.0/mrvae-silo.dll"
cli_dll="$repo/src/MrVae.Cli/bin/$config/net10.0/mrvae.dll"
if [ "$build" = 1 ]; then
  say "building mrvae-silo and mrvae ($config)"
  for project in src/MrVae.Silo src/MrVae.Cli; do
    if ! blog=$(dotnet build "$project" -c "$config" -nologo -v quiet 2>&1); then
      printf '%s\n' "$blog" >&2; echo "error: building $project failed" >&2; exit 1
    fi
  done
fi
for dll in "$silo_dll" "$cli_dll"; do
  [ -f "$dll" ] || { echo "error: $dll not found (build it, or run without --no-build)" >&2; exit 1; }
done

# 2. The dataset: made once, reused afterwards.
if [ ! -f "$dataset/spec.json" ]; then
  say "making extended PolyMNIST in $dataset ($ntrain train, $ntest test)"
  run_fg timeout "$((timeout_s * 3))" dotnet "$cli_dll" data make --dataset polymnist-extended --out "$dataset" --train "$ntrain" --test "$ntest" --seed 0 ${mnist:+--mnist "$mnist"}
fi
dataset="$(cd "$dataset" && pwd)"
modalities=$(grep -o '"modalities"[[:space:]]*:[[:space:]]*[0-9]*' "$dataset/spec.json" | head -n 1 | grep -o '[0-9]*$')
[ -n "$modalities" ] || { echo "error: no modality count in $dataset/spec.json" >&2; exit 1; }

# 3. Modality groups: given, or contiguous blocks of ceil(M / N).
if [ -n "$groups" ]; then
  read -r -a group <<<"$groups"
  [ ${#group[@]} -eq "$silos" ] || { echo "error: --groups has ${#group[@]} groups for $silos silos" >&2; exit 2; }
else
  group=(); per=$(( (modalities + silos - 1) / silos ))
  for ((i = 0; i < silos; i++)); do
    g=""; for ((j = i * per; j < (i + 1) * per && j < modalities; j++)); do g="${g:+$g,}$j"; done
    group+=("${g:--}")
  done
fi

# 4. Optional: the Aspire dashboard as the OTLP endpoint (deploy/dashboard.sh: loopback, OTLP/gRPC on 4317).
otel=()
if [ "$dashboard" = 1 ]; then
  if (exec 3<>/dev/tcp/127.0.0.1/4317) 2>/dev/null; then
    say "dashboard: something already listens on 127.0.0.1:4317 (deploy/dashboard.sh?); sending telemetry there"
    otel=(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317)
  elif dash=$(bash "$repo/deploy/dashboard.sh" --path 2>"$logs/dashboard.log"); then
    say "starting the Aspire dashboard ($dash): UI http://127.0.0.1:18888, OTLP 127.0.0.1:4317"
    start dashboard "$logs/dashboard.log" env ASPIRE_DASHBOARD_PATH="$dash" bash "$repo/deploy/dashboard.sh"
    wait_port 4317 "${pids[-1]}" dashboard "$timeout_s" "$logs/dashboard.log"
    otel=(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317)
  else
    say "dashboard: not available ($(tail -n 1 "$logs/dashboard.log")); skipped"
  fi
fi

# 4b. --tls: a cluster CA, one certificate per silo naming its modalities, an operator certificate for the client,
# and a random Redis password; keys and the password are 0600 files. The client and silos read the password from
# the file (MRVAE_REDIS_PASSWORD_FILE, MrVae__Redis__PasswordFile), redis-server from a config file.
redis_conf=()
tls_env=()     # per-silo settings are added below
client_tls=()
if [ "$tls" = 1 ]; then
  certs="$out/certs"
  rm -rf "$certs"; mkdir -p "$certs"; chmod 700 "$certs"
  certs="$(cd "$certs" && pwd)"
  mrvae_certs() { dotnet "$cli_dll" certs "$@" >>"$logs/certs.log" 2>&1 || { echo "error: mrvae certs $1 failed; see $logs/certs.log" >&2; exit 1; }; }
  mrvae_certs init --out "$certs/ca"
  for ((i = 0; i < silos; i++)); do
    mods="${group[$i]}"; [ "$mods" = "-" ] && mods=$(seq -s, 0 $((modalities - 1)))
    mrvae_certs issue --ca "$certs/ca" --name "silo$i" --role silo --modalities "$mods" --out "$certs/silo$i"
  done
  mrvae_certs issue --ca "$certs/ca" --name operator --role operator --out "$certs/operator"
  (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$certs/redis-password"
   printf 'requirepass %s\n' "$(cat "$certs/redis-password")" >"$certs/redis.conf")
  redis_conf=("$certs/redis.conf")
  client_tls=(--tls "$certs/operator")
  export MRVAE_REDIS_PASSWORD_FILE="$certs/redis-password"
  say "tls: CA, ${silos} silo certificates and an operator certificate in $certs; Redis requires a password ($certs/redis-password)"
fi
silo_tls() { # the MrVae__Tls__* and Redis password settings of silo $1 (none without --tls)
  [ "$tls" = 1 ] || return 0
  printf '%s\n' "MrVae__Tls__Certificate=$certs/$1/cert.pem" "MrVae__Tls__Key=$certs/$1/key.pem" "MrVae__Tls__Ca=$certs/$1/ca.pem" \
    "MrVae__Redis__PasswordFile=$certs/redis-password"
}

# 5. Redis: private port, loopback, no persistence.
free_port redis_port
start redis "$logs/redis.log" redis-server ${redis_conf[@]+"${redis_conf[@]}"} --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --protected-mode yes
wait_port "$redis_port" "${pids[-1]}" redis-server "$timeout_s" "$logs/redis.log"
say "redis-server on 127.0.0.1:$redis_port (pid ${pids[-1]})"

# 6. Silos: all start at once, each with its own ports and modalities; then wait for every gateway. silo0 serves the
# Orleans dashboard's UI (it shows the whole cluster): on 8080 when that is free, else on a free port.
gateways=()
silo_pids=()
orleans_dashboard=8080
(exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && free_port orleans_dashboard
start_silo() { # i: starts silo i on two new free ports; records its gateway and PID
  local i="$1" silo_port gateway_port mods ui tls_env
  free_port silo_port; free_port gateway_port
  mods="${group[$i]}"; [ "$mods" = "-" ] && mods=""
  if [ "$i" = 0 ]; then ui=(MrVae__Dashboard__Port="$orleans_dashboard"); else ui=(MrVae__Dashboard__Enabled=false); fi
  mapfile -t tls_env < <(silo_tls "silo$i")
  start "silo$i" "$logs/silo$i.log" env DOTNET_ENVIRONMENT=Production "${ui[@]}" ${tls_env[@]+"${tls_env[@]}"} \
    MrVae__Clustering__Redis="127.0.0.1:$redis_port" \
    MrVae__Silo__Modalities="$mods" MrVae__Silo__Role="silo$i" MrVae__Silo__TorchThreads=1 \
    MrVae__Endpoints__SiloPort="$silo_port" MrVae__Endpoints__GatewayPort="$gateway_port" \
    ${otel[@]+"${otel[@]}"} ${otel[@]+OTEL_SERVICE_NAME=mrvae-silo$i} \
    dotnet "$silo_dll"
  gateways[$i]="$gateway_port"; silo_pids[$i]="${pids[-1]}"
  say "silo$i: modalities ${mods:-any}, role silo$i (attach --silo), silo port $silo_port, gateway $gateway_port (pid ${pids[-1]})"
}
for ((i = 0; i < silos; i++)); do start_silo "$i"; done
# A silo is up when its gateway listens and it has joined the cluster (Orleans logs "Orleans Silo started." once
# its membership status is Active; the gateway port opens earlier, while the silo is still joining).
wait_joined() {
  local i="$1" pid="$2" deadline=$((SECONDS + timeout_s))
  until grep -q "Orleans Silo started" "$logs/silo$i.log" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "error: silo$i exited while joining; last lines of $logs/silo$i.log:" >&2; tail -n 20 "$logs/silo$i.log" >&2; return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "error: silo$i has not joined the cluster after $timeout_s s; last lines of $logs/silo$i.log:" >&2; tail -n 20 "$logs/silo$i.log" >&2; return 1
    fi
    sleep 0.2
  done
}
# Another process may take a port between free_port's check and the silo's bind; such a silo dies at start with
# "address already in use" and is started again on new ports (at most 3 times).
lost_port() { ! kill -0 "$1" 2>/dev/null && grep -qi "address already in use" "$2"; }   # PID LOG
for ((i = 0; i < silos; i++)); do
  for attempt in 1 2 3; do
    deadline=$((SECONDS + timeout_s))
    until grep -q "Orleans Silo started" "$logs/silo$i.log" 2>/dev/null || ! kill -0 "${silo_pids[$i]}" 2>/dev/null || [ $SECONDS -ge $deadline ]; do sleep 0.2; done
    lost_port "${silo_pids[$i]}" "$logs/silo$i.log" && [ "$attempt" -lt 3 ] || break
    wait "${silo_pids[$i]}" 2>/dev/null || true
    say "silo$i lost a port to another process before binding it; starting it again on new ports"
    cp "$logs/silo$i.log" "$logs/silo$i.lost-port-$attempt.log"
    start_silo "$i"
  done
  wait_port "${gateways[$i]}" "${silo_pids[$i]}" "silo$i" "$timeout_s" "$logs/silo$i.log"
  wait_joined "$i" "${silo_pids[$i]}"
done
say "$silos silos up (joined the cluster); Orleans dashboard: http://127.0.0.1:$orleans_dashboard"

# 7. A short training through the client; the client reads only spec.json, each silo its own shards.
say "training $model for $steps steps through the cluster (redis://127.0.0.1:$redis_port) into $out"
rm -f "$out/metrics.jsonl"
if ! run_fg env ${otel[@]+"${otel[@]}"} ${otel[@]+OTEL_SERVICE_NAME=mrvae-client} timeout "$((timeout_s * 5))" dotnet "$cli_dll" train --cluster "redis://127.0.0.1:$redis_port" --dataset "$dataset" --silo-data "$dataset" \
  --model "$model" --steps "$steps" --batch "$batch" --seed 0 --out "$out" ${client_tls[@]+"${client_tls[@]}"} >"$logs/client.log" 2>&1; then
  echo "error: training failed or timed out after $((timeout_s * 5)) s; last lines of $logs/client.log:" >&2
  tr '\r' '\n' <"$logs/client.log" | grep -v '^[[:space:]]*$' | tail -n 15 >&2
  exit 1
fi
tr '\r' '\n' <"$logs/client.log" | grep -E '^(done|error)' | tail -n 1 || true

# 8. Check: one metrics line per step, steps 0..N-1 in order.
got=$(grep -o '"step":[0-9]*' "$out/metrics.jsonl" 2>/dev/null | cut -d: -f2 | tr '\n' ' ' || true)
want=$(seq 0 $((steps - 1)) | tr '\n' ' ')
if [ "$got" != "$want" ]; then
  echo "error: $out/metrics.jsonl has steps [${got% }], expected [${want% }]" >&2; exit 1
fi
say "ok: $steps steps in $out/metrics.jsonl across $silos silo processes (${group[*]})"

# 9. --tls: two intruders, both given the Redis password (the worst case: it leaked), so that TLS alone must stop
# them. Each is refused when it fails and a silo logged the refusal at the handshake.
if [ "$tls" = 1 ]; then
  run_id=$(tr '\r' '\n' <"$logs/client.log" | grep -o '^run [^ ]*' | head -n 1 | cut -d' ' -f2)
  refusals_before=$(cat "$logs"/silo*.log | grep -c 'TLS: refused' || true)
  say "intruders: a client without a certificate asking for status, a silo with another CA's certificate joining"
  # Intruder 1: `mrvae status` without --tls.
  (MRVAE_TLS_DIR="" timeout "$timeout_s" dotnet "$cli_dll" status --run "${run_id:-unknown}" --cluster "redis://127.0.0.1:$redis_port" >"$logs/intruder-client.log" 2>&1) &
  intruder_client=$!
  # Intruder 2: a silo whose certificate (naming every modality) comes from a CA of its own.
  dotnet "$cli_dll" certs init --out "$certs/foreign-ca" >>"$logs/certs.log" 2>&1
  dotnet "$cli_dll" certs issue --ca "$certs/foreign-ca" --name intruder --role silo --modalities "$(seq -s, 0 $((modalities - 1)))" --out "$certs/intruder" >>"$logs/certs.log" 2>&1
  mapfile -t tls_env < <(silo_tls intruder)
  for attempt in 1 2 3; do # started again on new ports if it lost one before binding (see start_silo)
    free_port intruder_silo_port; free_port intruder_gateway_port
    start intruder "$logs/intruder-silo.log" env DOTNET_ENVIRONMENT=Production MrVae__Dashboard__Enabled=false "${tls_env[@]}" \
      MrVae__Clustering__Redis="127.0.0.1:$redis_port" MrVae__Silo__Role=intruder MrVae__Silo__TorchThreads=1 \
      MrVae__Endpoints__SiloPort="$intruder_silo_port" MrVae__Endpoints__GatewayPort="$intruder_gateway_port" dotnet "$silo_dll"
    intruder_silo=${pids[-1]}
    deadline=$((SECONDS + timeout_s))
    # The refused silo dies of its unhandled start-up exception (SIGABRT): bash's note of that goes to its log, not here.
    exec 4>&2 2>>"$logs/intruder-silo.log"
    while kill -0 "$intruder_silo" 2>/dev/null && [ $SECONDS -lt $deadline ] && ! grep -q "Orleans Silo started" "$logs/intruder-silo.log"; do sleep 0.5; done
    sleep 0.5
    exec 2>&4 4>&-
    lost_port "$intruder_silo" "$logs/intruder-silo.log" && [ "$attempt" -lt 3 ] || break
    wait "$intruder_silo" 2>/dev/null || true
    say "the intruder silo lost a port to another process before binding it; starting it again on new ports"
  done
  client_rc=0; wait "$intruder_client" || client_rc=$?
  silo_joined=0; grep -q "Orleans Silo started" "$logs/intruder-silo.log" && silo_joined=1
  kill -0 "$intruder_silo" 2>/dev/null && silo_alive=1 || silo_alive=0
  refusal() { cat "$logs"/silo*.log | grep 'TLS: refused' | tail -n +"$((refusals_before + 1))" | grep -m 1 "$1" | sed 's/^[[:space:]]*//' || true; }
  got_in=0
  if [ "$client_rc" != 0 ] && [ -n "$(refusal 'no client certificate')" ]; then
    say "intruder client without a certificate (mrvae status): refused; a silo logged: $(refusal 'no client certificate')"
  else
    say "intruder client without a certificate (mrvae status): GOT IN (exit code $client_rc; see $logs/intruder-client.log)"; got_in=1
  fi
  if [ "$silo_joined" = 0 ] && [ -n "$(refusal 'intruder')" ]; then
    say "intruder silo with another CA's certificate: refused ($([ $silo_alive = 1 ] && echo "still not joined after $timeout_s s" || echo "it exited")); a silo logged: $(refusal 'intruder')"
  else
    say "intruder silo with another CA's certificate: GOT IN (joined: $silo_joined; see $logs/intruder-silo.log)"; got_in=1
  fi
  [ "$got_in" = 0 ] || { echo "error: an intruder got into the cluster" >&2; exit 3; }
fi

if [ "$keep" = 1 ]; then
  say "cluster kept up: redis://127.0.0.1:$redis_port; attach a silo with MrVae__Clustering__Redis=127.0.0.1:$redis_port (see docs/design.md, 'Attaching a modality node'). Ctrl-C stops it."
  while kill -0 "${pids[0]}" 2>/dev/null; do sleep 1; done
fi
