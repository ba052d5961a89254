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
unset CDPATH # a cd found through it prints the directory, into $root

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
		for f in "$up/$d"/*.go; do # none: a directory a patch adds
			if [ -e "$f" ]; then cp "$f" "$work/tree/$d/"; fi
		done
	done
	chmod -R u+w "$work/tree"
	for p in "$fork"/patches/*.patch; do
		[ -e "$p" ] || continue
		# Not in any git work tree around $work (a TMPDIR inside one): git
		# apply would take the paths as the work tree's and skip them all.
		if ! (cd "$work/tree" && GIT_CEILING_DIRECTORIES=$work git apply -p1 "$p") >"$work/patch.log" 2>&1; then
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
	gomod "$up"
	# What the fork holds besides upstream's code, at its top only (a go.mod
	# or README.md further down is compared like any other file).
	for f in go.mod go.sum README.md LICENSE.md; do
		if [ -e "$fork/$f" ]; then cp "$fork/$f" "$work/tree/"; fi
	done
	cp -R "$fork/patches" "$work/tree/"
	if ! diff -ru "$work/tree" "$fork" >"$work/src.diff"; then
		echo "mochi-fork: third_party/mochi is not $VERSION plus its patches; put the change in a patch:" >&2
		cat "$work/src.diff" >&2
		exit 1
	fi
	echo "mochi-fork: $MODULE@$VERSION plus $(ls "$fork"/patches/*.patch 2>/dev/null | wc -l) patches"
}

# gomod checks the fork's go.mod, which is upstream's tidied for the packages
# kept: the same module and go version, and only requirements at versions
# upstream's module graph had (in its go.sum), nothing that replaces or
# excludes. (go.sum is not compared: tidying drops lines, and each one left
# is checked against sum.golang.org.)
gomod() {
	if [ "$(sed -n 's/^module[[:space:]]//p; s/^go[[:space:]]//p' "$fork/go.mod")" != \
		"$(sed -n 's/^module[[:space:]]//p; s/^go[[:space:]]//p' "$1/go.mod")" ]; then
		echo "mochi-fork: go.mod's module or go version is not $VERSION's" >&2
		exit 1
	fi
	if grep -Eq '^[[:space:]]*(replace|exclude|retract|toolchain|godebug|tool|ignore)([[:space:](]|$)' "$fork/go.mod"; then
		echo "mochi-fork: go.mod may only require modules:" >&2
		grep -E '^[[:space:]]*(replace|exclude|retract|toolchain|godebug|tool|ignore)([[:space:](]|$)' "$fork/go.mod" >&2
		exit 1
	fi
	awk '/^[[:space:]]*\/\// { next }
		/^require[[:space:]]*\(/ { req = 1; next }
		req && /^[[:space:]]*\)/ { req = 0; next }
		req { print $1, $2; next }
		/^require[[:space:]]/ { print $2, $3 }' "$fork/go.mod" | while read -r mod ver; do
		if ! awk -v m="$mod" -v v="$ver" '$1 == m && ($2 == v || $2 == v "/go.mod") { f = 1 } END { exit !f }' "$1/go.sum"; then
			echo "mochi-fork: go.mod requires $mod $ver, a version $VERSION's go.sum does not have" >&2
			exit 1
		fi
	done || exit 1
}

# patchTests prints, as one regular expression, the tests the patches add or
# change: each Test function of the fork's test files not found, the same to
# the byte, in the same directory upstream. (A hunk's header names the function
# before the hunk, not always the one it changes.) Upstream's own suite leans
# on millisecond sleeps and fails now and then on a loaded machine (patches
# 0005, 0008 and 0009 fixed three such tests); the tests that guard the patches
# run on every make test, the whole suite with test-all.
patchTests() {
	up=$(upstream)
	funcs=$(mktemp -d)
	testFuncs "$up" | LC_ALL=C sort >"$funcs/up"
	testFuncs "$fork" | LC_ALL=C sort >"$funcs/fork"
	names=$(LC_ALL=C comm -13 "$funcs/up" "$funcs/fork" | cut -f2 | sort -u | tr '\n' '|')
	rm -rf "$funcs"
	printf '^(%s)$' "${names%|}"
}

# testFuncs prints each top-level Test function of the test files under $1 as
# one line: its directory, its name and its text (lines joined by \034).
testFuncs() {
	(cd "$1" && find . -name '*_test.go' ! -path './patches/*' | sort | xargs awk '
		FNR == 1 { name = ""; dir = FILENAME; sub(/\/[^\/]*$/, "", dir) }
		name == "" && /^func Test[A-Za-z0-9_]*\(/ {
			name = $2; sub(/\(.*/, "", name); text = $0
			if ($0 !~ /\{$/) { print dir "\t" name "\t" text; name = "" }
			next
		}
		name != "" { text = text "\034" $0; if (/^}/) { print dir "\t" name "\t" text; name = "" } }')
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
