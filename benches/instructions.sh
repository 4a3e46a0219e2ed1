#!/usr/bin/env bash
# Instructions (not seconds) that alertprof spends on webhook intake, counted by
# callgrind: repeatable for the same binary and input whatever else the machine does, so
# two builds can be compared exactly where wrk's figures move by ±10%.
#   benches/instructions.sh [BINARY...]     (default: target/release/alertprof)
# Each binary serves 300 POSTs of one 100-alert payload (after a first one that admits it,
# so the rest are duplicates, as in the intake scenario); prints instructions per request.
# Needs valgrind and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "instructions: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
[ $# -gt 0 ] || { cargo build --release --quiet --bin alertprof; set -- target/release/alertprof; }
work=$(mktemp -d -t alertprof-instructions.XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 - "$work/payload.json" <<'PY'
import json, sys
alerts = [{"status": "firing", "labels": {"alertname": "HighCPU", "job": "svc", "instance": f"i{n}"},
           "annotations": {}, "startsAt": "2026-11-21T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
           "generatorURL": "http://prometheus", "fingerprint": f"fp{n}"} for n in range(100)]
payload = {"version": "4", "groupKey": "g", "truncatedAlerts": 0, "status": "firing", "receiver": "alertprof",
           "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am", "alerts": alerts}
open(sys.argv[1], "w").write(json.dumps(payload))
PY
requests=300
for binary in "$@"; do
  binary=$(realpath "$binary")
  dir=$(mktemp -d -p "$work")
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$dir/alertprof.yaml" <<YAML
listen_address: 127.0.0.1:$port
storage: {dir: data}
gate: {queue_size: 10000}
targets: [{name: svc, pprof_url: "http://127.0.0.1:9", alert_labels: {job: svc}}]
rules: [{name: cpu, alert_labels: {alertname: HighCPU}, capture: [goroutine], cooldown: 1h}]
YAML
  (cd "$dir" && exec valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
    "$binary" --log-level warn serve --config alertprof.yaml 2>"$dir/log") &
  pid=$!
  for _ in $(seq 1 300); do curl -fs -o /dev/null "http://127.0.0.1:$port/-/ready" && break; sleep 0.2; done
  post() { curl -fs -o /dev/null -X POST --data @"$work/payload.json" "http://127.0.0.1:$port/api/v1/alerts"; }
  post
  sleep 2
  callgrind_control -z "$pid" >/dev/null 2>&1
  for _ in $(seq 1 "$requests"); do post; done
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill -TERM "$pid"
  wait "$pid" || true
  total=$(grep -h '^summary:' "$dir"/callgrind.out.1 | awk '{print $2}')
  echo "$binary: $((total / requests)) instructions per request ($requests requests of 100 alerts)"
done
