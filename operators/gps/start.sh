#!/usr/bin/env bash
# Starts the gps operator (systemd unit if installed, else in the background).
OPERATOR=gps
. "$(dirname "$0")/../lifecycle.sh"
lifecycle_start "$@"
