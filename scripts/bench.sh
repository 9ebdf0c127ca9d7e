#!/usr/bin/env bash
# Runs the performance workloads W1–W7 and the micro-benchmarks, and writes
# docs/benchmarks.md (see that file for what each figure means).
#
#   scripts/bench.sh                   # default size, about 20 minutes
#   BENCH_SIZE=full scripts/bench.sh   # W1 at 5,000 clusters for 15 min, W4 at 50,000 too
#   scripts/bench.sh --smoke           # every workload at toy size, under a minute; the
#                                      # document goes to a temporary file
#
# Other arguments go to the harness (scripts/bench/): -only w2,w5 -keep -out FILE.
# Needs Go, and the peers from Debian: prometheus (2.42) and prometheus-pushgateway;
# as root they are installed with apt-get when missing, otherwise the peers' figures
# are reported as not measured. Every process it starts listens on 127.0.0.1 only,
# runs for a bounded time and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${BENCH_SIZE:-default}
args=()
for a in "$@"; do
	case "$a" in
	--smoke | -smoke) SIZE=smoke ;;
	*) args+=("$a") ;;
	esac
done
case "$SIZE" in
smoke | default | full) ;;
*)
	echo "bench: BENCH_SIZE=$SIZE: want smoke, default or full" >&2
	exit 2
	;;
esac

have() { command -v "$1" >/dev/null 2>&1; }
missing=()
have prometheus || missing+=(prometheus)
have prometheus-pushgateway || have pushgateway || missing+=(prometheus-pushgateway)
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ] && have apt-get; then
		echo "bench: installing ${missing[*]} (Debian packages)" >&2
		export DEBIAN_FRONTEND=noninteractive
		if ! { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
			echo "bench: could not install ${missing[*]}: the peers' figures will be reported as not measured" >&2
		fi
		# The packages may start daemons on the default ports; the benchmark
		# runs its own instances on free ports, so they are only stopped if
		# systemd started them.
		if have systemctl; then
			systemctl stop prometheus prometheus-pushgateway >/dev/null 2>&1 || true
		fi
	else
		echo "bench: ${missing[*]} missing and not root: the peers' figures will be reported as not measured" >&2
	fi
fi

BIN=$(mktemp -d "${TMPDIR:-/tmp}/telemeter-bench-bin.XXXXXX")
trap 'rm -rf "$BIN"' EXIT
go build -o "$BIN/" ./cmd/telemeter-server ./cmd/telemeter-benchmark
go build -o "$BIN/bench" ./scripts/bench

command="make bench"
case "$SIZE" in
full) command="BENCH_SIZE=full make bench" ;;
smoke) command="make bench-smoke" ;;
esac
"$BIN/bench" -size "$SIZE" -bin "$BIN" -repo "$PWD" -command "$command" ${args[@]+"${args[@]}"}
