#!/bin/sh
# Checks that third_party/mochi is mochi-mqtt/server v2.7.9 as published plus
# the patches in third_party/mochi/patches, and nothing else: the fork is
# auditable by reading its patches, never by reading 16,000 lines.
#
#   scripts/mochi-fork.sh check      (make test runs it)
#   scripts/mochi-fork.sh upstream   prints the pristine module's directory
set -eu

MODULE=github.com/mochi-mqtt/server/v2
VERSION=v2.7.9
# The module's hash as recorded by sum.golang.org (go.sum before the fork).
SUM='h1:y0g4vrSLAag7T07l2oCzOa/+nKVLoazKEWAArwqBNYI='

root=$(cd "$(dirname "$0")/.." && pwd)
fork=$root/third_party/mochi
GO=${GO:-go}

upstream() {
	json=$(cd / && GOFLAGS=-mod=mod "$GO" mod download -json "$MODULE@$VERSION")
	sum=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",*$/\1/p')
	if [ "$sum" != "$SUM" ]; then
		echo "mochi-fork: $MODULE@$VERSION has hash $sum, want $SUM" >&2
		exit 1
	fi
	printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p'
}

check() {
	up=$(upstream)
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	# The fork keeps only the packages Veil builds, with their tests.
	(cd "$fork" && find . -name '*.go' -path './*' ! -path './patches/*') | sort >"$work/kept"
	mkdir "$work/tree"
	for d in $(sed 's|/[^/]*$||' "$work/kept" | sort -u); do
		mkdir -p "$work/tree/$d"
		cp "$up/$d"/*.go "$work/tree/$d/"
	done
	chmod -R u+w "$work/tree"
	for p in "$fork"/patches/*.patch; do
		[ -e "$p" ] || continue
		if ! (cd "$work/tree" && git apply -p1 "$p") >"$work/patch.log" 2>&1; then
			echo "mochi-fork: $(basename "$p") does not apply to $MODULE@$VERSION:" >&2
			cat "$work/patch.log" >&2
			exit 1
		fi
	done
	(cd "$work/tree" && find . -name '*.go') | sort >"$work/built"
	if ! diff -u "$work/built" "$work/kept" >"$work/files.diff"; then
		echo "mochi-fork: files differ from $VERSION plus patches (- expected, + in the fork):" >&2
		cat "$work/files.diff" >&2
		exit 1
	fi
	if ! diff -ru "$work/tree" "$fork" -x patches -x go.mod -x go.sum -x README.md -x LICENSE.md >"$work/src.diff"; then
		echo "mochi-fork: third_party/mochi is not $VERSION plus its patches; put the change in a patch:" >&2
		cat "$work/src.diff" >&2
		exit 1
	fi
	echo "mochi-fork: $MODULE@$VERSION plus $(ls "$fork"/patches/*.patch 2>/dev/null | wc -l) patches"
}

case "${1:-check}" in
check) check ;;
upstream) upstream ;;
*)
	echo "usage: $0 [check|upstream]" >&2
	exit 2
	;;
esac
