#!/usr/bin/env bash
# Install what `make bench` needs beyond `make setup`, idempotently: `wrk` (closed-loop load,
# Debian package) and `oha` (fixed-rate load, crates.io via `cargo install --locked`, into
# ~/.cargo/bin). `taskset` (util-linux) pins Envoy and the load tool to their cores.
# Nothing is downloaded from outside the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."

OHA_VERSION="${OHA_VERSION:-}" # empty: the newest release on crates.io

log() { printf 'bench-setup: %s\n' "$*"; }

# 1. Debian packages.
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
command -v wrk >/dev/null 2>&1 || { echo "bench-setup: wrk did not install" >&2; exit 1; }

# 2. oha from crates.io (cargo install puts it in ~/.cargo/bin).
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
if [ ! -x "$CARGO_BIN/oha" ] && ! command -v oha >/dev/null 2>&1; then
  log "installing oha ${OHA_VERSION:-(newest)} with cargo install --locked (a few minutes)"
  if [ -n "$OHA_VERSION" ]; then
    cargo install --locked --quiet oha --version "$OHA_VERSION"
  else
    cargo install --locked --quiet oha
  fi
fi
OHA="$(command -v oha || echo "$CARGO_BIN/oha")"
[ -x "$OHA" ] || { echo "bench-setup: oha did not install" >&2; exit 1; }

log "ok (wrk $(wrk -v 2>&1 | sed -n 's/^wrk \([^ ]*\).*/\1/p' | head -1), $("$OHA" --version))"
