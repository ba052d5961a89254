#!/usr/bin/env bash
# make operators: cross-compiles veil-operator for the Raspberry Pi family and
# the host, statically (CGO_ENABLED=0), into bin/:
#
#   bin/veil-operator-linux-arm64   Pi 3/4/5/Zero 2 W with a 64-bit OS
#   bin/veil-operator-linux-armv7   Pi 2/3/4 with a 32-bit OS
#   bin/veil-operator-linux-armv6   Pi 1/Zero/Zero W (32-bit)
#   bin/veil-operator               the host (for --simulate on a laptop, CI)
#
# scripts/pi-install.sh picks the right one on the Pi.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
LDFLAGS="-s -w -X main.version=${VERSION}"
mkdir -p bin

build() { # GOOS GOARCH GOARM output
	echo "operators: $4 (${1}/${2}${3:+ GOARM=$3})" >&2
	CGO_ENABLED=0 GOOS=$1 GOARCH=$2 GOARM=$3 \
		"$GO" build -trimpath -ldflags "$LDFLAGS" -o "bin/$4" ./cmd/veil-operator
}

build linux arm64 "" veil-operator-linux-arm64
build linux arm 7 veil-operator-linux-armv7
build linux arm 6 veil-operator-linux-armv6
build "$("$GO" env GOHOSTOS)" "$("$GO" env GOHOSTARCH)" "" veil-operator

# A sanity check that each file is what its name says.
if command -v file >/dev/null; then
	file bin/veil-operator-linux-* bin/veil-operator | sed -E 's/, (Go )?BuildID[^,]*//' >&2
fi
