#!/usr/bin/env bash
# Stops the gps operator (it publishes its offline state and leaves a lock locked).
OPERATOR=gps
. "$(dirname "$0")/../lifecycle.sh"
lifecycle_stop
