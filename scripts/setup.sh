#!/usr/bin/env bash
# Idempotent machine setup for Countersign on Debian 12 (run as root).
#
# Installs only what is missing:
#   1. the Debian packages needed to build and run the Tauri app headless
#      (see shared/HEADLESS.md);
#   2. tauri-driver (cargo install) for the end-to-end window tests;
#   3. the frontend's npm dependencies (npm ci) when ui/node_modules is absent
#      or older than ui/package-lock.json;
#   4. the pinned Prefect (backend tests) in the venv .venv-backends/;
#   5. the pinned Airflow (backend tests) in the venv .venv-airflow/;
# then builds the frontend into ui/dist, which `cargo build` embeds.
#
# Node.js (>= 20.19) and npm are expected on the machine already; Debian 12's
# own nodejs package is too old for Vite, so this script does not install it.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

log() { printf '[setup] %s\n' "$*"; }

APT_PACKAGES=(
  libwebkit2gtk-4.1-dev
  build-essential
  libssl-dev
  libayatana-appindicator3-dev
  librsvg2-dev
  libxdo-dev
  file
  xvfb
  webkit2gtk-driver
  dbus
  dbus-x11
  gnome-keyring
  libsecret-tools
  dunst
  imagemagick
  sqlite3
  openssh-client
  libdbus-1-dev
  xdotool
)

# --- 1. Debian packages ------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed$'; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} > 0)); then
  log "installing missing apt packages: ${missing[*]}"
  SUDO=()
  if ((EUID != 0)); then
    if command -v sudo >/dev/null 2>&1; then
      SUDO=(sudo)
    else
      log "error: not root and no sudo; cannot install: ${missing[*]}" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
else
  log "apt packages: all present"
fi

# --- 2. tauri-driver (E2E tests drive the real window through it) -------------
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if command -v tauri-driver >/dev/null 2>&1 || [[ -x "$cargo_bin/tauri-driver" ]]; then
  log "tauri-driver: present"
else
  if ! command -v cargo >/dev/null 2>&1; then
    log "error: cargo is required to install tauri-driver" >&2
    exit 1
  fi
  log "installing tauri-driver (cargo install --locked)"
  cargo install tauri-driver --locked --version "^2"
fi

# --- 3. Node.js / npm --------------------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  log "error: node and npm are required (Node.js >= 20.19)" >&2
  exit 1
fi
if ! node -e '
  const [maj, min] = process.versions.node.split(".").map(Number);
  process.exit(maj > 20 || (maj === 20 && min >= 19) ? 0 : 1);
'; then
  log "error: Node.js >= 20.19 is required, found $(node --version)" >&2
  exit 1
fi

# --- 4. Frontend dependencies ------------------------------------------------
# npm writes node_modules/.package-lock.json on every install: use it as the stamp.
stamp="ui/node_modules/.package-lock.json"
if [[ ! -f "$stamp" || ui/package-lock.json -nt "$stamp" ]]; then
  log "installing frontend dependencies (npm ci)"
  npm ci --prefix ui --no-audit --no-fund
  touch "$stamp"
else
  log "frontend dependencies: up to date"
fi

# --- 5. Frontend build (ui/dist, embedded by cargo build) --------------------
log "building the frontend into ui/dist"
npm run --prefix ui build

# --- 6. Backend servers for the integration tests (.venv-backends/) -----------
# tests/backend_prefect.rs runs a real Prefect server and flows from this venv.
# Skipped when the pinned version is already installed (~75 s and ~260 MB when not).
PREFECT_VERSION="3.9.1"
venv=".venv-backends"
if [[ -x "$venv/bin/python" ]] &&
  [[ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("prefect"))' 2>/dev/null)" == "$PREFECT_VERSION" ]]; then
  log "prefect $PREFECT_VERSION: present in $venv"
else
  if ! command -v python3 >/dev/null 2>&1; then
    log "error: python3 (>= 3.9) is required for the Prefect backend tests" >&2
    exit 1
  fi
  log "installing prefect==$PREFECT_VERSION into $venv"
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "prefect==$PREFECT_VERSION"
fi

# --- 7. Airflow for its backend test (.venv-airflow/) ---------------------------
# tests/backend_airflow.rs runs a real `airflow standalone` and HITL DAGs from this venv.
# Its own venv: Airflow pins many libraries that would clash with Prefect's. The official
# constraints file is not reachable from here (only package registries are), so the two
# packages are pinned: providers-standard 1.12.0 is the release current with Airflow 3.1.8.
# Skipped when both pinned versions are installed (~3 min and ~280 MB when not).
AIRFLOW_VERSION="3.1.8"
AIRFLOW_STANDARD_VERSION="1.12.0"
venv=".venv-airflow"
airflow_versions() {
  "$venv/bin/python" -c 'import importlib.metadata as m
print(m.version("apache-airflow"), m.version("apache-airflow-providers-standard"))' 2>/dev/null
}
if [[ -x "$venv/bin/python" ]] &&
  [[ "$(airflow_versions)" == "$AIRFLOW_VERSION $AIRFLOW_STANDARD_VERSION" ]]; then
  log "airflow $AIRFLOW_VERSION + providers-standard $AIRFLOW_STANDARD_VERSION: present in $venv"
else
  if ! command -v python3 >/dev/null 2>&1; then
    log "error: python3 (>= 3.10) is required for the Airflow backend tests" >&2
    exit 1
  fi
  log "installing apache-airflow==$AIRFLOW_VERSION into $venv"
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "apache-airflow==$AIRFLOW_VERSION" \
    "apache-airflow-providers-standard==$AIRFLOW_STANDARD_VERSION"
fi

log "done"
