#!/usr/bin/env bash
# End-to-end demo of the real stack on this machine: Prometheus scrapes a Go demo service
# and fires the shipped GoroutineSpike rule; Alertmanager posts it to alertprof with a
# bearer token; alertprof re-verifies, captures goroutine and CPU profiles, stores them,
# and annotates a Grafana API stand-in with a link to each. Shows the profiles' top
# functions and the annotation. Then a late alert: a 2-second burst, alerted 15 s after it
# was over, gets the burst's CPU profile from alertprof's recorder. Run from a terminal, it
# then leaves the stack up, with the web page's address, until Enter; otherwise (CI, a
# pipe) it stops at once. Stops everything it started, whatever happens.
#
# Needs cargo; installs what else it needs from Debian (Go, Prometheus, Alertmanager, curl,
# python3) when run as root, or says the one command to run.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d -t alertprof-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "demo: stopped everything it started; its files stay in $work"
}
trap cleanup EXIT

command -v cargo >/dev/null || { echo "demo: needs cargo (Rust 1.89 or newer, https://rustup.rs)" >&2; exit 1; }
"$root/.ci/deps" demo
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # URL what [auth header]
  for _ in $(seq 1 300); do curl -fsS -o /dev/null ${3:+-H "$3"} "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "demo: $2 did not come up at $1" >&2
  exit 1
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
decision_on() { # ALERTNAME: alertprof's decision on it, as JSON, once there is one (60 s at most)
  local found=""
  for _ in $(seq 1 600); do
    found=$(curl -fsS -H "Authorization: Bearer am-demo-token" "http://127.0.0.1:$alertprof_port/api/v1/decisions" |
      json "json.dumps(next((x for x in d if x.get('alertname') == '$1'), ''))")
    [ "$found" != '""' ] && [ -n "$found" ] && break
    sleep 0.1
  done
  echo "$found"
}

