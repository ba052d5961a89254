#!/usr/bin/env bash
# Prints true (exit 0) if the cpu operator runs, else false (exit 1).
OPERATOR=cpu
. "$(dirname "$0")/../lifecycle.sh"
lifecycle_running
