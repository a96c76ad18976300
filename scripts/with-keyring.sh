#!/usr/bin/env bash
# Runs a command inside a private D-Bus session bus with an unlocked gnome-keyring
# (a real Secret Service) whose files live in a fresh temporary directory, so tests
# never touch a person's keyring and a stale keyring file cannot break them.
# Usage: bash scripts/with-keyring.sh COMMAND [ARGS…]
set -euo pipefail
if [ -z "${COUNTERSIGN_KEYRING_SESSION:-}" ]; then
  export COUNTERSIGN_KEYRING_SESSION=1
  exec dbus-run-session -- bash "$0" "$@"
fi
keyring_home="$(mktemp -d)"
trap 'rm -rf "$keyring_home"' EXIT
# gnome-keyring keeps its files in $XDG_DATA_HOME/keyrings.
export XDG_DATA_HOME="$keyring_home"
printf 'countersign-test' | gnome-keyring-daemon --components=secrets --daemonize --unlock >/dev/null
"$@"
