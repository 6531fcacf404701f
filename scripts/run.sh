#!/usr/bin/env bash
# `make run`: Envoy with the guard filters in front of the demo upstream, and a second Envoy
# with rag-acl in front of a local Chroma server (seeded with demo documents), on loopback.
# Ports: ENVOY_PORT (10000), ENVOY_ADMIN_PORT (9901), DEMO_UPSTREAM_PORT (18080),
# RAG_PORT (10001), RAG_ADMIN_PORT (9902), CHROMA_PORT (8000); and approval-gate's Envoy in front
# of the demo upstream with the approval service (console): APPROVAL_ENVOY_PORT (10002),
# APPROVAL_ADMIN_PORT (9903), APPROVAL_PORT (18090).
# ENVOY_CONFIG picks the config (default envoy/envoy.yaml; `make run ALL=1` uses
# envoy/envoy-all.yaml, every filter in one module). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_PORT="${ENVOY_PORT:-10000}"
ENVOY_ADMIN_PORT="${ENVOY_ADMIN_PORT:-9901}"
DEMO_UPSTREAM_PORT="${DEMO_UPSTREAM_PORT:-18080}"
RAG_PORT="${RAG_PORT:-10001}"
RAG_ADMIN_PORT="${RAG_ADMIN_PORT:-9902}"
CHROMA_PORT="${CHROMA_PORT:-8000}"
APPROVAL_ENVOY_PORT="${APPROVAL_ENVOY_PORT:-10002}"
APPROVAL_ADMIN_PORT="${APPROVAL_ADMIN_PORT:-9903}"
APPROVAL_PORT="${APPROVAL_PORT:-18090}"

mkdir -p .run
base="${ENVOY_CONFIG:-envoy/envoy.yaml}"
config="$base"
if [ "$ENVOY_PORT" != 10000 ] || [ "$ENVOY_ADMIN_PORT" != 9901 ] || [ "$DEMO_UPSTREAM_PORT" != 18080 ] || [ "$APPROVAL_PORT" != 18090 ]; then
  sed -e "s/port_value: 10000/port_value: ${ENVOY_PORT}/" \
      -e "s/port_value: 9901/port_value: ${ENVOY_ADMIN_PORT}/" \
      -e "s/port_value: 18080/port_value: ${DEMO_UPSTREAM_PORT}/" \
      -e "s/port_value: 18090/port_value: ${APPROVAL_PORT}/" "$base" > .run/envoy.yaml
  config=.run/envoy.yaml
fi

# The audit-chain key (records carry an HMAC chain; `guardctl audit verify` checks it): from the
# environment, else a per-checkout demo key in .run/audit.key.
if [ -z "${GUARD_AUDIT_KEY:-}" ]; then
  [ -s .run/audit.key ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > .run/audit.key
  GUARD_AUDIT_KEY="$(cat .run/audit.key)"
  export GUARD_AUDIT_KEY
fi

sed -e "s/port_value: 10001/port_value: ${RAG_PORT}/" \
    -e "s/port_value: 9902/port_value: ${RAG_ADMIN_PORT}/" \
    -e "s/port_value: 8000/port_value: ${CHROMA_PORT}/" envoy/rag-acl.yaml > .run/rag-acl.yaml

sed -e "s/port_value: 10002/port_value: ${APPROVAL_ENVOY_PORT}/" \
    -e "s/port_value: 9903/port_value: ${APPROVAL_ADMIN_PORT}/" \
    -e "s/port_value: 18080/port_value: ${DEMO_UPSTREAM_PORT}/" \
    -e "s/port_value: 18090/port_value: ${APPROVAL_PORT}/" envoy/approval-gate.yaml > .run/approval-gate.yaml

# The approver's console token and the filter's client token: per checkout, in .run/.
[ -s .run/approver.token ] || head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' > .run/approver.token
[ -s .run/approval-client.token ] || head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' > .run/approval-client.token
GUARD_APPROVAL_CLIENT_TOKEN="$(cat .run/approval-client.token)"
export GUARD_APPROVAL_CLIENT_TOKEN

pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped"
  exit 0
}
trap cleanup INT TERM EXIT

./target/release/demo-upstream --addr "127.0.0.1:${DEMO_UPSTREAM_PORT}" &
pids+=($!)
# The access log (stdout) also goes to .run/access.log for `guardctl audit verify`.
.venv/bin/envoy -c "$config" --use-dynamic-base-id --concurrency 2 -l warn --log-path .run/envoy.log \
  > >(tee .run/access.log) &
pids+=($!)

