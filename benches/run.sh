#!/usr/bin/env bash
# Runs alertprof's benchmarks: the criterion benches of in-process parts, then the
# whole-service scenarios against the release binary on loopback. Prints Markdown that
# BENCHMARKS.md records. Give scenario names to run only those:
#   benches/run.sh intake reaction watch_reaction memory watch_scale idle
#   benches/run.sh overhead merge scale late        (the recorder: benches/recorder.rs)
#   benches/run.sh push_cost queue_down              (Pyroscope pushes: benches/pyroscope.rs)
#   benches/run.sh perf_overhead perf_symbolize perf_capture     (perf: benches/perf.rs)
# Needs wrk and Go (.ci/deps bench installs them); the perf scenarios need the right to
# open perf events (root, or CAP_PERFMON) and are skipped, saying so, without it. Run on a
# quiet machine: figures move with load.
set -euo pipefail
cd "$(dirname "$0")/.."
.ci/deps bench
cargo build --release --quiet --bin alertprof --example minimal_receiver
echo "## $(date -u +%Y-%m-%d) on $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo
if [ $# -eq 0 ]; then
  cargo bench --quiet --bench pipeline -- --noplot 2>/dev/null | grep -E "^[a-z_/ 0-9]+time:|time:" || true
  echo
fi
cargo bench --quiet --bench service -- "$@"
cargo bench --quiet --bench recorder -- "$@"
cargo bench --quiet --bench pyroscope -- "$@"
cargo bench --quiet --bench perf -- "$@"
