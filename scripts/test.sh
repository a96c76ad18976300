#!/usr/bin/env bash
# Installs whatever is missing, then runs every check and every test, as CI does.
# Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh

# A clean CI clone builds once: incremental caches would only cost disk (≈3.6 GB).
[ "${CI:-}" = "true" ] && export CARGO_INCREMENTAL=0

step() { printf '\n== %s\n' "$*"; }

step "rustfmt"
cargo fmt --all -- --check

step "ui: type check and lint"
npm --prefix ui run --silent check
npm --prefix ui run --silent lint

step "clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build (integration tests run the real binaries)"
# --all-targets: the binaries are built with the same feature set as the tests (dev-
# dependencies unify features), so the test step reuses them instead of building the
# whole Tauri tree a second time (a clean CI disk ran out doing that).
cargo build --workspace --all-targets --locked

step "ui: unit tests"
npm --prefix ui run --silent test

step "tests (inside a private D-Bus session with a real Secret Service)"
if command -v cargo-nextest >/dev/null 2>&1; then
  profile=default
  [ "${CI:-}" = "true" ] && profile=ci
  bash scripts/with-keyring.sh cargo nextest run --workspace --locked --profile "$profile"
else
  bash scripts/with-keyring.sh cargo test --workspace --locked
fi

step "benchmarks, small sizes on the debug build (so they cannot rot; figures: bench/README.md)"
bash scripts/bench.sh --small --debug --no-build
