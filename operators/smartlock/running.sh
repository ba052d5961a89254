#!/usr/bin/env bash
# Prints true (exit 0) if the smartlock operator runs, else false (exit 1).
OPERATOR=smartlock
. "$(dirname "$0")/../lifecycle.sh"
lifecycle_running
