#!/usr/bin/env bash
# Installs a Veil operator on a Raspberry Pi (run as root):
#
#   sudo scripts/pi-install.sh OPERATOR --broker mqtts://veil.local:8883 \
#        --serial TH-10-0042 --factory-secret '…' [--simulate] [--set key=value]… \
#        [--bin-dir DIR] [--force-config] [--no-start] [--root DIR]
#
# The broker is mqtts:// (--set ca-file=/etc/veil-operator/ca.pem for a private
# CA); mqtt:// to another host is refused unless --set insecure-plaintext=true.
#
# OPERATOR is dht22, ds18b20, gps, cpu or smartlock. The script
#   1. copies the binary for this Pi's architecture (bin/veil-operator-linux-
#      arm64, -armv7 or -armv6, built by `make operators`) to /usr/local/bin;
#   2. creates the system user veil-operator (groups gpio and dialout if present);
#   3. writes /etc/veil-operator/OPERATOR.yaml (0640 root:veil-operator: it holds
#      the factory secret) unless it exists (--force-config replaces it);
#      --set key=value adds any flag of the operator (relay-pin=GPIO17, …);
#   4. installs veil-operator@.service and enables veil-operator@OPERATOR;
#   5. waits for the first start to enrol and prints the claim code (also kept in
#      /var/lib/veil-operator/OPERATOR.json, 0600).
# It also says which line /boot/firmware/config.txt needs for the device.
# --root DIR installs into DIR instead of / (no user, no systemctl): for tests.
set -euo pipefail

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "pi-install: $*" >&2; exit 1; }

[ $# -ge 1 ] || usage
OPERATOR=$1; shift
case "$OPERATOR" in
	dht22 | ds18b20 | gps | cpu | smartlock) ;;
	-h | --help) usage ;;
	*) die "unknown operator '$OPERATOR' (dht22, ds18b20, gps, cpu, smartlock)" ;;
esac

HERE=$(cd "$(dirname "$0")" && pwd)
BROKER="" SERIAL="" SECRET="" SIMULATE=false BIN_DIR="" ROOT="" FORCE=false START=true
SETS=()
while [ $# -gt 0 ]; do
	case "$1" in
		--broker) BROKER=${2:?}; shift 2 ;;
		--serial) SERIAL=${2:?}; shift 2 ;;
		--factory-secret) SECRET=${2:?}; shift 2 ;;
		--simulate) SIMULATE=true; shift ;;
		--set) SETS+=("${2:?}"); shift 2 ;;
		--bin-dir) BIN_DIR=${2:?}; shift 2 ;;
		--root) ROOT=${2:?}; shift 2 ;;
		--force-config) FORCE=true; shift ;;
		--no-start) START=false; shift ;;
		-h | --help) usage ;;
		*) die "unknown option $1" ;;
	esac
done
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then die "run as root (sudo)"; fi

# 1. The binary for this architecture.
arch() {
	local deb="" m
	m=$(uname -m)
	command -v dpkg >/dev/null && deb=$(dpkg --print-architecture 2>/dev/null || true)
	# A 64-bit kernel may run a 32-bit userland: the userland decides.
	case "${deb:-$m}" in
		arm64 | aarch64) echo arm64 ;;
		armhf | armv7l | armv8l) [ "$m" = armv6l ] && echo armv6 || echo armv7 ;;
		armel | armv6l) echo armv6 ;;
		amd64 | x86_64) echo amd64 ;;
		*) die "unsupported architecture ${deb:-$m}" ;;
	esac
}
ARCH=${VEIL_OPERATOR_ARCH:-$(arch)}
for dir in "$BIN_DIR" "$HERE/../bin" "$HERE"; do
	[ -n "$dir" ] || continue
	for name in "veil-operator-linux-$ARCH" "veil-operator"; do
		if [ -f "$dir/$name" ]; then
			[ "$name" = veil-operator ] && [ "$ARCH" != amd64 ] && continue # the host build is not for the Pi
			SRC="$dir/$name"
			break 2
		fi
	done
done
[ -n "${SRC:-}" ] || die "no veil-operator binary for linux/$ARCH (run 'make operators' and copy bin/ along, or pass --bin-dir)"
install -D -m 0755 "$SRC" "$ROOT/usr/local/bin/veil-operator"
echo "pi-install: installed $SRC as /usr/local/bin/veil-operator ($ARCH)"

# 2. The service user.
GROUPS_OK=()
for g in gpio dialout i2c; do getent group "$g" >/dev/null 2>&1 && GROUPS_OK+=("$g"); done
if [ -z "$ROOT" ]; then
	id veil-operator >/dev/null 2>&1 ||
		useradd --system --no-create-home --home-dir /var/lib/veil-operator --shell /usr/sbin/nologin veil-operator
	for g in "${GROUPS_OK[@]}"; do usermod -aG "$g" veil-operator; done
fi

# 3. The config file.
CONF_DIR="$ROOT/etc/veil-operator" CONF="$ROOT/etc/veil-operator/$OPERATOR.yaml"
install -d -m 0750 "$CONF_DIR"
if [ -f "$CONF" ] && ! $FORCE; then
	echo "pi-install: keeping the existing $CONF (--force-config replaces it)"
