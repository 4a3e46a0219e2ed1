#!/usr/bin/env bash
# Measures another build of alertprof beside this tree's, in one run: REV (any commit) is
# built in a temporary worktree, then the whole-service scenarios run against each build in
# turn, old then new, ROUNDS times (default 2), so that the machine's drift falls on both
# alike. Prints the Markdown tables of each run.
#   benches/compare.sh REV [scenario...]      (default scenarios: intake memory idle)
# Needs wrk (apt-get install wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: benches/compare.sh REV [scenario...]}
shift
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(intake memory idle)
command -v wrk >/dev/null || { echo "compare: needs wrk (apt-get install wrk)" >&2; exit 1; }
old=$(mktemp -d -t alertprof-old.XXXXXX)
git worktree add --quiet --detach "$old" "$rev"
trap 'git worktree remove --force "$old"' EXIT
echo "compare: building $rev and this tree (release)" >&2
# The old build keeps its own target directory here, so a second comparison builds little.
old_target="$PWD/target/compare"
CARGO_TARGET_DIR="$old_target" cargo build --release --quiet --manifest-path "$old/Cargo.toml" --bin alertprof
cargo build --release --quiet --bin alertprof --example minimal_receiver
cargo bench --quiet --no-run --bench service 2>/dev/null
echo "## $(date -u +%Y-%m-%d) on $(nproc) cores: $(git rev-parse --short "$rev") (old) and $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes') (new)"
for round in $(seq 1 "${ROUNDS:-2}"); do
  for build in old new; do
    if [ "$build" = old ]; then binary="$old_target/release/alertprof"; else binary="$PWD/target/release/alertprof"; fi
    echo
    echo "### round $round, $build"
    echo
    ALERTPROF_BIN="$binary" cargo bench --quiet --bench service -- "${scenarios[@]}"
  done
done
