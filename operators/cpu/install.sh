#!/usr/bin/env bash
# Installs the cpu operator on this Pi (as root): binary, config, systemd unit.
#   sudo ./install.sh --broker mqtts://veil.local:8883 --serial SERIAL --factory-secret SECRET [--simulate] [--set key=value]…
OPERATOR=cpu
. "$(dirname "$0")/../lifecycle.sh"
lifecycle_install "$@"
