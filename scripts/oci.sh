#!/usr/bin/env bash
# `make oci`: push one Wasm OCI image per filter (scripts/oci.py) and print each image digest.
#   ./scripts/oci.sh NAME...      e.g. ./scripts/oci.sh llm-telemetry pii-redact
# REGISTRY (host[:port][/namespace], default 127.0.0.1:5000), TAG (default: the workspace
# version), OCI_OUT (default target/oci, for digests.json); see scripts/oci.py for credentials.
# With the default REGISTRY and nothing listening there, a local registry (Debian's
# docker-registry, loopback only, storage in .run/registry) is started and left running.
set -euo pipefail
cd "$(dirname "$0")/.."

DEFAULT_REGISTRY="127.0.0.1:5000"
REGISTRY="${REGISTRY:-$DEFAULT_REGISTRY}"
export REGISTRY

listening() { (exec 3<>"/dev/tcp/127.0.0.1/5000") 2>/dev/null; }

if [ "$REGISTRY" = "$DEFAULT_REGISTRY" ] && ! listening; then
  bin=/usr/bin/docker-registry
  if [ ! -x "$bin" ]; then
    echo "oci: $bin not found: run scripts/setup.sh (it installs Debian's docker-registry)" >&2
    exit 1
  fi
  mkdir -p .run/registry
  secret="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"  # signs upload state
  cat > .run/registry.yml <<EOF
# Written by scripts/oci.sh: the local registry of \`make oci\` (loopback only, no auth).
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $PWD/.run/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
  secret: $secret
  headers:
    X-Content-Type-Options: [nosniff]
EOF
  # setsid: the registry outlives `make`; its pid is in .run/registry.pid.
  setsid "$bin" serve .run/registry.yml > .run/registry.log 2>&1 < /dev/null &
  echo $! > .run/registry.pid
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null "http://$DEFAULT_REGISTRY/v2/" 2>/dev/null; then break; fi
    if ! kill -0 "$(cat .run/registry.pid)" 2>/dev/null; then
      echo "oci: docker-registry exited; its log (.run/registry.log):" >&2
      cat .run/registry.log >&2
      exit 1
    fi
    sleep 0.2
  done
  if ! curl -fsS -o /dev/null "http://$DEFAULT_REGISTRY/v2/"; then
    echo "oci: docker-registry did not answer on $DEFAULT_REGISTRY within 30 s (.run/registry.log)" >&2
    exit 1
  fi
  echo "oci: started a local registry on $DEFAULT_REGISTRY (docker-registry, pid $(cat .run/registry.pid)," \
    "storage .run/registry, log .run/registry.log); it keeps running: stop it with" \
    "kill \$(cat .run/registry.pid)" >&2
fi

exec python3 scripts/oci.py "$@"
