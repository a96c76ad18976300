#!/usr/bin/env bash
# Installs whatever is missing, builds, and starts the console. With no config file it
# runs on the embedded default: the reference server in-process with the demo scenario.
# On a desktop (DISPLAY or WAYLAND_DISPLAY set) that is the window; without a display,
# the CLI's live inbox on the same engine and the same embedded default.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
if [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; then
  cargo build --locked -p countersign-app
  exec ./target/debug/countersign-app
fi
echo "No display (DISPLAY and WAYLAND_DISPLAY are unset): starting the CLI's live inbox instead."
cargo build --locked -p countersign-cli
exec ./target/debug/countersign inbox "$@"
