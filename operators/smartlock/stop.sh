#!/usr/bin/env bash
# Stops the smartlock operator (it publishes its offline state and leaves a lock locked).
OPERATOR=smartlock
. "$(dirname "$0")/../lifecycle.sh"
lifecycle_stop
