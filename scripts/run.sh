#!/usr/bin/env bash
# make run: the broker with the example household; embedded FerretDB; data under ./var.
set -euo pipefail
cd "$(dirname "$0")/.."
exec ./bin/veil serve --bootstrap examples/bootstrap.yaml --data-dir var "$@"
