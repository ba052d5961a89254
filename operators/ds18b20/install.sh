#!/usr/bin/env bash
# Installs the ds18b20 operator on this Pi (as root): binary, config, systemd unit.
#   sudo ./install.sh --broker mqtts://veil.local:8883 --serial SERIAL --factory-secret SECRET [--simulate] [--set key=value]…
OPERATOR=ds18b20
. "$(dirname "$0")/../lifecycle.sh"
lifecycle_install "$@"
