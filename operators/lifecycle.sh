# shellcheck shell=bash
# Shared by the MBP-style lifecycle scripts of every operator
# (operators/<name>/{install,start,stop,running}.sh). Source it after
# setting OPERATOR.
#
# With the systemd unit installed (scripts/pi-install.sh), the scripts drive
# veil-operator@<name>.service. Without it (a laptop, a quick try), they run
# the binary in the background with a pid file:
#   VEIL_OPERATOR_BIN     the binary (default: /usr/local/bin/veil-operator,
#                         else bin/veil-operator of this checkout)
#   VEIL_OPERATOR_CONFIG  its config file (default /etc/veil-operator/<name>.yaml)
#   VEIL_OPERATOR_RUN     pid and log directory (default $XDG_RUNTIME_DIR or /tmp)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
UNIT="veil-operator@${OPERATOR}.service"
RUN_DIR=${VEIL_OPERATOR_RUN:-${XDG_RUNTIME_DIR:-/tmp}}
PID_FILE="$RUN_DIR/veil-operator-${OPERATOR}.pid"
LOG_FILE="$RUN_DIR/veil-operator-${OPERATOR}.log"

has_unit() {
	command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] &&
		systemctl cat "$UNIT" >/dev/null 2>&1
}

operator_bin() {
	if [ -n "${VEIL_OPERATOR_BIN:-}" ]; then echo "$VEIL_OPERATOR_BIN"
	elif [ -x /usr/local/bin/veil-operator ]; then echo /usr/local/bin/veil-operator
	else echo "$HERE/../bin/veil-operator"
	fi
}

lifecycle_install() { # args: passed to scripts/pi-install.sh
	local installer
	for installer in "$HERE/../scripts/pi-install.sh" "$HERE/pi-install.sh"; do
		[ -x "$installer" ] && exec "$installer" "$OPERATOR" "$@"
	done
	echo "pi-install.sh not found next to $HERE" >&2
	exit 1
}

lifecycle_running() {
	if has_unit; then
		systemctl is-active --quiet "$UNIT" && { echo true; return 0; }
	elif [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
		echo true
		return 0
	fi
	echo false
	return 1
}

lifecycle_start() { # extra args go to veil-operator when run without systemd
	if has_unit; then
		systemctl start "$UNIT"
		return
	fi
	if lifecycle_running >/dev/null; then
		echo "veil-operator $OPERATOR already running (pid $(cat "$PID_FILE"))" >&2
		return 0
	fi
	local config=${VEIL_OPERATOR_CONFIG:-/etc/veil-operator/${OPERATOR}.yaml} args=()
	[ -f "$config" ] && args+=(--config "$config")
	mkdir -p "$RUN_DIR"
	nohup "$(operator_bin)" "$OPERATOR" "${args[@]}" "$@" >>"$LOG_FILE" 2>&1 &
	echo $! >"$PID_FILE"
	sleep 1
	if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
		echo "veil-operator $OPERATOR exited at once; see $LOG_FILE:" >&2
		tail -n 20 "$LOG_FILE" >&2
		rm -f "$PID_FILE"
		return 1
	fi
	echo "veil-operator $OPERATOR started (pid $(cat "$PID_FILE"), log $LOG_FILE)"
}

lifecycle_stop() {
	if has_unit; then
		systemctl stop "$UNIT"
		return
	fi
	[ -f "$PID_FILE" ] || return 0
	local pid
	pid=$(cat "$PID_FILE")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		for _ in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
	fi
	rm -f "$PID_FILE"
}
