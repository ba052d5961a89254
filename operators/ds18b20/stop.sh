#!/usr/bin/env bash
# Stops the ds18b20 operator (it publishes its offline state and leaves a lock locked).
OPERATOR=ds18b20
. "$(dirname "$0")/../lifecycle.sh"
lifecycle_stop