else
	[ -n "$BROKER" ] || die "--broker is required for a new config"
	if [ ! -f "$ROOT/var/lib/veil-operator/$OPERATOR.json" ]; then
		[ -n "$SERIAL" ] && [ -n "$SECRET" ] || die "--serial and --factory-secret are required to enrol"
	fi
	yq() { printf '%s: "%s"\n' "$1" "$(printf '%s' "$2" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
	umask 077
	{
		echo "# veil-operator $OPERATOR — written by scripts/pi-install.sh; keys are the flags of"
		echo "# 'veil-operator $OPERATOR --help'. Holds the factory secret: keep it 0640 root:veil-operator."
		yq broker "$BROKER"
		[ -n "$SERIAL" ] && yq serial "$SERIAL"
		[ -n "$SECRET" ] && yq factory-secret "$SECRET"
		yq credentials "/var/lib/veil-operator/$OPERATOR.json"
		echo "simulate: $SIMULATE"
		for kv in "${SETS[@]}"; do
			[[ "$kv" == *=* ]] || die "--set $kv: want key=value"
			yq "${kv%%=*}" "${kv#*=}"
		done
	} >"$CONF.tmp"
	chmod 0640 "$CONF.tmp"
	mv "$CONF.tmp" "$CONF"
	echo "pi-install: wrote $CONF"
fi
[ -z "$ROOT" ] && chown -R root:veil-operator "$CONF_DIR"
# Check the file before going further: a bad key fails here, not in the unit.
if [ -z "$ROOT" ] || [ "$ARCH" = amd64 ]; then
	"$ROOT/usr/local/bin/veil-operator" "$OPERATOR" --config "$CONF" --check ||
		die "$CONF: the operator refuses this configuration"
fi

# 4. The systemd unit.
UNIT_SRC=""
for f in "$HERE/../operators/systemd/veil-operator@.service" "$HERE/veil-operator@.service"; do
	[ -f "$f" ] && UNIT_SRC=$f && break
done
[ -n "$UNIT_SRC" ] || die "veil-operator@.service not found"
install -d "$ROOT/etc/systemd/system"
if [ ${#GROUPS_OK[@]} -gt 0 ]; then
	sed "s/@GROUPS@/${GROUPS_OK[*]}/" "$UNIT_SRC" >"$ROOT/etc/systemd/system/veil-operator@.service"
else
	grep -v '^SupplementaryGroups=' "$UNIT_SRC" >"$ROOT/etc/systemd/system/veil-operator@.service"
fi
chmod 0644 "$ROOT/etc/systemd/system/veil-operator@.service"

# The device tree: say what config.txt needs.
BOOT_CONF="$ROOT/boot/firmware/config.txt"
[ -f "$BOOT_CONF" ] || BOOT_CONF="$ROOT/boot/config.txt"
case "$OPERATOR" in
	dht22) NEED="dtoverlay=dht11" ;;
	ds18b20) NEED="dtoverlay=w1-gpio" ;;
	gps) NEED="enable_uart=1" ;;
	*) NEED="" ;;
esac
if ! $SIMULATE && [ -n "$NEED" ] && ! grep -qs "^$NEED" "$BOOT_CONF"; then
	echo "pi-install: NOTE: $BOOT_CONF has no '$NEED…' line; add e.g." >&2
	case "$OPERATOR" in
		dht22) echo "    dtoverlay=dht11,gpiopin=4" >&2 ;;
		ds18b20) echo "    dtoverlay=w1-gpio,gpiopin=4" >&2 ;;
		gps) echo "    enable_uart=1   (and remove console=serial0,… from cmdline.txt)" >&2 ;;
	esac
	echo "    and reboot (see operators/README.md)." >&2
fi

# 5. Enable, start, show the claim code.
if [ -n "$ROOT" ]; then
	echo "pi-install: installed under $ROOT (no systemctl)"
	exit 0
fi
systemctl daemon-reload
systemctl enable "veil-operator@$OPERATOR.service"
$START || { echo "pi-install: enabled; start with: systemctl start veil-operator@$OPERATOR"; exit 0; }
systemctl restart "veil-operator@$OPERATOR.service"
CREDS=/var/lib/veil-operator/$OPERATOR.json
for _ in $(seq 1 60); do
	[ -s "$CREDS" ] && break
	sleep 1
done
if [ -s "$CREDS" ]; then
	thing=$(sed -n 's/.*"thing": *"\([^"]*\)".*/\1/p' "$CREDS")
	code=$(sed -n 's/.*"claim_code": *"\([^"]*\)".*/\1/p' "$CREDS")
	echo "pi-install: $OPERATOR enrolled as thing $thing"
	echo "pi-install: claim code: ${code:-(none)}  — give it to the installer: veil ctl thing claim $thing ${code:-CODE}"
else
	echo "pi-install: not enrolled yet; watch: journalctl -u veil-operator@$OPERATOR -f" >&2
fi