# The approval service (SQLite in .run/approvals.db) and approval-gate's Envoy.
./target/release/approval-service --addr "127.0.0.1:${APPROVAL_PORT}" --db .run/approvals.db \
  --client-token "${GUARD_APPROVAL_CLIENT_TOKEN}" \
  --approver-token "demo:approver+pii:$(cat .run/approver.token)" --pii-roles pii \
  > .run/approval-service.log 2>&1 &
pids+=($!)
.venv/bin/envoy -c .run/approval-gate.yaml --use-dynamic-base-id --concurrency 1 -l warn \
  --log-path .run/approval-envoy.log > .run/approval-access.log &
pids+=($!)

# Chroma (telemetry off) with its data in .run/chroma, and rag-acl's Envoy in front of it.
ANONYMIZED_TELEMETRY=False .venv/bin/chroma run --host 127.0.0.1 --port "${CHROMA_PORT}" \
  --path .run/chroma > .run/chroma.log 2>&1 &
pids+=($!)
.venv/bin/envoy -c .run/rag-acl.yaml --use-dynamic-base-id --concurrency 1 -l warn \
  --log-path .run/rag-envoy.log > .run/rag-access.log &
pids+=($!)

for _ in $(seq 1 300); do
  if curl -fsS "http://127.0.0.1:${ENVOY_ADMIN_PORT}/ready" >/dev/null 2>&1; then break; fi
  if ! kill -0 "${pids[1]}" 2>/dev/null; then echo "envoy failed to start; see .run/envoy.log" >&2; cat .run/envoy.log >&2; exit 1; fi
  sleep 0.1
done
for _ in $(seq 1 300); do
  if curl -fsS "http://127.0.0.1:${CHROMA_PORT}/api/v2/heartbeat" >/dev/null 2>&1 \
    && curl -fsS "http://127.0.0.1:${RAG_ADMIN_PORT}/ready" >/dev/null 2>&1 \
    && curl -fsS "http://127.0.0.1:${APPROVAL_PORT}/healthz" >/dev/null 2>&1 \
    && curl -fsS "http://127.0.0.1:${APPROVAL_ADMIN_PORT}/ready" >/dev/null 2>&1; then break; fi
  if ! kill -0 "${pids[2]}" 2>/dev/null; then echo "approval-service failed to start; see .run/approval-service.log" >&2; cat .run/approval-service.log >&2; exit 1; fi
  if ! kill -0 "${pids[3]}" 2>/dev/null; then echo "approval-gate envoy failed to start; see .run/approval-envoy.log" >&2; cat .run/approval-envoy.log >&2; exit 1; fi
  if ! kill -0 "${pids[4]}" 2>/dev/null; then echo "chroma failed to start; see .run/chroma.log" >&2; cat .run/chroma.log >&2; exit 1; fi
  if ! kill -0 "${pids[5]}" 2>/dev/null; then echo "rag-acl envoy failed to start; see .run/rag-envoy.log" >&2; cat .run/rag-envoy.log >&2; exit 1; fi
  sleep 0.1
done
.venv/bin/python scripts/rag-demo.py seed "http://127.0.0.1:${CHROMA_PORT}" > .run/rag-collection-id

L="http://127.0.0.1:${ENVOY_PORT}"
cat <<MSG

Envoy listens on ${L} (admin http://127.0.0.1:${ENVOY_ADMIN_PORT}), demo upstream on 127.0.0.1:${DEMO_UPSTREAM_PORT}.
Access log (one JSON line per request, with each filter's audit record) prints below.
Try, in another terminal:

  # streamed chat completion (the filter adds usage reporting and hides the extra usage chunk)
  curl -sN ${L}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Hello there, proxy"}]}'

  # Anthropic Messages, non-streamed
  curl -s ${L}/v1/messages -H 'content-type: application/json' \\
    -d '{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"Hi Claude"}]}'

  # token and latency metrics
  curl -s http://127.0.0.1:${ENVOY_ADMIN_PORT}/stats/prometheus | grep guard

  # the audit records in .run/access.log form HMAC chains; check them
  GUARD_AUDIT_KEY=\$(cat .run/audit.key) ./target/release/guardctl audit verify .run/access.log

rag-acl: Envoy on http://127.0.0.1:${RAG_PORT} in front of Chroma (127.0.0.1:${CHROMA_PORT}, collection
"docs" with documents of tenants A and B); its access log is .run/rag-access.log. See README.md
("Retrieval access control") for examples.

approval-gate: Envoy on http://127.0.0.1:${APPROVAL_ENVOY_PORT} (MCP at /mcp, LLM APIs) with the approval
console at http://127.0.0.1:${APPROVAL_PORT}/ (sign in with the token in .run/approver.token). See
README.md ("Human approval") for examples.

Ctrl-C stops everything.
MSG
wait -n "${pids[@]}"
