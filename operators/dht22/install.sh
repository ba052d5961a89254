#!/usr/bin/env bash
# Installs the dht22 operator on this Pi (as root): binary, config, systemd unit.
#   sudo ./install.sh --broker mqtts://veil.local:8883 --serial SERIAL --factory-secret SECRET [--simulate] [--set key=value]…
OPERATOR=dht22
. "$(dirname "$0")/../lifecycle.sh"
lifecycle_install "$@"
