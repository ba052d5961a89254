#!/usr/bin/env bash
# Stops the dht22 operator (it publishes its offline state and leaves a lock locked).
OPERATOR=dht22
. "$(dirname "$0")/../lifecycle.sh"
lifecycle_stop
