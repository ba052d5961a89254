#!/usr/bin/env bash
# Installs what the end-to-end tests need beyond Go: mosquitto's clients
# (mosquitto_pub/mosquitto_sub, for MQTT 3.1.1 interop), from Debian.
set -euo pipefail
need=()
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "installing ${need[*]} (apt-get)…" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
command -v mosquitto_pub >/dev/null
