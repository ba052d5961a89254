#!/usr/bin/env bash
# make bench, broker level (issue 7): Veil vs the same binary without
# enforcement (plain mochi) vs Mosquitto 2.0, one broker at a time on
# loopback, rounds alternating A B C A B C. Writes the raw results to
# var/bench/results.json (one JSON object per line, also copied to
# docs/bench/broker-bench.json) and the section between the broker-bench
# markers of docs/benchmarks.md.
#
#   scripts/bench.sh                 full run (~14 minutes on 2 cores)
#   BENCH_QUICK=1 scripts/bench.sh   one round, short runs, small scale (~3 minutes)
#
# Knobs (environment): BENCH_ROUNDS, BENCH_DURATION, BENCH_CLIENTS,
# BENCH_PAYLOAD, BENCH_IDLE_CLIENTS, BENCH_POPULATION (policies:tuples), BENCH_POP_ROUNDS,
# BENCH_POLICY_CHANGE (1 = run the live policy change scenario; needs the
# control plane), BENCH_DOC (0 = do not touch docs/).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

quick=${BENCH_QUICK:-0}
if [[ $quick == 1 ]]; then
  rounds=${BENCH_ROUNDS:-1} half_rounds=1 duration=${BENCH_DURATION:-2s} half_duration=2s
  idle_clients=${BENCH_IDLE_CLIENTS:-1000} population=${BENCH_POPULATION:-10000:100000} pop_rounds=${BENCH_POP_ROUNDS:-1}
else
  rounds=${BENCH_ROUNDS:-5} half_rounds=3 duration=${BENCH_DURATION:-3s} half_duration=5s
  idle_clients=${BENCH_IDLE_CLIENTS:-10000} population=${BENCH_POPULATION:-100000:1000000} pop_rounds=${BENCH_POP_ROUNDS:-4}
fi
clients=${BENCH_CLIENTS:-30}
payload=${BENCH_PAYLOAD:-128}
policy_change=${BENCH_POLICY_CHANGE:-auto}
write_doc=${BENCH_DOC:-1}

