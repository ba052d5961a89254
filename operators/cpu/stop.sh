#!/usr/bin/env bash
# Stops the cpu operator (it publishes its offline state and leaves a lock locked).
OPERATOR=cpu
. "$(dirname "$0")/../lifecycle.sh"
lifecycle_stop
