#!/usr/bin/env bash
# Makes sure `prometheus` and `promtool` are available for the tests and the demo.
# As root: Debian's package (apt-get install prometheus), about a minute.
# Otherwise: built from source with `go install` at a pinned version into ./bin
# (several minutes); scripts and tests look in ./bin first.
set -euo pipefail
cd "$(dirname "$0")/.."
PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-v0.316.0} # Go module version of Prometheus 3.x

if command -v prometheus >/dev/null 2>&1 || [ -x bin/prometheus ]; then
	exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "prometheus not found: installing Debian's prometheus package" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq --no-install-recommends prometheus >/dev/null
	# The package may start a daemon on :9090; the tests use their own instances.
	if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus >/dev/null 2>&1 || true; fi
	pkill -x prometheus >/dev/null 2>&1 || true
	exit 0
fi
echo "prometheus not found and not root: building it with go install (${PROMETHEUS_VERSION}) into ./bin; this takes several minutes" >&2
mkdir -p bin
GOBIN="$PWD/bin" go install "github.com/prometheus/prometheus/cmd/prometheus@${PROMETHEUS_VERSION}"
GOBIN="$PWD/bin" go install "github.com/prometheus/prometheus/cmd/promtool@${PROMETHEUS_VERSION}"