echo "demo: building alertprof (a few minutes the first time) and the Go demo service"
cargo build --manifest-path "$root/Cargo.toml" --bin alertprof
(cd "$root/examples/demo-target" && CGO_ENABLED=0 GOPROXY=off go build -o "$work/demo-target" .)
# Where cargo put it: target/, or $CARGO_TARGET_DIR, or what a cargo config says.
target_dir=$(cargo metadata --manifest-path "$root/Cargo.toml" --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
alertprof="$target_dir/debug/alertprof"

demo_port=$(free_port); alertprof_port=$(free_port); am_port=$(free_port); prom_port=$(free_port); grafana_port=$(free_port)
echo "am-demo-token" >"$work/alertprof-token"
echo "glsa_demo" >"$work/grafana-token"

"$work/demo-target" -listen "127.0.0.1:$demo_port" 2>"$work/demo-target.log" &
pids+=($!)
python3 "$root/examples/grafana-stub.py" "$grafana_port" "$work/grafana-token" >"$work/grafana.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$demo_port/metrics" "the demo service"

# The config in examples/demo/alertprof.yaml (tests/shipped_configs.rs runs it too), its
# ports filled in.
sed -e "s/@ALERTPROF_PORT@/$alertprof_port/g" -e "s/@DEMO_PORT@/$demo_port/g" \
    -e "s/@GRAFANA_PORT@/$grafana_port/g" "$root/examples/demo/alertprof.yaml" >"$work/alertprof.yaml"
if grep -n '@[A-Z_]*@' "$work/alertprof.yaml"; then
  echo "demo: examples/demo/alertprof.yaml has a placeholder the demo does not fill" >&2
  exit 1
fi
"$alertprof" check-config "$work/alertprof.yaml"
"$alertprof" serve --config "$work/alertprof.yaml" 2>"$work/alertprof.log" &
pids+=($!)
wait_for "http://127.0.0.1:$alertprof_port/-/ready" "alertprof"

# The shipped rules and receiver, pointed at this alertprof; `for` is cut to 0s so the
# demo does not wait the rule's 30s.
sed 's/^\(\s*for:\).*/\1 0s/' "$root/rules/alertprof.rules.yml" >"$work/rules.yml"
sed -e "s#url: http://127.0.0.1:9731/api/v1/alerts#url: http://127.0.0.1:$alertprof_port/api/v1/alerts#" \
    -e "s#credentials_file: /etc/alertprof/token#credentials_file: $work/alertprof-token#" \
    "$root/alertmanager/alertmanager.yml" >"$work/alertmanager.yml"
cat >"$work/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [$work/rules.yml]
alerting:
  alertmanagers: [{static_configs: [{targets: ["127.0.0.1:$am_port"]}]}]
scrape_configs:
  - job_name: demo
    static_configs: [{targets: ["127.0.0.1:$demo_port"]}]
YAML
prometheus-alertmanager --config.file="$work/alertmanager.yml" --storage.path="$work/am-data" \
  --web.listen-address="127.0.0.1:$am_port" --cluster.listen-address= 2>"$work/alertmanager.log" &
pids+=($!)
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prom-data" \
  --web.listen-address="127.0.0.1:$prom_port" 2>"$work/prometheus.log" &
pids+=($!)
wait_for "http://127.0.0.1:$am_port/-/ready" "Alertmanager"
wait_for "http://127.0.0.1:$prom_port/-/ready" "Prometheus"

echo "demo: waiting for Prometheus to scrape the quiet service"
for _ in $(seq 1 100); do
  seen=$(curl -fsS "http://127.0.0.1:$prom_port/api/v1/query?query=count_over_time(go_goroutines%5B1m%5D)" |
    json 'd["data"]["result"][0]["value"][1] if d["data"]["result"] else 0')
  [ "$seen" -ge 3 ] && break
  sleep 0.2
done

echo "demo: waiting for alertprof's baseline of the quiet service (goroutine and cpu)"
baseline=""
for _ in $(seq 1 300); do
  baseline=$(curl -fsS -H "Authorization: Bearer am-demo-token" "http://127.0.0.1:$alertprof_port/api/v1/decisions" |
    json '"captured" if any(x["source"] == "baseline" and x["outcome"] == "captured" for x in d) else ""')
  [ -n "$baseline" ] && break
  sleep 0.1
done
[ -n "$baseline" ] || { echo "demo: no baseline taken; see $work/alertprof.log" >&2; exit 1; }

echo "demo: the service spikes: 2000 goroutines parked, a core busy in main.burnCPU"
curl -fsS "http://127.0.0.1:$demo_port/goroutines?n=2000" >/dev/null
curl -fsS "http://127.0.0.1:$demo_port/burn?seconds=20&workers=1" >/dev/null
burn_started=$(date +%s)

echo "demo: Prometheus fires GoroutineSpike, Alertmanager posts it to alertprof..."
auth="Authorization: Bearer am-demo-token"
decision=$(decision_on GoroutineSpike)
echo "demo: alertprof's decision:"
echo "$decision" | python3 -m json.tool --no-ensure-ascii
echo "$decision" | grep -q '"outcome": "captured"' || { echo "demo: nothing captured; see $work/*.log" >&2; exit 1; }

echo
echo "demo: profiles stored in $work/data/demo:"
ls -l "$work/data/demo"
for kind in goroutine cpu; do
  profile=$(ls "$work"/data/demo/*-goroutine-spike-"$kind".pb.gz)
  echo
  echo "demo: go tool pprof -top $profile"
  go tool pprof -top "$profile" 2>/dev/null | head -n 12
done

echo
echo "demo: the Grafana annotations (GET /api/annotations?tags=alertprof):"
curl -fsS -H "Authorization: Bearer glsa_demo" "http://127.0.0.1:$grafana_port/api/annotations?tags=alertprof" |
  json '"\n".join("  tags %s\n  time %s..%s\n  text %s" % (a["tags"], a["time"], a["timeEnd"], a["text"]) for a in d)'
links() { # the annotation text's links of the spike's goroutine capture
  curl -fsS -H "Authorization: Bearer glsa_demo" "http://127.0.0.1:$grafana_port/api/annotations?tags=goroutine" |
    json '"\n".join(p.split("\"")[0] for a in d if " on alert " in a["text"] for p in a["text"].split("href=\"")[1:])'
}
link=$(links | grep '/profile$')
curl -fsS -H "$auth" -o "$work/downloaded.pb.gz" "$link"
echo
echo "demo: the annotation's link $link"
same=$(cmp -s "$work/downloaded.pb.gz" "$(ls "$work"/data/demo/*-goroutine-spike-goroutine.pb.gz)" && echo yes || echo NO)
echo "demo: downloads $(wc -c <"$work/downloaded.pb.gz") bytes, the same as the stored file: $same"
[ "$same" = yes ] || exit 1
flame=$(links | grep '/flamegraph.svg$')
curl -fsS -H "$auth" -o "$work/flamegraph.svg" "$flame"
echo "demo: its flame graph $flame: $(wc -c <"$work/flamegraph.svg") bytes of SVG, kept as $(ls "$work"/data/demo/*.flamegraph.svg)"
echo
echo "demo: what grew during the spike, by kind (the decision's \"grew\"): the goroutine profile"
echo "demo: is compared with the recorder's snapshot from before the alert, the cpu with the baseline"
echo "$decision" | json '"\n".join("  %s: %s" % kv for kv in d.get("grew", {}).items())'
diff_link=$(links | grep '/diff?base=')
echo "demo: $diff_link, the top rows (a goroutine profile ranks by cum: flat is all in the scheduler):"
echo "            cum     cum%           flat  function"
curl -fsS -H "$auth" "$diff_link&limit=5" |
  json '"\n".join("  %+12d %7.1f%% %+14d  %s" % (f["cum"], f["cum_percent"], f["flat"], f["function"]) for f in d["functions"])'


echo
echo "demo: now an alert that comes late. Real rules alert minutes after a spike starts;"
echo "demo: a 2-second burst is long over by then. alertprof's recorder has kept the last"
echo "demo: 2 minutes of the service's profiles:"
curl -fsS -H "$auth" "http://127.0.0.1:$alertprof_port/api/v1/recorder" |
  json '"\n".join("  %s %s every %s: %d kept, %d bytes, since %s" % (r["target"], k["kind"], k["every"], k["segments"], k["bytes"], k.get("oldest")) for r in d for k in r["kinds"])'
# The first burst's 20 s must be over, and 5 s more (the lookback) before the next.
sleep $(( burn_started + 26 - $(date +%s) > 0 ? burn_started + 26 - $(date +%s) : 0 ))
burst_at=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
echo "demo: $burst_at a 2-second burst in main.burnCPU, then 15 s of quiet"
curl -fsS "http://127.0.0.1:$demo_port/burn?seconds=2&workers=1" >/dev/null
sleep 15
echo "demo: the alert, with startsAt at the burst, as Prometheus would send it (POST /api/v2/alerts)"
curl -fsS -X POST -H 'Content-Type: application/json' "http://127.0.0.1:$am_port/api/v2/alerts" \
  -d '[{"labels": {"alertname": "CPUBurst", "job": "demo", "alertprof": "true"}, "startsAt": "'"$burst_at"'"}]'
late=$(decision_on CPUBurst)
echo "demo: alertprof's decision:"
echo "$late" | json '"  %s: %s" % (d["outcome"], d["reason"])'
echo "$late" | grep -q '"outcome": "captured"' || { echo "demo: the late alert captured nothing; see $work/alertprof.log" >&2; exit 1; }
cpu_meta=$(ls "$work"/data/demo/*-late-burst-cpu.json)
echo "demo: its CPU profile covers the window from 5 s before the burst, merged from the recorder:"
json '"  window %s .. %s, %d segments" % (d["window"]["from"], d["window"]["to"], len(d["segments"]))' <"$cpu_meta"
echo "demo: go tool pprof -top ${cpu_meta%.json}.pb.gz"
go tool pprof -top "${cpu_meta%.json}.pb.gz" 2>/dev/null | head -n 8
go tool pprof -top "${cpu_meta%.json}.pb.gz" 2>/dev/null | grep -q 'main.burnCPU' ||
  { echo "demo: main.burnCPU is not in the late alert's profile" >&2; exit 1; }
echo "demo: the heap, newest against the recorder's snapshot from before the window:"
echo "$late" | json '"  heap: %s" % d.get("grew", {}).get("heap", "nothing grew")'

# From a terminal, the stack stays up so that the annotations' links and the web page can be
# opened; with no terminal (CI, a pipe) it stops here.
if [ -t 0 ] && [ -t 1 ] && [ "${CI:-}" != true ]; then
  echo
  echo "demo: alertprof's web page: http://127.0.0.1:$alertprof_port/ (sign in with the token am-demo-token)"
  echo "demo: Prometheus http://127.0.0.1:$prom_port/, Alertmanager http://127.0.0.1:$am_port/"
  read -r -p "demo: everything stays up; press Enter to stop it. " _
fi