veil_port=18831 mochi_port=18832 pop_port=18833 mosq_port=18834 veil_http=18841 mochi_http=18842
out=var/bench
results=$out/results.json
work=$out/work
mkdir -p "$out" "$work"
rm -f "$results" "$out"/*.log
log() { printf '%s bench: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- prerequisites ----------------------------------------------------------
[[ -x bin/veil ]] || make build
veil=$root/bin/veil
if ! command -v mosquitto >/dev/null || ! command -v mosquitto_passwd >/dev/null; then
  log "installing mosquitto (Debian)"
  if [[ $(id -u) == 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto >/dev/null || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto >/dev/null; }
  else
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto >/dev/null
  fi
fi
mosquitto_version=$(mosquitto -h 2>/dev/null | head -1 || true)
# 10,000 idle clients: one descriptor each in the broker and in veil bench.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(( $(ulimit -n) >= idle_clients + 1000 )) || { log "ulimit -n $(ulimit -n) is low: idle clients cut to $(( $(ulimit -n) - 1000 ))"; idle_clients=$(( $(ulimit -n) - 1000 )); }

scripts/bench/gen-household.sh "$clients" "$work/household.yaml"
scripts/bench/mosquitto-config.sh "$work/mosquitto" "$mosq_port" "$clients" >/dev/null

# --- brokers ----------------------------------------------------------------
broker_pid=""
wait_port() { # port seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$broker_pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
start() { # veil|mochi|mosquitto|veil-population
  local name=$1 logf=$out/$1.log
  case $name in
    veil)
      # The idle phase starts without --bootstrap (the data dir holds the household
      # from phase 1): re-checking its hashes would leave argon2id's memory behind.
      local boot=(--bootstrap "$work/household.yaml")
      [[ -z ${no_bootstrap:-} ]] || boot=()
      "$veil" serve "${boot[@]}" --data-dir "$work/veil" --mqtt 127.0.0.1:$veil_port --http 127.0.0.1:$veil_http --log-level warn >>"$logf" 2>&1 &
      broker_pid=$!; wait_port $veil_port 120 || die "veil did not start (see $logf)"; port=$veil_port ;;
    mochi)
      "$veil" serve --bench-no-enforcement --data-dir "$work/mochi" --mqtt 127.0.0.1:$mochi_port --http 127.0.0.1:$mochi_http --log-level error >>"$logf" 2>&1 &
      broker_pid=$!; wait_port $mochi_port 120 || die "mochi did not start (see $logf)"; port=$mochi_port ;;
    mosquitto)
      mosquitto -c "$work/mosquitto/mosquitto.conf" >>"$logf" 2>&1 &
      broker_pid=$!; wait_port $mosq_port 30 || die "mosquitto did not start (see $logf)"; port=$mosq_port ;;
    veil-population)
      # The log is appended to across rounds: wait for this start's own
      # "loaded" line, not an earlier round's (the port opens before the
      # population is in, and a round measured during the load is not one).
      local loaded_before
      loaded_before=$(grep -c "bench population loaded" "$logf" 2>/dev/null || true)
      "$veil" serve --bootstrap "$work/household.yaml" --data-dir "$work/veil" --mqtt 127.0.0.1:$pop_port --http "" --log-level warn \
        --bench-population "$population" >>"$logf" 2>&1 &
      broker_pid=$!; wait_port $pop_port 120 || die "veil with the population did not start (see $logf)"
      population_loaded() { (( $(grep -c "bench population loaded" "$logf" 2>/dev/null || true) > ${loaded_before:-0} )); }
      local i; for ((i = 0; i < 1200; i++)); do population_loaded && break; sleep 0.1; done
      population_loaded || die "the population did not load (see $logf)"
      port=$pop_port ;;
  esac
}
stop() {
  [[ -n $broker_pid ]] || return 0
  kill -TERM "$broker_pid" 2>/dev/null || true
  wait "$broker_pid" 2>/dev/null || true
  broker_pid=""
}
trap stop EXIT

profile_of() { case $1 in veil | veil-population) echo veil ;; *) echo "$1" ;; esac; }
failures=0
bench() { # broker tag round args…
  local b=$1 tag=$2 round=$3; shift 3
  # The brokers' own measures of what enforcement adds (Veil's /metrics, on or off).
  case $b in
    veil) set -- "$@" --metrics "http://127.0.0.1:$veil_http/metrics" ;;
    mochi) set -- "$@" --metrics "http://127.0.0.1:$mochi_http/metrics" ;;
  esac
  if ! "$veil" bench --addr 127.0.0.1:$port --broker "$b" --profile "$(profile_of "$b")" --tag "$tag" --round "$round" \
      --clients "$clients" --payload "$payload" --json "$results" --quiet --broker-pid "$broker_pid" "$@" >&2; then
    failures=$((failures + 1))
    log "run failed: $b $tag $* (recorded)"
  fi
}

started=$(date +%s)
log "$rounds rounds of $duration per run; $clients clients; payload $payload B; brokers: veil, mochi (--bench-no-enforcement), $mosquitto_version"

# --- 1. maximum rate, rounds A B C --------------------------------------------
for ((r = 1; r <= rounds; r++)); do
  for b in veil mochi mosquitto; do
    start "$b"
    for qos in 0 1; do
      for sc in fanout fanin p2p; do
        bench "$b" max "$r" --scenario $sc --qos $qos --duration "$duration"
      done
    done
    stop
  done
done

# --- 2. latency at half of plain mochi's maximum rate ------------------------------
declare -A half
for qos in 0 1; do
  for sc in fanout fanin p2p; do
    if m=$("$veil" bench median --in "$out" --broker mochi --tag max --scenario $sc --qos $qos 2>/dev/null); then
      half[$sc$qos]=$((m / 2))
    fi
  done
done
for ((r = 1; r <= half_rounds; r++)); do
  for b in veil mochi mosquitto; do
    start "$b"
    for qos in 0 1; do
      for sc in fanout fanin p2p; do
        [[ -n ${half[$sc$qos]:-} ]] || continue
        bench "$b" half "$r" --scenario $sc --qos $qos --duration "$half_duration" --rate "${half[$sc$qos]}"
      done
    done
    stop
  done
done

# --- 3. idle clients: broker memory per client -------------------------------------
for b in veil mochi mosquitto; do
  no_bootstrap=1 start "$b"
  sleep 1
  bench "$b" idle 1 --scenario idle --clients "$idle_clients" --duration 3s
  stop
done

# --- 4. fan-out with the population loaded, alternating with veil and mochi ----------
for ((r = 1; r <= pop_rounds; r++)); do
  for b in veil-population veil mochi; do
    start "$b"
    bench "$b" population "$r" --scenario fanout --qos 0 --duration "$duration"
    stop
  done
done

# --- 5. a live policy change during a fan-out at full rate ---------------------------
if [[ $policy_change == auto ]]; then
  policy_change=0
  compgen -G "hooks/control*.go" >/dev/null && policy_change=1
fi
if [[ $policy_change == 1 ]]; then
  start veil
  bench veil change 1 --scenario policychange --qos 0 --duration "$duration"
  bench veil change 1 --scenario policychange --qos 1 --duration "$duration"
  stop
else
  log "live policy change skipped (control plane not present; BENCH_POLICY_CHANGE=1 forces it)"
fi

took=$(( $(date +%s) - started ))
log "done in ${took}s; $failures failed runs"

# --- report -------------------------------------------------------------------------
cat >"$work/header.md" <<EOF

## Broker level: Veil vs plain mochi vs Mosquitto (\`make bench\`)

Run $(date -u +"%Y-%m-%d %H:%M UTC") at commit \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`,
$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), ${took} s.
Command: \`make bench\` (this section: \`scripts/bench.sh\`$([[ $quick == 1 ]] && echo ", BENCH_QUICK=1")).
Raw results: [docs/bench/broker-bench.json](bench/broker-bench.json) (one JSON object per run).

- **veil**: \`veil serve\` with the example household (\`examples/bootstrap.yaml\` plus things
  sensor-1…$clients and the policy doctor-bench-temperature, \`scripts/bench/gen-household.sh\`),
  every delivery decided and rewritten; embedded FerretDB; broker state in bbolt, written behind
  (\`--state-sync\` 100 ms: one transaction per interval); the default 64 MiB floor under the Go heap
  (\`--heap-floor-bytes\`, see below).
- **mochi**: the same binary with \`--bench-no-enforcement\` (mochi's allow-all hook, same state store, same heap floor, \`docs/design.md\`):
  the fan-out strangers subscribe where nothing is published, so it makes the same deliveries (see below).
- Both Go brokers build mochi from \`third_party/mochi\`: v2.7.9 plus the patches its README lists (since
  2026-11-27; runs before then built upstream v2.7.9, whose encoder spent a quarter of a v5 PUBLISH's
  encoding in a map of maps: patch 0001).
- **mosquitto**: $mosquitto_version from Debian, password file and an ACL equivalent to the
  household (\`scripts/bench/mosquitto-config.sh\`), persistence on as in Debian's default (a snapshot
  every 30 min, not per message). Mosquitto cannot rewrite
  payloads: the doctor's view there is raw-or-denied, and the ACL allows it raw. Mosquitto does the
  same deliveries as Veil but no rewriting; Veil's ratio against it includes the cost of rewriting.
- Load generator: \`veil bench\` (paho.golang, MQTT v5) on the same 2 cores as the broker; $rounds
  rounds alternating veil, mochi, mosquitto; medians over rounds; $duration per run; $payload-byte
  payloads; max rate = as fast as the slowest entitled subscriber receives (at most 1,000 messages in
  flight at QoS 0, 100 at QoS 1); half rate = a fixed rate, half of mochi's median max published msg/s.
  Every delivered payload is checked against the view its subscriber is entitled to (leaks = leaked
  or mis-rewritten messages; any fails the run). Lost = entitled deliveries that never arrived (QoS 0 may drop).
- The machine is shared with other work: absolute figures are noisy; the ratios within one run are the result.
EOF
cat scripts/bench/notes.md >>"$work/header.md"
"$veil" bench report --in "$out" --header "$work/header.md" >"$out/report.md"
if [[ $write_doc == 1 ]]; then
  mkdir -p docs/bench
  cp "$results" docs/bench/broker-bench.json
  "$veil" bench report --in "$out" --header "$work/header.md" --doc docs/benchmarks.md
  log "wrote docs/benchmarks.md (broker-bench section) and docs/bench/broker-bench.json"
fi
cat "$out/report.md"
