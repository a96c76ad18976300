#!/usr/bin/env bash
# Fuzzes every backend's response parsers and the audit CSV verifier for a bounded time.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 30; env FUZZ_SECONDS too)
#
# With a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`), each target in
# fuzz/fuzz_targets runs under libFuzzer for that long, starting from the seeds that
# tests/fuzz_parsers.rs builds (written to fuzz/corpus/<target>); a crash leaves its input
# in fuzz/artifacts/<target>/ and fails the script. Without them, the same parsers run as
# the stable, seeded mutation loop of tests/fuzz_parsers.rs with more iterations (what CI
# runs by default), and the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-${FUZZ_SECONDS:-30}}"
targets=(countersign hoop github prefect airflow exec audit_csv)

have_cargo_fuzz() {
    rustup toolchain list 2>/dev/null | grep -q '^nightly' && cargo +nightly fuzz --version >/dev/null 2>&1
}

if ! have_cargo_fuzz; then
    echo "fuzz.sh: no nightly toolchain or cargo-fuzz; running the stable mutation loop instead" >&2
    FUZZ_ITERATIONS="${FUZZ_ITERATIONS:-$((seconds * 2000))}" \
        cargo test -p countersign-app --test fuzz_parsers -- --nocapture
    exit 0
fi

# The seed corpus, from the same code that seeds the stable loop.
FUZZ_WRITE_SEEDS="$PWD/fuzz/corpus" FUZZ_ITERATIONS=0 \
    cargo test -p countersign-app --test fuzz_parsers -- --nocapture >/dev/null

for t in "${targets[@]}"; do
    echo "fuzz.sh: $t for ${seconds}s"
    (cd fuzz && cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=262144 -print_final_stats=1)
done
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no crash"
