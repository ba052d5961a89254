#!/usr/bin/env bash
# Prints true (exit 0) if the dht22 operator runs, else false (exit 1).
OPERATOR=dht22
. "$(dirname "$0")/../lifecycle.sh"
lifecycle_running
