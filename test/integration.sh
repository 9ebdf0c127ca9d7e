#!/usr/bin/env bash
# Usage: test/integration.sh [prometheus-url [bearer-token]]
#
# Pushes one batch from a Prometheus you already run (default
# http://localhost:9090) through telemeter-client into a throw-away local
# telemeter-server, and prints what the server then exports at /federate.
# The entry point of openshift/telemeter's test/integration.sh, kept for people
# who used it: point it at any Prometheus and see what Telemeter would send.
#
# The server runs on free loopback ports with a generated tokens file and a
# scratch storage directory; everything is stopped and removed on exit.
# bearer-token, if given, is sent to Prometheus (--from-token), e.g. a
# service-account token for an in-cluster Prometheus.
#
# Environment:
#   MATCH_FILE    file of series selectors, one per line (default: up and firing ALERTS)
#   FROM_CA_FILE  CA bundle for an https Prometheus (--from-ca-file)
#   CLUSTER_ID    the cluster ID to push as (default: integration-test)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/bin
FROM=${1:-http://localhost:9090}
FROM_TOKEN=${2:-}
CLUSTER_ID=${CLUSTER_ID:-integration-test}
HOST=127.0.0.1

die() {
	echo "integration: $*" >&2
	exit 1
}

for b in telemeter-client telemeter-server; do
	if [ ! -x "$BIN/$b" ]; then
		echo "integration: building $b into $BIN" >&2
		mkdir -p "$BIN"
		go build -o "$BIN/$b" "./cmd/$b" || die "cannot build $b"
	fi
done
command -v curl >/dev/null || die "curl not found"
command -v python3 >/dev/null || die "python3 not found"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/telemeter-integration.XXXXXX")
server_pid=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$server_pid" ]; then
		kill -TERM "$server_pid" 2>/dev/null || true
		for _ in $(seq 1 50); do
			kill -0 "$server_pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -KILL "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	if [ "$rc" != 0 ] && [ -f "$WORK/server.log" ]; then
		echo "--- telemeter-server log (last 20 lines) ---" >&2
		tail -n 20 "$WORK/server.log" >&2
	fi
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Two free loopback ports: the server's external and internal listeners.
read -r EXT INT <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
')"
[ -n "${INT:-}" ] || die "could not find free loopback ports"

TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
printf '[{"token":"%s","cluster_ids":["%s"]}]\n' "$TOKEN" "$CLUSTER_ID" >"$WORK/tokens.json"

"$BIN/telemeter-server" --listen="$HOST:$EXT" --listen-internal="$HOST:$INT" \
	--tokens-file="$WORK/tokens.json" --storage-dir="$WORK/data" --ttl=24h \
	>"$WORK/server.log" 2>&1 &
server_pid=$!

deadline=$((SECONDS + 30))
until curl -fsS -o /dev/null --max-time 2 "http://$HOST:$INT/healthz/ready" 2>/dev/null; do
	kill -0 "$server_pid" 2>/dev/null || die "telemeter-server exited at start"
	[ "$SECONDS" -lt "$deadline" ] || die "telemeter-server not ready within 30s"
	sleep 0.2
done

client=("$BIN/telemeter-client" --once --interval=2m
	--from="$FROM" --to="http://$HOST:$EXT" --id="$CLUSTER_ID" --to-token="$TOKEN")
[ -n "$FROM_TOKEN" ] && client+=(--from-token="$FROM_TOKEN")
[ -n "${FROM_CA_FILE:-}" ] && client+=(--from-ca-file="$FROM_CA_FILE")
if [ -n "${MATCH_FILE:-}" ]; then
	client+=(--match-file="$MATCH_FILE")
else
	client+=(--match='{__name__="up"}' --match='{__name__="ALERTS",alertstate="firing"}')
fi

echo "integration: pushing from $FROM as cluster $CLUSTER_ID" >&2
"${client[@]}" || die "telemeter-client --once failed (see its log above)"

echo "integration: /federate of the local telemeter-server:" >&2
curl -fsS --max-time 30 "http://$HOST:$INT/federate" || die "cannot read /federate"
