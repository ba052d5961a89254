#!/usr/bin/env bash
# Starts the ds18b20 operator (systemd unit if installed, else in the background).
OPERATOR=ds18b20
. "$(dirname "$0")/../lifecycle.sh"
lifecycle_start "$@"
