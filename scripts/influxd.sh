#!/usr/bin/env bash
# Local InfluxDB for development and tests: influxd v1.8.3 built from source
# once into ./bin (about a minute and a half), run on loopback with Flux on.
#
#   scripts/influxd.sh build              # only build ./bin/influxd if missing
#   scripts/influxd.sh start DIR [PORT]   # start on 127.0.0.1:PORT (default 8086),
#                                         # data under DIR; prints the PID, waits for /ping
#   scripts/influxd.sh stop DIR           # stop the one started with DIR
#   scripts/influxd.sh config DIR PORT    # only write DIR/influxd.conf (tests run influxd themselves)
#
# InfluxDB 1.8 serves the 2.x write API and Flux: Veil talks to it with
# --influx-bucket db/rp (or db) and an empty --influx-org.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${INFLUXD_BIN:-$ROOT/bin/influxd}"
VERSION=v1.8.3

build() {
  [ -x "$BIN" ] && return 0
  mkdir -p "$(dirname "$BIN")"
  # Test packages run in parallel and may all find influxd missing: one builds.
  if command -v flock >/dev/null 2>&1 && [ -z "${INFLUXD_BUILD_LOCKED:-}" ]; then
    INFLUXD_BUILD_LOCKED=1 flock "$(dirname "$BIN")/.influxd-build.lock" "$0" build
    return
  fi
  [ -x "$BIN" ] && return 0
  echo "building influxd $VERSION into $(dirname "$BIN") (once, about a minute and a half)…" >&2
  # Outside the module so Veil's go.mod is not touched.
  (cd "$(mktemp -d)" && GOBIN="$(dirname "$BIN")" GOFLAGS=-mod=mod CGO_ENABLED=0 \
    go install "github.com/influxdata/influxdb/cmd/influxd@$VERSION")
  [ -x "$BIN" ]
}

config() {
  local dir="${1:?usage: influxd.sh config DIR PORT}" port="${2:?usage: influxd.sh config DIR PORT}"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  cat >"$dir/influxd.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:0" # backup/restore RPC: any free port
[meta]
  dir = "$dir/meta"
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "1m"
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:$port"
  flux-enabled = true
  log-enabled = false
  suppress-write-log = true
[logging]
  level = "warn"
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
CONF
}

start() {
  local dir="${1:?usage: influxd.sh start DIR [PORT]}" port="${2:-8086}"
  build
  config "$dir" "$port"
  dir="$(cd "$dir" && pwd)"
  if [ -f "$dir/influxd.pid" ] && kill -0 "$(cat "$dir/influxd.pid")" 2>/dev/null; then
    echo "influxd already running for $dir (pid $(cat "$dir/influxd.pid"))" >&2
    exit 1
  fi
  "$BIN" run -config "$dir/influxd.conf" >>"$dir/influxd.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$dir/influxd.pid"
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/ping" 2>/dev/null; then
      echo "$pid"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "influxd exited; see $dir/influxd.log:" >&2
      tail -20 "$dir/influxd.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "influxd did not answer /ping on 127.0.0.1:$port within 30 s" >&2
  kill "$pid" 2>/dev/null || true
  exit 1
}

stop() {
  local dir="${1:?usage: influxd.sh stop DIR}"
  [ -f "$dir/influxd.pid" ] || return 0
  local pid
  pid="$(cat "$dir/influxd.pid")"
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$dir/influxd.pid"
}

case "${1:-}" in
  build) build ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  config) shift; config "$@" ;;
  *) echo "usage: $0 build | start DIR [PORT] | stop DIR | config DIR PORT" >&2; exit 2 ;;
esac
