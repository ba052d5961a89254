#!/usr/bin/env bash
# Starts the dht22 operator (systemd unit if installed, else in the background).
OPERATOR=dht22
. "$(dirname "$0")/../lifecycle.sh"
lifecycle_start "$@"
