#!/usr/bin/env bash
# Prints true (exit 0) if the ds18b20 operator runs, else false (exit 1).
OPERATOR=ds18b20
. "$(dirname "$0")/../lifecycle.sh"
lifecycle_running
