#!/usr/bin/env bash
# The Telemeter demo: a source Prometheus with an always-firing alert, the
# authorization-server, a 2-node telemeter-server cluster, a telemeter-client
# pushing every 15s, and a central Prometheus scraping both servers with
# honor_labels. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/bin
./scripts/install-prometheus.sh
PROMETHEUS=$(command -v prometheus || echo "$BIN/prometheus")
[ -x "$BIN/prometheus" ] && PROMETHEUS=$BIN/prometheus

HOST=127.0.0.1
SOURCE_PORT=${SOURCE_PORT:-9090}
CENTRAL_PORT=${CENTRAL_PORT:-9091}
CLIENT_PORT=${CLIENT_PORT:-9102}
AUTH_PORT=${AUTH_PORT:-9101}
A_PORT=${A_PORT:-9103}   # server A: external, internal = +1, cluster = +2
B_PORT=${B_PORT:-9113}   # server B

WORK=$ROOT/tmp/demo
rm -rf "$WORK"
mkdir -p "$WORK"/{source,central,a,b,logs}

pids=()
cleanup() {
	trap - INT TERM EXIT
	echo
	echo "stopping the demo..."
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for _ in $(seq 1 50); do
		alive=0
		for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
		[ $alive = 0 ] && break
		sleep 0.2
	done
	for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	echo "stopped; logs are in $WORK/logs"
}
trap cleanup INT TERM EXIT

bg() { # name, command...
	local name=$1; shift
	"$@" >"$WORK/logs/$name.log" 2>&1 &
	pids+=($!)
}

wait_http() { # url, what
	for _ in $(seq 1 150); do
		curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
		sleep 0.2
	done
	echo "demo: $2 did not come up at $1; see $WORK/logs" >&2
	exit 1
}

# Source Prometheus: scrapes itself, fires an alert.
cat >"$WORK/source/rules.yml" <<YAML
groups:
- name: demo
  rules:
  - alert: DemoAlwaysFiring
    expr: vector(1)
    labels: {severity: none}
    annotations: {summary: "Fires forever so that the demo has an alert to push."}
YAML
cat >"$WORK/source/prometheus.yml" <<YAML
global: {scrape_interval: 15s, evaluation_interval: 15s}
rule_files: [rules.yml]
scrape_configs:
- job_name: prometheus
  static_configs: [{targets: ["$HOST:$SOURCE_PORT"]}]
YAML
bg source-prometheus "$PROMETHEUS" --config.file="$WORK/source/prometheus.yml" \
	--storage.tsdb.path="$WORK/source/data" --web.listen-address="$HOST:$SOURCE_PORT"

# Authorization server with one cluster token.
echo '[{"token":"demo-token","cluster_ids":["demo-cluster"]}]' >"$WORK/tokens.json"
bg authorization-server "$BIN/authorization-server" "$HOST:$AUTH_PORT" "$WORK/tokens.json"
wait_http "http://$HOST:$AUTH_PORT/healthz" authorization-server

# Two telemeter-server nodes sharing a signing key and a gossip key.
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/shared-key.pem" 2>/dev/null
head -c 32 /dev/urandom | base64 >"$WORK/gossip.key"
server() { # name, port, extra args...
	local name=$1 port=$2; shift 2
	bg "server-$name" "$BIN/telemeter-server" \
		--listen="$HOST:$port" --listen-internal="$HOST:$((port + 1))" \
		--listen-cluster="$HOST:$((port + 2))" --name="$name" \
		--gossip-key-file="$WORK/gossip.key" --shared-key="$WORK/shared-key.pem" \
		--authorize="http://$HOST:$AUTH_PORT" --storage-dir="$WORK/$name" \
		--ratelimit=10s --ttl=10m "$@"
}
server a "$A_PORT"
server b "$B_PORT" --join="$HOST:$((A_PORT + 2))"
wait_http "http://$HOST:$((A_PORT + 1))/healthz/ready" "telemeter-server a"
wait_http "http://$HOST:$((B_PORT + 1))/healthz/ready" "telemeter-server b"
wait_http "http://$HOST:$SOURCE_PORT/-/ready" "source Prometheus"

# The client: alerts and up, instance anonymized, every 15s.
bg telemeter-client "$BIN/telemeter-client" \
	--from="http://$HOST:$SOURCE_PORT" --to="http://$HOST:$B_PORT" \
	--id=demo-cluster --to-token=demo-token --interval=15s \
	--match='{__name__="up"}' --match='{__name__="ALERTS",alertstate="firing"}' \
	--anonymize-labels=instance --anonymize-salt=demo-salt \
	--label=environment=demo --listen="$HOST:$CLIENT_PORT"

# Central Prometheus: scrapes both servers' /federate with honor_labels.
cat >"$WORK/central/prometheus.yml" <<YAML
global: {scrape_interval: 15s}
scrape_configs:
- job_name: telemeter
  honor_labels: true
  metrics_path: /federate
  static_configs:
  - targets: ["$HOST:$((A_PORT + 1))", "$HOST:$((B_PORT + 1))"]
YAML
bg central-prometheus "$PROMETHEUS" --config.file="$WORK/central/prometheus.yml" \
	--storage.tsdb.path="$WORK/central/data" --web.listen-address="$HOST:$CENTRAL_PORT"
wait_http "http://$HOST:$CENTRAL_PORT/-/ready" "central Prometheus"

cat <<TEXT

Telemeter demo is running (logs: $WORK/logs). Open:

  central Prometheus   http://$HOST:$CENTRAL_PORT/graph?g0.expr=%7B_id%3D%22demo-cluster%22%7D
                       query: {_id="demo-cluster"}   (alerts, renamed from ALERTS; up with anonymized instance)
  source Prometheus    http://$HOST:$SOURCE_PORT
  what leaves the site http://$HOST:$CLIENT_PORT/federate   (the client's last push)
  server a /federate   http://$HOST:$((A_PORT + 1))/federate
  server b /federate   http://$HOST:$((B_PORT + 1))/federate   (one of the two exports the cluster)
  cluster view         http://$HOST:$((A_PORT + 1))/debug/cluster

Series appear in the central Prometheus within about a minute. Ctrl-C stops everything.
TEXT
while :; do
	for pid in "${pids[@]}"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "demo: a process exited; see $WORK/logs" >&2
			exit 1
		fi
	done
	sleep 1
done
