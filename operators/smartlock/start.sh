#!/usr/bin/env bash
# Starts the smartlock operator (systemd unit if installed, else in the background).
OPERATOR=smartlock
. "$(dirname "$0")/../lifecycle.sh"
lifecycle_start "$@"
