#!/usr/bin/env bash
# make bench, broker level: Veil vs plain mochi vs Mosquitto (issue 7; not built yet).
set -euo pipefail
echo "broker-level benchmark: not built yet (issue 7)" >&2
