#!/bin/sh
# Checks that third_party/mochi is mochi-mqtt/server v2.7.9 as published plus
# the patches in third_party/mochi/patches, and nothing else: the fork is
# auditable by reading its patches, never by reading 16,000 lines.
#
#   scripts/mochi-fork.sh check      (make test runs it)
#   scripts/mochi-fork.sh test       check, then the tests the patches add or change, under -race
#                                    (make test runs it)
#   scripts/mochi-fork.sh test-all   check, then the copy's whole test suite under -race
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

# patchTests prints, as one regular expression, the tests the patches add or
# change (a hunk's header names the function it is in). Upstream's own suite
# leans on millisecond sleeps and fails now and then on a loaded machine
# (patches 0005, 0008 and 0009 fixed three such tests); the tests that guard the
# patches run on every make test, the whole suite with test-all.
patchTests() {
	names=$(sed -n 's/^+func \(Test[A-Za-z0-9_]*\).*/\1/p; s/^@@ .*@@ func \(Test[A-Za-z0-9_]*\).*/\1/p' "$fork"/patches/*.patch | sort -u | tr '\n' '|')
	printf '^(%s)$' "${names%|}"
}

case "${1:-check}" in
check) check ;;
test)
	check
	(cd "$fork" && "$GO" test -race -count=1 -timeout 5m -run "$(patchTests)" ./...)
	;;
test-all)
	check
	(cd "$fork" && "$GO" test -race -count=1 -timeout 10m ./...)
	;;
upstream) upstream ;;
*)
	echo "usage: $0 [check|test|test-all|upstream]" >&2
	exit 2
	;;
esac
