#!/usr/bin/env bash
# End-to-end demo on this machine: builds and starts the Go demo target, starts alertprof,
# makes the target spike, sends alertprof the alert Alertmanager would send, and shows the
# stored profiles' top functions. Stops everything it started, whatever happens.
# Needs: cargo, Go (Debian: apt-get install golang-go), curl.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d -t alertprof-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "demo: stopped everything it started; files are in $work"
}
trap cleanup EXIT

for tool in cargo go curl; do
  command -v "$tool" >/dev/null || { echo "demo: needs $tool (Go: apt-get install golang-go)" >&2; exit 1; }
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # URL, what
  for _ in $(seq 1 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "demo: $2 did not come up at $1" >&2; exit 1
}

echo "demo: building alertprof and the Go demo target"
cargo build --quiet --manifest-path "$root/Cargo.toml"
(cd "$root/examples/demo-target" && CGO_ENABLED=0 GOPROXY=off go build -o "$work/demo-target" .)

demo_port=$(free_port)
alertprof_port=$(free_port)
"$work/demo-target" -listen "127.0.0.1:$demo_port" 2>"$work/demo-target.log" &
pids+=($!)
wait_for "http://127.0.0.1:$demo_port/metrics" "the demo target"

cat >"$work/alertprof.yaml" <<YAML
listen_address: 127.0.0.1:$alertprof_port
storage: {dir: data}
targets:
  - name: demo
    pprof_url: http://127.0.0.1:$demo_port
    alert_labels: {job: demo}
rules:
  - name: cpu-spike
    alert_labels: {alertname: HighCPU}
    capture: [cpu, goroutine]
    seconds: 3
    cooldown: 5m
YAML
"$root/target/debug/alertprof" check-config "$work/alertprof.yaml"
"$root/target/debug/alertprof" serve --config "$work/alertprof.yaml" 2>"$work/alertprof.log" &
pids+=($!)
wait_for "http://127.0.0.1:$alertprof_port/-/ready" "alertprof"

echo "demo: the target spikes: 2 cores busy in main.burnCPU, 500 goroutines parked"
curl -fsS "http://127.0.0.1:$demo_port/burn?seconds=8&workers=2" >/dev/null
curl -fsS "http://127.0.0.1:$demo_port/goroutines?n=500" >/dev/null

echo "demo: sending alertprof the webhook Alertmanager would send for HighCPU"
now=$(date -u +%Y-%m-%dT%H:%M:%S.000Z)
curl -fsS -X POST -H 'Content-Type: application/json' "http://127.0.0.1:$alertprof_port/api/v1/alerts" -d @- <<JSON
{"version":"4","status":"firing","receiver":"alertprof","groupLabels":{},"commonLabels":{},
 "commonAnnotations":{},"externalURL":"http://127.0.0.1:9093","groupKey":"demo","truncatedAlerts":0,
 "alerts":[{"status":"firing","labels":{"alertname":"HighCPU","job":"demo"},"annotations":{},
 "startsAt":"$now","endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":"demo$(date +%s)"}]}
JSON
echo

for _ in $(seq 1 150); do
  decisions=$(curl -fsS "http://127.0.0.1:$alertprof_port/api/v1/decisions")
  [ "$decisions" != "[]" ] && break
  sleep 0.1
done
echo "demo: alertprof's decision:"
echo "$decisions" | python3 -m json.tool
echo "$decisions" | grep -q '"outcome":"captured"' || { echo "demo: nothing captured; see $work/alertprof.log" >&2; exit 1; }

echo "demo: stored under $work/data/demo:"
ls -l "$work/data/demo"
for kind in cpu goroutine; do
  profile=$(ls "$work"/data/demo/*-"$kind".pb.gz)
  echo
  echo "demo: go tool pprof -top $profile"
  go tool pprof -top "$profile" 2>/dev/null | head -n 12
done
