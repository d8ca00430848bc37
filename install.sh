#!/usr/bin/env bash
# Installs everything gristmill needs on a Debian machine with Python 3.11, idempotently:
#   1. Debian packages (compiler, cmake, boost for KenLM's lmplz),
#   2. a virtual environment in .venv (override with GRISTMILL_VENV) with torch (CPU build first) and gristmill[test],
#   3. KenLM's lmplz and build_binary, built from the kenlm source distribution into .venv/bin,
#   4. the offline models the default recipe uses, into the model cache (GRISTMILL_CACHE, default ~/.cache/gristmill).
# Re-running it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV=${GRISTMILL_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
KENLM_VERSION=0.3.0
TORCH_VERSION=${GRISTMILL_TORCH_VERSION:-2.13.0}
log() { printf '[install] %s\n' "$*" >&2; }
# Run a noisy step with its output in a log file; show the log's tail only if it fails.
quiet() {
  local logf; logf=$(mktemp)
  if ! "$@" >"$logf" 2>&1; then tail -n 40 "$logf" >&2; log "error: failed: $*"; rm -f "$logf"; exit 1; fi
  rm -f "$logf"
}

# --- 1. Debian packages -------------------------------------------------------
apt_pkgs=(build-essential cmake pkg-config libboost-program-options-dev libboost-system-dev
          libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev)
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then apt_pkgs+=(python3-venv python3-dev); fi
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. virtual environment and Python packages --------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
  quiet "$VENV/bin/pip" install -U pip
fi
VPY="$VENV/bin/python"
if ! "$VPY" -c 'import torch' >/dev/null 2>&1; then
  # Install the CPU build before anything can pull the multi-GB CUDA build in through 'torch>=2.11'.
  log "installing torch==$TORCH_VERSION"
  if [ -n "${GRISTMILL_TORCH_INDEX:-}" ]; then
    quiet "$VENV/bin/pip" install "torch==$TORCH_VERSION" --index-url "$GRISTMILL_TORCH_INDEX"
  else
    quiet "$VENV/bin/pip" install "torch==$TORCH_VERSION"
  fi
fi
stamp="$VENV/.gristmill-install-stamp"
want=$(cat pyproject.toml install.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing gristmill and its dependencies (a few minutes on first run)"
  quiet "$VENV/bin/pip" install -e ".[test]"
  echo "$want" > "$stamp"
fi

# --- 3. KenLM trainer binaries ------------------------------------------------
if [ ! -x "$VENV/bin/lmplz" ] || [ ! -x "$VENV/bin/build_binary" ]; then
  log "building KenLM lmplz and build_binary from the kenlm $KENLM_VERSION source distribution"
  work="$ROOT/.cache/kenlm-build"
  rm -rf "$work"; mkdir -p "$work"
  quiet "$VENV/bin/pip" download --no-deps --no-binary kenlm --no-build-isolation "kenlm==$KENLM_VERSION" -d "$work"
  tar -xzf "$work"/kenlm-*.tar.gz -C "$work"
  src=$(find "$work" -maxdepth 1 -mindepth 1 -type d -name 'kenlm*' | head -n1)
  if ! { cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release &&
          make -C "$work/build" -j"$(nproc)" lmplz build_binary; } >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    log "error: building lmplz failed (full log: $work/build.log)"
    exit 1
  fi
  cp "$work/build/bin/lmplz" "$work/build/bin/build_binary" "$VENV/bin/"
  rm -rf "$work"
fi

# --- 4. offline models ----------------------------------------------------------
if "$VPY" -c 'import gristmill.filters.models' >/dev/null 2>&1; then
  "$VENV/bin/beam" model provision --quiet
fi
log "ready: $VENV"
