#!/usr/bin/env bash
# Runs every benchmark of bench/README.md on a release build and writes a table:
# our figure, a reference measured in the same run, the ratio and the goal.
#   bash scripts/bench.sh           full sizes (1,000,000 actions / 5,000,000 events...),
#                                   writes bench/results.md
#   bash scripts/bench.sh --small   small sizes for CI (the benches cannot rot),
#                                   writes bench/results-small.md
# Benchmarks are measurements, not tests: a goal that is missed is reported in the
# table, and the script still succeeds. A benchmark that cannot run fails the script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

small=0
profile=release
build=1
for arg in "$@"; do
  case "$arg" in
    --small) small=1 ;;
    # Only to try the script quickly: debug figures are not the product's.
    --debug) profile=debug ;;
    # Measure the binaries already in target/ (e.g. built by an earlier run).
    --no-build) build=0 ;;
    *) echo "usage: bash scripts/bench.sh [--small] [--debug] [--no-build]" >&2; exit 2 ;;
  esac
done

if [ "$small" = 1 ]; then
  actions=20000; events=5; history_runs=20; audit_runs=1; ingest=1000; ingest_runs=1
  latency_events=10; footprint_runs=3; out=bench/results-small.md
else
  actions=1000000; events=5; history_runs=50; audit_runs=3; ingest=10000; ingest_runs=3
  latency_events=100; footprint_runs=10; out=bench/results.md
fi

for tool in sqlite3 curl; do
  command -v "$tool" >/dev/null || { echo "bench.sh: $tool is missing (apt-get install $tool)" >&2; exit 1; }
done

started=$(date +%s)
step() { printf '== %s (%ss)\n' "$*" "$(( $(date +%s) - started ))" >&2; }

step "$profile build"
cargo_profile=()
[ "$profile" = release ] && cargo_profile=(--release)
if [ "$build" = 1 ]; then
  # The app embeds ui/dist: measure the current UI.
  npm --prefix ui run --silent build
  cargo build "${cargo_profile[@]}" --locked -p countersign-bench -p countersign-cli \
    -p countersign-server -p countersign-app
  # Benchmark 5's reference, a bare Tauri v2 window: its own workspace and lockfile, but
  # the same target dir and profile, so it reuses the dependencies the app just built.
  (cd bench/hello && CARGO_TARGET_DIR="$PWD/../../target" cargo build "${cargo_profile[@]}" --locked)
fi
bin=target/$profile

work=$(mktemp -d "${TMPDIR:-/tmp}/countersign-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
rows="$work/rows.md"
: >"$rows"

step "generate $actions actions x $events events"
mkdir -p "$work/store"
"$bin/countersign-bench" generate --db "$work/store/countersign.db" \
  --actions "$actions" --events-per-action "$events" | tee "$work/generated.txt" >&2

step "2. history at scale"
"$bin/countersign-bench" history --db "$work/store/countersign.db" --runs "$history_runs" -v >>"$rows"

step "3. audit export"
"$bin/countersign-bench" audit --db "$work/store/countersign.db" --cli "$bin/countersign" \
  --work "$work" --runs "$audit_runs" >>"$rows"
rm -rf "$work/store"

step "4. ingest"
"$bin/countersign-bench" ingest --server "$bin/countersign-server" --cli "$bin/countersign" \
  --work "$work/ingest" --actions "$ingest" --runs "$ingest_runs" >>"$rows"

step "1. event -> notification latency"
# A private session bus (and keyring) on which the bench owns the notification server.
bash scripts/with-keyring.sh "$bin/countersign-bench" latency --server "$bin/countersign-server" \
  --cli "$bin/countersign" --work "$work/latency" --probes "$latency_events" >>"$rows" \
  2> >(grep -v 'Failed to set fd limit' >&2)

step "5. app footprint"
if [ "$build" = 0 ] && [ ! -x "$bin/countersign-bench-hello" ]; then
  # CI measures what its own build made, and that build does not include bench/hello
  # (a second Tauri build: see bench/README.md, "App footprint in CI").
  echo "footprint: not run: --no-build and no $bin/countersign-bench-hello" >&2
  echo "| app footprint (idle RSS, cold start) | not run (--no-build and no hello binary; \`bash scripts/bench.sh\` builds it) | – | – | RSS ≤ 1.3×, start-up ≤ 1.5× | – |" >>"$rows"
else
  # The same private session bus and keyring as benchmark 1, for both binaries.
  # Only the table rows: services the bus activates for WebKit (the accessibility
  # registry) print on the same stdout.
  bash scripts/with-keyring.sh "$bin/countersign-bench" footprint --app "$bin/countersign-app" \
    --hello "$bin/countersign-bench-hello" --work "$work/footprint" --runs "$footprint_runs" \
    2> >(grep -v 'Failed to set fd limit' >&2) | grep '^|' >>"$rows"
fi

elapsed=$(( $(date +%s) - started ))
{
  echo "# Benchmark results"
  echo
  echo "\`bash scripts/bench.sh $*\` ($profile build) on $(date -u +%Y-%m-%dT%H:%MZ)," \
       "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)," \
       "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), load $(cut -d' ' -f1-3 /proc/loadavg)," \
       "$elapsed s in all."
  echo
  echo "Store: $(cat "$work/generated.txt")"
  echo
  echo "| benchmark | ours | reference | ratio | goal | met |"
  echo "|---|---|---|---|---|---|"
  cat "$rows"
} >"$out"
cat "$out"
step "done: $out"
