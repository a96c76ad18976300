#!/usr/bin/env bash
# Installs whatever is missing, builds, and starts the console on the embedded
# default (the reference server in-process with the demo scenario) unless a config
# file exists. Extra arguments go to `countersign inbox`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
cargo build --locked -p countersign-cli

# The desktop window is still a placeholder (it lands with the window issue), so
# the console today is the CLI's live inbox, with or without a display.
exec ./target/debug/countersign inbox "$@"
