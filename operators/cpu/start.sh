#!/usr/bin/env bash
# Starts the cpu operator (systemd unit if installed, else in the background).
OPERATOR=cpu
. "$(dirname "$0")/../lifecycle.sh"
lifecycle_start "$@"
