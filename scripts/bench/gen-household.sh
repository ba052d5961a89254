#!/usr/bin/env bash
# gen-household.sh N OUT: the example household (examples/bootstrap.yaml)
# plus things sensor-1…sensor-N owned by an (secret sensor-i-secret) and one
# policy of an's, doctor-bench-temperature: doctors see the temperature of
# all of an's things rounded to 0.1 (the fan-in and p2p subscribers).
set -euo pipefail
n=$1 out=$2
root="$(cd "$(dirname "$0")/../.." && pwd)"
things=$(for i in $(seq 1 "$n"); do
  printf '  - {id: sensor-%d, owner: an, kind: sensor, streams: [temperature], place: home-an, secret: sensor-%d-secret}\n' "$i" "$i"
done)
policy='  - owner: an
    id: doctor-bench-temperature
    description: benchmark - doctors see the temperature of every thing of mine to a tenth of a degree
    priority: 40
    effect: allow
    subjects: ["role:doctor"]
    resources: ["things/+/data/temperature"]
    actions: [read]
    constraints:
      - {kind: accuracy, field: temperature, step: 0.1}'
awk -v things="$things" -v policy="$policy" '
  { print }
  /^things:/   { print things }
  /^policies:/ { print policy }
' "$root/examples/bootstrap.yaml" > "$out"
