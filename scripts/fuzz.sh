#!/usr/bin/env bash
# Runs every fuzz target of the project for a bounded time each.
# Usage: scripts/fuzz.sh [duration]   (default 30s per target)
set -euo pipefail
cd "$(dirname "$0")/.."
time=${1:-30s}
status=0
for pkg in $(go list ./internal/...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "== $pkg $target ($time)"
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$time" "$pkg"; then
			status=1
		fi
	done
done
exit $status
