#!/usr/bin/env bash
# Runs every fuzz target of the project for a bounded time each.
# Usage: scripts/fuzz.sh [duration]   (default 30s per target)
set -euo pipefail
cd "$(dirname "$0")/.."
time=${1:-30s}
# go test's own -timeout (10m by default) must outlast the fuzzing time, or
# a 10m campaign ends in "context deadline exceeded": allow 5 minutes more.
case "$time" in
*h) secs=$((${time%h} * 3600)) ;;
*m) secs=$((${time%m} * 60)) ;;
*s) secs=${time%s} ;;
*) secs=600 ;; # an iteration count such as 1000x
esac
timeout="$((secs + 300))s"
status=0
for pkg in $(go list ./internal/...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "== $pkg $target ($time)"
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$time" -timeout "$timeout" "$pkg"; then
			status=1
		fi
	done
done
exit $status
