#!/usr/bin/env bash
# make run: the broker with the example household; embedded FerretDB; a local
# influxd (v1.8.3, built into ./bin on the first run: about a minute and a
# half) as the sensor archive; all data under ./var. Ctrl-C stops both.
#
# VEIL_INFLUX_PORT (default 8086) moves influxd; VEIL_NO_INFLUX=1 runs
# without the archive. Extra arguments go to `veil serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p var
args=(--bootstrap examples/bootstrap.yaml --data-dir var)
if [ -z "${VEIL_NO_INFLUX:-}" ]; then
  port="${VEIL_INFLUX_PORT:-8086}"
  ./scripts/influxd.sh start var/influxdb "$port" >/dev/null
  trap './scripts/influxd.sh stop var/influxdb' EXIT
  echo "influxd on 127.0.0.1:$port (data under var/influxdb, log var/influxdb/influxd.log)" >&2
  args+=(--influx-url "http://127.0.0.1:$port" --influx-bucket veil/autogen)
fi
./bin/veil serve "${args[@]}" "$@" &
veil=$!
trap 'kill -TERM $veil 2>/dev/null || true' INT TERM
wait "$veil" || status=$?
# A second wait: the first returns early when a trapped signal arrives.
wait "$veil" 2>/dev/null || true
exit "${status:-0}"
