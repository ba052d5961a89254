#!/usr/bin/env bash
# Prints true (exit 0) if the gps operator runs, else false (exit 1).
OPERATOR=gps
. "$(dirname "$0")/../lifecycle.sh"
lifecycle_running
