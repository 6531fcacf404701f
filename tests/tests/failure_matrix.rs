//! The failure matrix (issue 11): every guard filter × every failure it can meet, through a real
//! Envoy, with the outcome the client got, the metrics that moved and what reached the upstream.
//!
//! One test per filter. Each runs the filter alone (its policy delivered through ECDS from a
//! file, as the fleet does), in front of the demo upstream (LLM API and MCP server), with three
//! more clusters: `hang` (accepts and never answers), `dead` (nothing listens) and `reset`
//! (accepts, then resets the connection). Routes pick them by the `x-matrix-route` header, and
//! the filter's `route_policies` point its call-outs (second opinion, repair re-ask, approval
//! service, rag-acl lookup, escalation review queue) at `hang` or `dead` on those routes.
//!
//! Failures: a bad policy at start (static config: Envoy refuses to start; ECDS: the filter is
//! missing and Envoy fails closed) and on an ECDS reload (rejected, the old policy serves), a
//! call-out that times out or fails, an oversize, malformed or compressed request body, content
//! the filter does not judge, a compressed answer, an upstream reset before the headers and a
//! stream cut after them, and a VM failure (a trap, from a test-only build with the
//! `guard-host/fault-injection` feature: `make wasm-fault`) under each of Envoy's plugin
//! `failure_policy` values.
//!
//! Every row asserts its status (and that nothing unguarded reached the upstream where the filter
//! refuses), that Envoy still runs and answers a normal request afterwards, and that no VM failed
//! except in the VM-failure rows. The observed rows are docs/failure-matrix.md's tables (checked
//! here; `GUARD_BLESS=1` rewrites them).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use e2e::{gzip, repo_root, write_atomic, Env, Resp, Spec, WAIT};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const DOC: &str = "docs/failure-matrix.md";
const CHAT: &str = "/v1/chat/completions";
const MCP: &str = "/mcp";
const CHROMA_BASE: &str = "/api/v2/tenants/default_tenant/databases/default_database";
/// The call-outs' deadline on the `hang` route.
const CALLOUT_TIMEOUT_MS: u64 = 500;
/// Lines a rejected policy or an injected trap make Envoy log (allowed in those rows).
const EXPECTED_FAILURE_LINES: [&str; 5] = [
    "failed to load",
    "bad configuration",
    "Unable to create Wasm",
    "Function: proxy_on",
    "fault injection",
];

const TEMPLATE: &str = r#"
node: { id: failure-matrix, cluster: failure-matrix }
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: {{ADMIN_PORT}} }
static_resources:
  listeners:
    - name: matrix
      address:
        socket_address: { address: 127.0.0.1, port_value: {{LISTEN_PORT}} }
      per_connection_buffer_limit_bytes: 8388608
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: matrix
                codec_type: AUTO
                access_log:
                  - name: envoy.access_loggers.file
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
                      path: {{ACCESS_LOG}}
                      log_format:
                        json_format:
                          request_id: "%REQ(X-REQUEST-ID)%"
                          status: "%RESPONSE_CODE%"
                          flags: "%RESPONSE_FLAGS%"
                          details: "%RESPONSE_CODE_DETAILS%"
                          upstream: "%UPSTREAM_HOST%"
                          record: "%FILTER_STATE(wasm.guard_{{KEY}}:PLAIN)%"
                route_config:
                  name: routes
                  virtual_hosts:
                    - name: matrix
                      domains: ["*"]
                      routes:
                        - name: hang
                          match: { prefix: "/", headers: [{ name: x-matrix-route, string_match: { exact: hang } }] }
                          route: { cluster: upstream, timeout: 30s }
                        - name: dead
                          match: { prefix: "/", headers: [{ name: x-matrix-route, string_match: { exact: dead } }] }
                          route: { cluster: upstream, timeout: 30s }
                        - name: reset
                          match: { prefix: "/", headers: [{ name: x-matrix-route, string_match: { exact: reset } }] }
                          route: { cluster: reset, timeout: 30s }
                        - name: default_route
                          match: { prefix: "/" }
                          route: { cluster: upstream, timeout: 30s }
                http_filters:
                  - {{FILTER}}
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: upstream
      type: STATIC
      connect_timeout: 2s
      per_connection_buffer_limit_bytes: 8388608
      load_assignment:
        cluster_name: upstream
        endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{UPSTREAM_PORT}} } } } }] }]
    - name: hang
      type: STATIC
      connect_timeout: 2s
      load_assignment:
        cluster_name: hang
        endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{HANG_PORT}} } } } }] }]
    - name: dead
      type: STATIC
      connect_timeout: 2s
      load_assignment:
        cluster_name: dead
        endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{DEAD_PORT}} } } } }] }]
    - name: reset
      type: STATIC
      connect_timeout: 2s
      load_assignment:
        cluster_name: reset
        endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{RESET_PORT}} } } } }] }]
"#;

// ------------------------------------------------------------------ helper servers

/// Loopback servers the call-outs and the upstream fail against: `hang` accepts and holds the
/// connection (30 s at most) without answering; `reset` reads the request, then closes with
/// SO_LINGER 0 (a TCP reset); `dead` is a port nothing listens on.
struct Faulty {
    hang: u16,
    reset: u16,
    dead: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Faulty {
    async fn start() -> Faulty {
        let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let reset = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ports = (
            hang.local_addr().unwrap().port(),
            reset.local_addr().unwrap().port(),
            dead.local_addr().unwrap().port(),
        );
        drop(dead);
        let t1 = tokio::spawn(async move {
            while let Ok((mut s, _)) = hang.accept().await {
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = vec![0u8; 65536];
                    let _ = tokio::time::timeout(Duration::from_secs(30), async {
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                        }
                    })
                    .await;
                });
            }
        });
        let t2 = tokio::spawn(async move {
            while let Ok((mut s, _)) = reset.accept().await {
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = vec![0u8; 65536];
                    let _ =
                        tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
                    // Linger 0 resets at once (the deprecation is about blocking on a non-zero
                    // linger).
                    #[allow(deprecated)]
                    let _ = s.set_linger(Some(Duration::ZERO));
                    drop(s);
                });
            }
        });
        Faulty {
            hang: ports.0,
            reset: ports.1,
            dead: ports.2,
            tasks: vec![t1, t2],
        }
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

// ------------------------------------------------------------------ filters

/// A guard filter as the matrix runs it.
struct Filter {
    /// Record / metric name (`llm_telemetry`).
    key: &'static str,
    /// Envoy filter, root and VM id (`llm-telemetry`).
    name: &'static str,
    /// The plugin configuration: `default` as shipped, `hang` / `dead` with the call-out there.
    config: Value,
    /// A bad configuration and the JSON path its error must name.
    bad: (Value, &'static str),
    /// A request the filter passes (and judges).
    normal: Probe,
    /// A request that makes the filter call out (sent on the `hang` / `dead` routes).
    callout: Probe,
    /// The call-out row's label.
    callout_label: &'static str,
    /// An oversize, a malformed, a compressed request body, unsupported content.
    oversize: Probe,
    malformed: Probe,
    compressed: Probe,
    unsupported: Probe,
    /// LLM answers: a compressed answer and a stream cut mid-way (none for rag-acl).
    llm_answers: bool,
    /// The filter's default `failure_policy` is `fail_closed`.
    fail_closed: bool,
    /// The upstream when it is not the demo upstream (rag-acl: a real Chroma server).
    upstream_port: Option<u16>,
}

#[derive(Clone)]
struct Probe {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Probe {
    fn post(path: &str, body: impl Into<Vec<u8>>) -> Probe {
        Probe {
            method: "POST",
            path: path.to_string(),
            headers: vec![("content-type", "application/json".into())],
            body: body.into(),
        }
    }
    fn header(mut self, name: &'static str, value: &str) -> Probe {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.to_string()));
        self
    }
}

fn chat(content: &str) -> String {
    json!({"model":"gpt-4o","messages":[{"role":"user","content":content}]}).to_string()
}

fn chat_stream(content: &str) -> String {
    json!({"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":content}]})
        .to_string()
}

fn multipart() -> Probe {
    let boundary = "matrixboundary";
    let body = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\ncontent-type: audio/wav\r\n\r\nRIFF\0\0\0\0WAVEfmt \r\n--{boundary}--\r\n"
    );
    Probe::post("/v1/audio/transcriptions", body).header(
        "content-type",
        &format!("multipart/form-data; boundary={boundary}"),
    )
}

/// The common rows of an LLM API filter.
fn llm_probes() -> (Probe, Probe, Probe, Probe, Probe) {
    let normal = Probe::post(CHAT, chat("Hello, how are you?"));
    let oversize = Probe::post(CHAT, chat(&"a".repeat(1_100_000)));
    let malformed = Probe::post(CHAT, br#"{"model":"gpt-4o","messages":[{"role":"#.to_vec());
    let compressed =
        Probe::post(CHAT, gzip(chat("Hello").as_bytes())).header("content-encoding", "gzip");
    (normal, oversize, malformed, compressed, multipart())
}

fn with_routes(default: Value, hang: Value, dead: Value) -> Value {
    json!({
        "route_policies": {"hang": "hang", "dead": "dead"},
        "policies": {"default": default, "hang": hang, "dead": dead}
    })
}

fn escalate(cluster: &str) -> Value {
    json!({"fallback": {"on_upstream_failure": "escalate",
        "escalate": {"cluster": cluster, "timeout_ms": CALLOUT_TIMEOUT_MS}}})
}

fn llm_telemetry() -> Filter {
    let (normal, oversize, malformed, compressed, unsupported) = llm_probes();
    Filter {
        key: "llm_telemetry",
        name: "llm-telemetry",
        config: with_routes(
            json!({"fallback": {"on_upstream_failure": "error"}}),
            escalate("hang"),
            escalate("dead"),
        ),
        bad: (
            json!({"policies": {"default": {"failure_policy": "sometimes"}}}),
            "/policies/default/failure_policy",
        ),
        normal,
        callout: Probe::post(CHAT, chat("[[reset]]")),
        callout_label: "escalation to the review queue (after an upstream reset)",
        oversize,
        malformed,
        compressed,
        unsupported,
        llm_answers: true,
        fail_closed: false,
        upstream_port: None,
    }
}

fn pii_redact() -> Filter {
    let (normal, oversize, malformed, compressed, unsupported) = llm_probes();
    Filter {
        key: "pii_redact",
        name: "pii-redact",
        config: with_routes(json!({}), escalate("hang"), escalate("dead")),
        bad: (
            json!({"policies": {"default": {"entitiez": {}}}}),
            "/policies/default/entitiez",
        ),
        normal: normal.clone(),
        callout: Probe::post(CHAT, chat("[[reset]]")),
        callout_label: "escalation to the review queue (after an upstream reset)",
        oversize,
        malformed,
        compressed,
        unsupported,
        llm_answers: true,
        fail_closed: true,
        upstream_port: None,
    }
}

fn prompt_guard() -> Filter {
    let (normal, oversize, malformed, compressed, unsupported) = llm_probes();
    let grey_rule = json!([{"id": "matrix.grey", "category": "instruction_override", "weight": 0.6,
        "phrases": ["grey zone marker phrase"]}]);
    let grey = |cluster: &str| {
        json!({"model": false, "custom_rules": grey_rule, "second_opinion":
            {"cluster": cluster, "kind": "classifier", "timeout_ms": CALLOUT_TIMEOUT_MS}})
    };
    Filter {
        key: "prompt_guard",
        name: "prompt-guard",
        config: with_routes(json!({}), grey("hang"), grey("dead")),
        bad: (
            json!({"policies": {"default": {"thresholds": {"block": 7}}}}),
            "/policies/default/thresholds",
        ),
        normal,
        callout: Probe::post(CHAT, chat("grey zone marker phrase, tell me about loans")),
        callout_label: "second opinion (grey-zone prompt)",
        oversize,
        malformed,
        compressed,
        unsupported,
        llm_answers: true,
        fail_closed: true,
        upstream_port: None,
    }
}

fn schema_guard() -> Filter {
    let (normal, oversize, malformed, compressed, unsupported) = llm_probes();
    let repair = |cluster: &str| {
        json!({"on_failure": {"output": "repair"},
            "repair": {"cluster": cluster, "timeout_ms": CALLOUT_TIMEOUT_MS}})
    };
    let structured = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": r#"Answer as JSON. [[json:{"name":42}]]"#}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": {
            "type": "object", "properties": {"name": {"type": "string"}},
            "required": ["name"], "additionalProperties": false}}}
    });
    Filter {
        key: "schema_guard",
        name: "schema-guard",
        config: with_routes(json!({}), repair("hang"), repair("dead")),
        bad: (
            json!({"policies": {"default": {"on_failure": {"output": "explode"}}}}),
            "/policies/default/on_failure/output",
        ),
        normal,
        callout: Probe::post(CHAT, structured.to_string()),
        callout_label: "repair re-ask (answer fails its schema)",
        oversize,
        malformed,
        compressed,
        unsupported,
        llm_answers: true,
        fail_closed: true,
        upstream_port: None,
    }
}

fn approval_gate() -> Filter {
    let rules = json!([{"id": "big-payments", "tools": ["pay"],
        "when": [{"pointer": "/amount", "op": "gt", "value": 1000}], "outcome": "require_approval"}]);
    let policy = |cluster: &str| {
        json!({"rules": rules, "default": "allow", "mode": "hold", "hold_max_ms": 5000,
            "service": {"cluster": cluster, "timeout_ms": CALLOUT_TIMEOUT_MS}})
    };
    let mut config = with_routes(policy("dead"), policy("hang"), policy("dead"));
    config["identity"] = json!({"header": "x-user"});
    let call = |amount: u64| {
        json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call",
            "params": {"name": "pay", "arguments": {"amount": amount, "to": "bob"}}})
        .to_string()
    };
    let mcp = |body: Vec<u8>| Probe::post(MCP, body).header("x-user", "alice");
    let big = json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call",
        "params": {"name": "pay", "arguments": {"amount": 10, "memo": "a".repeat(1_100_000)}}})
    .to_string();
    Filter {
        key: "approval_gate",
        name: "approval-gate",
        config,
        bad: (
            json!({"policies": {"default": {"mode": "sometimes"}}}),
            "/policies/default/mode",
        ),
        normal: mcp(call(10).into_bytes()),
        callout: mcp(call(5000).into_bytes()),
        callout_label: "approval service (a payment over 1000, MCP tools/call)",
        oversize: mcp(big.into_bytes()),
        malformed: mcp(br#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"#.to_vec()),
        compressed: mcp(gzip(call(5000).as_bytes())).header("content-encoding", "gzip"),
        unsupported: multipart(),
        llm_answers: true,
        fail_closed: true,
        upstream_port: None,
    }
}

fn rag_acl(collection_id: &str) -> Filter {
    let policy = |lookup: &str, with_id: bool| {
        let collection = if with_id {
            json!({"id": collection_id})
        } else {
            json!({})
        };
        json!({
            "backend": "chroma",
            "attributes": {"tenant": "tenant"},
            "rules": [{"field": "tenant", "match": "equals", "attribute": "tenant"}],
            "roles_claim": "roles",
            "roles": {"reader": ["get", "query"]},
            "collections": {"docs": collection},
            "lookup": {"cluster": lookup, "timeout_ms": CALLOUT_TIMEOUT_MS}
        })
    };
    let mut config = with_routes(
        policy("upstream", true),
        policy("hang", false),
        policy("dead", false),
    );
    config["identity"] = json!({"claims_header": "x-claims"});
    let claims = json!({"sub": "alice", "tenant": "A", "roles": ["reader"]}).to_string();
    let query =
        json!({"query_embeddings": [[1.0, 0.0, 0.0]], "n_results": 2, "include": ["metadatas"]});
    let query_path = format!("{CHROMA_BASE}/collections/{collection_id}/query");
    let probe = |body: Vec<u8>| Probe::post(&query_path, body).header("x-claims", &claims);
    let big = json!({"query_embeddings": [[1.0, 0.0, 0.0]], "n_results": 2,
        "where_document": {"$contains": "a".repeat(1_100_000)}})
    .to_string();
    Filter {
        key: "rag_acl",
        name: "rag-acl",
        config,
        bad: (
            json!({"policies": {"default": {"backend": "mongo"}}}),
            "/policies/default/backend",
        ),
        normal: probe(query.to_string().into_bytes()),
        callout: probe(query.to_string().into_bytes()),
        callout_label: "collection lookup (a collection id the policy does not name)",
        oversize: probe(big.into_bytes()),
        malformed: probe(br#"{"query_embeddings": [[1.0, 0.0"#.to_vec()),
        compressed: probe(gzip(query.to_string().as_bytes())).header("content-encoding", "gzip"),
        unsupported: probe(b"query=docs".to_vec())
            .header("content-type", "application/x-www-form-urlencoded"),
        llm_answers: false,
        fail_closed: true,
        upstream_port: None,
    }
}

// ------------------------------------------------------------------ Envoy configs

/// How the filter's plugin configuration reaches Envoy.
enum Delivery<'a> {
    /// Through ECDS from this file (in a watched directory).
    Ecds(&'a Path),
    /// Inline (static), with Envoy's plugin `failure_policy` and the module to load.
    Inline {
        failure_policy: &'static str,
        wasm: PathBuf,
    },
}

fn wasm_path(key: &str, profile: &str) -> PathBuf {
    let p = repo_root().join(format!("target/wasm32-wasip1/{profile}/{key}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: `make wasm` (release) and `make wasm-fault` (fault) build it",
        p.display()
    );
    p
}

/// The wasm HTTP filter config (the `typed_config` of the filter, or of an ECDS resource).
fn wasm_config(f: &Filter, plugin: &Value, failure_policy: &str, wasm: &Path) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {
            "name": f.name,
            "root_id": f.name,
            "allow_on_headers_stop_iteration": true,
            "failure_policy": failure_policy,
            "vm_config": {
                "vm_id": f.name,
                "runtime": "envoy.wasm.runtime.v8",
                "environment_variables": {"key_values": {"GUARD_APPROVAL_CLIENT_TOKEN": "matrix-token"}},
                "code": {"local": {"filename": wasm.display().to_string()}}
            },
            "configuration": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": plugin.to_string()
            }
        }
    })
}

fn ecds_resource(f: &Filter, version: &str, plugin: &Value) -> Value {
    json!({
        "version_info": version,
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": f.name,
            "typed_config": wasm_config(f, plugin, "FAIL_CLOSED", &wasm_path(f.key, "release"))
        }]
    })
}

async fn start(
    f: &Filter,
    faulty: &Faulty,
    delivery: Delivery<'_>,
    plugin: &Value,
) -> anyhow::Result<Env> {
    let filter = match delivery {
        Delivery::Ecds(file) => json!({
            "name": f.name,
            "config_discovery": {
                "config_source": {"path_config_source": {
                    "path": file.display().to_string(),
                    "watched_directory": {"path": file.parent().unwrap().display().to_string()}
                }},
                "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]
            }
        }),
        Delivery::Inline {
            failure_policy,
            wasm,
        } => json!({"name": f.name, "typed_config": wasm_config(f, plugin, failure_policy, &wasm)}),
    };
    let template = match f.upstream_port {
        Some(port) => TEMPLATE.replacen(
            "port_value: {{UPSTREAM_PORT}}",
            &format!("port_value: {port}"),
            1,
        ),
        None => TEMPLATE.to_string(),
    };
    Env::start(
        Spec::template(&template)
            .var("KEY", f.key)
            .var("FILTER", &filter.to_string())
            .var("HANG_PORT", &faulty.hang.to_string())
            .var("DEAD_PORT", &faulty.dead.to_string())
            .var("RESET_PORT", &faulty.reset.to_string()),
    )
    .await
}

// ------------------------------------------------------------------ observing

/// Integer stats of Envoy's `/stats`.
async fn counters(env: &Env) -> BTreeMap<String, i64> {
    env.stats()
        .await
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            Some((k.to_string(), v.trim().parse::<i64>().ok()?))
        })
        .collect()
}

/// The stats a row reports when they moved: the guard's counters (not its volume counters,
/// histograms or memory gauge), the ECDS counters and Envoy's wasm VM stats.
fn reported(name: &str) -> bool {
    if let Some(rest) = name.strip_prefix("wasmcustom.") {
        return !(rest.ends_with(".requests")
            || rest.ends_with(".tokens_in")
            || rest.ends_with(".tokens_out")
            || rest.ends_with("_bytes"));
    }
    (name.starts_with("extension_config_discovery.")
        && (name.ends_with("config_fail") || name.ends_with("update_rejected")))
        || (name.starts_with("wasm.") && !name.ends_with(".active") && !name.ends_with("vm_count"))
}

fn moved(before: &BTreeMap<String, i64>, after: &BTreeMap<String, i64>) -> Vec<String> {
    after
        .iter()
        .filter(|(k, _)| reported(k))
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d != 0).then(|| format!("`{}` {d:+}", k.strip_prefix("wasmcustom.").unwrap_or(k)))
        })
        .collect()
}

/// Envoy's wasm VM stats (a VM failure or reload moves them).
fn vm_stats(c: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    c.iter()
        .filter(|(k, _)| k.starts_with("wasm."))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// What the client got: status, the guard's reason (header, error code, JSON-RPC reason) or
/// Envoy's response code details when no guard answered.
struct Seen {
    status: u16,
    reason: String,
    /// A guard answered (`x-guard-reason`).
    guarded: bool,
    upstream: usize,
    body: String,
}

async fn send(env: &Env, p: &Probe, route: Option<&str>, extra: &[(&str, &str)], id: &str) -> Seen {
    let mut req = env
        .client()
        .request(p.method, &p.path, None)
        .body(p.body.clone());
    for (k, v) in &p.headers {
        req = req.header(k, v);
    }
    if let Some(r) = route {
        req = req.header("x-matrix-route", r);
    }
    for (k, v) in extra {
        req = req.header(k, v);
    }
    req = req.header("x-request-id", id);
    let t0 = Instant::now();
    let resp = req.send().await.unwrap_or_else(|e| panic!("{id}: {e}"));
    assert!(t0.elapsed() < WAIT, "{id}: unbounded");
    // Forwarded: Envoy picked an upstream host for it (the access log's `%UPSTREAM_HOST%`).
    let line = access_line(env, id).await;
    let upstream = usize::from(
        line["upstream"]
            .as_str()
            .is_some_and(|h| !h.is_empty() && h != "-"),
    );
    let guard = resp.header("x-guard-reason");
    let reason = if let Some(r) = &guard {
        format!("`{r}`")
    } else if let Some(r) = reason_of(&resp).filter(|_| upstream == 0) {
        format!("`{r}`")
    } else {
        // Who answered: the upstream (`via_upstream`) or Envoy itself (its code details).
        let details = line["details"].as_str().unwrap_or("").to_string();
        if details == "via_upstream" {
            if resp.status == 200 {
                "—".to_string()
            } else {
                "(the upstream's answer)".to_string()
            }
        } else {
            format!("(Envoy: `{details}`)")
        }
    };
    Seen {
        status: resp.status,
        reason,
        guarded: guard.is_some(),
        upstream,
        body: resp.text(),
    }
}

/// A reason in the body: the error `code` of a provider-shaped error, a JSON-RPC error's
/// `data.reason`.
fn reason_of(resp: &Resp) -> Option<String> {
    let v: Value = serde_json::from_slice(&resp.body).ok()?;
    for ptr in ["/error/code", "/error/data/reason"] {
        if let Some(Value::String(s)) = v.pointer(ptr) {
            return Some(s.clone());
        }
    }
    None
}

async fn access_line(env: &Env, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = env.access_log(0).await.unwrap_or_default();
        if let Some(l) = lines.into_iter().find(|l| l["request_id"] == id) {
            return l;
        }
        if Instant::now() > deadline {
            return Value::Null;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Counters after a request: waits (bounded) for the filter's decision counter to move (it is
/// written when the request ends), then a little longer for the rest.
async fn settle(
    env: &Env,
    before: &BTreeMap<String, i64>,
    key: &str,
    expect_decision: bool,
) -> BTreeMap<String, i64> {
    let prefix = format!("wasmcustom.guard.{key}.decision.");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = counters(env).await;
        let decided = now
            .iter()
            .any(|(k, v)| k.starts_with(&prefix) && before.get(k).copied().unwrap_or(0) != *v);
        if decided || (!expect_decision && Instant::now() + Duration::from_millis(2700) > deadline)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            return counters(env).await;
        }
        if Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Row {
    failure: String,
    outcome: String,
    metric: String,
}

fn outcome(seen: &Seen, forwarded_note: &str) -> String {
    let upstream = if seen.upstream == 0 {
        "not forwarded".to_string()
    } else {
        forwarded_note.to_string()
    };
    if seen.reason == "—" {
        format!("{}, {upstream}", seen.status)
    } else {
        format!("{} {}, {upstream}", seen.status, seen.reason)
    }
}

fn metric_cell(m: &[String]) -> String {
    if m.is_empty() {
        "—".into()
    } else {
        m.join(", ")
    }
}

/// One row through the running Envoy: send, observe, check Envoy is alive and serving, VM
/// stats unchanged.
#[allow(clippy::too_many_arguments)]
async fn row(
    env: &mut Env,
    f: &Filter,
    failure: &str,
    p: &Probe,
    route: Option<&str>,
    id: &str,
    want_status: &[u16],
    forwarded_note: &str,
) -> (Row, Seen) {
    let before = counters(env).await;
    let seen = send(env, p, route, &[], id).await;
    assert!(
        want_status.contains(&seen.status),
        "{} / {failure}: status {} (want {want_status:?}): {}",
        f.key,
        seen.status,
        seen.body.chars().take(400).collect::<String>()
    );
    let after = settle(env, &before, f.key, true).await;
    assert_eq!(
        vm_stats(&before),
        vm_stats(&after),
        "{} / {failure}: a VM failed",
        f.key
    );
    assert!(env.running(), "{} / {failure}: Envoy exited", f.key);
    let ok = send(env, &f.normal, None, &[], &format!("{id}-after")).await;
    assert_eq!(
        ok.status, 200,
        "{} / {failure}: normal request after: {}",
        f.key, ok.body
    );
    (
        Row {
            failure: failure.to_string(),
            outcome: outcome(&seen, forwarded_note),
            metric: metric_cell(&moved(&before, &after)),
        },
        seen,
    )
}

// ------------------------------------------------------------------ the matrix of one filter

async fn matrix(f: Filter) {
    let faulty = Faulty::start().await;
    let mut rows: Vec<Row> = Vec::new();
    let dir = std::env::temp_dir().join(format!("guard-matrix-{}-{}", std::process::id(), f.key));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{}.json", f.name));
    write_atomic(
        &file,
        ecds_resource(&f, "1", &f.config).to_string().as_bytes(),
    )
    .unwrap();

    let mut env = start(&f, &faulty, Delivery::Ecds(&file), &f.config)
        .await
        .unwrap();
    let normal = send(&env, &f.normal, None, &[], "normal").await;
    assert_eq!(
        normal.status, 200,
        "{}: normal request: {}",
        f.key, normal.body
    );
    assert_eq!(
        normal.upstream, 1,
        "{}: the normal request reached the upstream",
        f.key
    );

    // Call-outs.
    let timeout_label = format!("call-out times out: {}", f.callout_label);
    let (r, seen) = row(
        &mut env,
        &f,
        &timeout_label,
        &f.callout,
        Some("hang"),
        "callout-hang",
        &[200, 400, 403, 502, 503],
        "sent upstream",
    )
    .await;
    let _ = seen;
    rows.push(r);
    let error_label = format!("call-out fails (connection refused): {}", f.callout_label);
    let (r, _) = row(
        &mut env,
        &f,
        &error_label,
        &f.callout,
        Some("dead"),
        "callout-dead",
        &[200, 400, 403, 502, 503],
        "sent upstream",
    )
    .await;
    rows.push(r);

    // Bodies: a fail-closed filter refuses them (never forwarded), a fail-open one passes them.
    for (label, probe, id, refusal) in [
        (
            "request body over the limit (1.1 MB, limit 1 MB)",
            &f.oversize,
            "oversize",
            Some(413u16),
        ),
        (
            "malformed request body (truncated JSON)",
            &f.malformed,
            "malformed",
            Some(400),
        ),
        (
            "compressed request body (gzip)",
            &f.compressed,
            "compressed",
            Some(415),
        ),
        (
            "unsupported content (multipart upload / form body)",
            &f.unsupported,
            "unsupported",
            None,
        ),
    ] {
        let (r, seen) = row(
            &mut env,
            &f,
            label,
            probe,
            None,
            id,
            &[200, 400, 403, 404, 413, 415, 502],
            "forwarded unchanged",
        )
        .await;
        if seen.guarded {
            assert_eq!(
                seen.upstream, 0,
                "{} / {label}: refused but forwarded",
                f.key
            );
        }
        if let Some(status) = refusal {
            if f.fail_closed {
                assert!(
                    seen.guarded && seen.status == status,
                    "{} / {label}: fail closed: {}",
                    f.key,
                    seen.body
                );
            } else {
                assert!(
                    !seen.guarded && seen.upstream == 1,
                    "{} / {label}: fail open: {}",
                    f.key,
                    seen.body
                );
            }
        }
        rows.push(r);
    }
    if f.llm_answers {
        let p = Probe::post(CHAT, chat("Hello [[gzip]]"));
        let (r, _) = row(
            &mut env,
            &f,
            "compressed answer (gzip)",
            &p,
            None,
            "answer-gzip",
            &[200, 502],
            "answered by the upstream",
        )
        .await;
        rows.push(r);
    }

    // The upstream fails.
    let (r, _) = row(
        &mut env,
        &f,
        "upstream resets before its headers",
        &f.normal,
        Some("reset"),
        "reset",
        &[502, 503],
        "sent upstream",
    )
    .await;
    rows.push(r);
    if f.llm_answers {
        let before = counters(&env).await;
        // Raw HTTP/1.1: the client sees the status and whatever arrived before the cut.
        let resp = e2e::Raw::post(env.listen, CHAT, chat_stream("Hello, how are you? [[cut]]"))
            .header("content-type", "application/json")
            .header("x-request-id", "cut")
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status,
            Some(200),
            "{}: cut stream: {}",
            f.key,
            resp.text()
        );
        let after = settle(&env, &before, f.key, true).await;
        assert_eq!(vm_stats(&before), vm_stats(&after));
        assert!(env.running());
        let line = access_line(&env, "cut").await;
        let record: Value = line["record"]
            .as_str()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        let cut = record["upstream_cut"]["details"]
            .as_str()
            .map(str::to_string);
        rows.push(Row {
            failure: "upstream cuts a stream after its headers".into(),
            outcome: format!(
                "200, the stream ends where the upstream cut it (Envoy: `{}`); the record's `upstream_cut`: {}",
                line["details"].as_str().unwrap_or(""),
                cut.map(|c| format!("`{c}`")).unwrap_or_else(|| "—".into())
            ),
            metric: metric_cell(&moved(&before, &after)),
        });
    }

    // A bad policy through ECDS: rejected, the old one serves.
    let before = counters(&env).await;
    write_atomic(
        &file,
        ecds_resource(&f, "2", &f.bad.0).to_string().as_bytes(),
    )
    .unwrap();
    let fail_stat = format!(
        "extension_config_discovery.http_filter.{}.config_fail",
        f.name
    );
    let deadline = Instant::now() + WAIT;
    while counters(&env).await.get(&fail_stat).copied().unwrap_or(0)
        == before.get(&fail_stat).copied().unwrap_or(0)
    {
        assert!(
            Instant::now() < deadline,
            "{}: bad ECDS policy never rejected",
            f.key
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = send(&env, &f.normal, None, &[], "after-bad-reload").await;
    assert_eq!(
        seen.status, 200,
        "{}: the old policy serves after a rejected reload",
        f.key
    );
    let after = settle(&env, &before, f.key, true).await;
    assert!(
        env.envoy_log().contains(f.bad.1),
        "{}: Envoy's log names {}",
        f.key,
        f.bad.1
    );
    let version = env.stats().await.unwrap();
    assert!(
        version.contains(&format!(
            "extension_config_discovery.http_filter.{}.version_text: \"1\"",
            f.name
        )),
        "{}: version stays 1",
        f.key
    );
    rows.push(Row {
        failure: "bad policy on an ECDS reload".into(),
        outcome: format!(
            "rejected, the old policy keeps serving (version `1`; next request 200); Envoy logs the path `{}`",
            f.bad.1
        ),
        metric: metric_cell(&moved(&before, &after)),
    });
    env.finish_expecting(&EXPECTED_FAILURE_LINES);

    // A bad policy at start.
    let err = start(
        &f,
        &faulty,
        Delivery::Inline {
            failure_policy: "FAIL_CLOSED",
            wasm: wasm_path(f.key, "release"),
        },
        &f.bad.0,
    )
    .await
    .err()
    .unwrap_or_else(|| panic!("{}: Envoy started with a bad static policy", f.key))
    .to_string();
    assert!(err.contains("envoy exited"), "{}: {err}", f.key);
    assert!(
        err.contains(f.bad.1),
        "{}: the error names {}: {err}",
        f.key,
        f.bad.1
    );
    rows.push(Row {
        failure: "bad policy at start (static config)".into(),
        outcome: format!(
            "Envoy refuses the config and exits; its log names `{}`",
            f.bad.1
        ),
        metric: "— (no Envoy)".into(),
    });

    let bad_file = dir.join(format!("bad-{}.json", f.name));
    write_atomic(
        &bad_file,
        ecds_resource(&f, "1", &f.bad.0).to_string().as_bytes(),
    )
    .unwrap();
    let env = start(&f, &faulty, Delivery::Ecds(&bad_file), &f.bad.0)
        .await
        .unwrap();
    let before = counters(&env).await;
    let seen = send(&env, &f.normal, None, &[], "bad-at-start").await;
    assert_eq!(seen.status, 500, "{}: no filter config: fail closed", f.key);
    assert_eq!(seen.upstream, 0, "{}: passed without its filter", f.key);
    let line = access_line(&env, "bad-at-start").await;
    let after = settle(&env, &before, f.key, false).await;
    rows.push(Row {
        failure: "bad policy at start (ECDS)".into(),
        outcome: format!(
            "Envoy starts without the filter's config: every request {} (flag `{}`), not forwarded, until a good policy arrives",
            seen.status,
            line["flags"].as_str().unwrap_or("")
        ),
        metric: metric_cell(&moved(&BTreeMap::new(), &after).into_iter().filter(|m| m.contains("config_fail")).collect::<Vec<_>>()),
    });
    env.finish_expecting(&EXPECTED_FAILURE_LINES);

    // VM failures under each of Envoy's plugin failure policies: the trapping request, one
    // right after it, one 1.5 s later (past FAIL_RELOAD's default 1 s backoff).
    for policy in ["FAIL_CLOSED", "FAIL_OPEN", "FAIL_RELOAD"] {
        let env = start(
            &f,
            &faulty,
            Delivery::Inline {
                failure_policy: policy,
                wasm: wasm_path(f.key, "fault"),
            },
            &f.config,
        )
        .await
        .unwrap();
        let before = counters(&env).await;
        let trapped = send(
            &env,
            &f.normal,
            None,
            &[("x-guard-fault", "request_headers")],
            "trap",
        )
        .await;
        let mut next = Vec::new();
        for (i, pause) in [0u64, 1500].into_iter().enumerate() {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let b = counters(&env).await;
            let seen = send(&env, &f.normal, None, &[], &format!("next-{i}")).await;
            // Guarded: the filter decided on it (its decision counter moved).
            let a = settle(&env, &b, f.key, seen.status == 200).await;
            let prefix = format!("wasmcustom.guard.{}.decision.", f.key);
            let guarded = a
                .iter()
                .any(|(k, v)| k.starts_with(&prefix) && b.get(k).copied().unwrap_or(0) != *v);
            next.push((seen, guarded));
        }
        let after = counters(&env).await;
        assert_eq!(
            trapped.status, 503,
            "{}: {policy}: the trapping request",
            f.key
        );
        assert_eq!(
            trapped.upstream, 0,
            "{}: {policy}: the trapping request",
            f.key
        );
        let (now, later) = (&next[0], &next[1]);
        match policy {
            "FAIL_CLOSED" => {
                for (s, _) in &next {
                    assert!(
                        s.status == 503 && s.upstream == 0,
                        "{}: {policy}: later requests refused",
                        f.key
                    );
                }
            }
            "FAIL_OPEN" => {
                for (s, guarded) in &next {
                    assert!(
                        s.status == 200 && !guarded,
                        "{}: {policy}: later requests pass unguarded",
                        f.key
                    );
                }
            }
            _ => {
                assert!(
                    now.0.status == 503 || now.1,
                    "{}: {policy}: never unguarded",
                    f.key
                );
                assert!(
                    later.0.status == 200 && later.1,
                    "{}: {policy}: a reloaded VM guards",
                    f.key
                );
            }
        }
        let describe = |(s, guarded): &(Seen, bool)| {
            let via = if s.upstream == 0 {
                "not forwarded"
            } else if *guarded {
                "forwarded, guarded by a new VM"
            } else {
                "forwarded **unguarded**"
            };
            if s.reason == "—" {
                format!("{}, {via}", s.status)
            } else {
                format!("{} {}, {via}", s.status, s.reason)
            }
        };
        rows.push(Row {
            failure: format!("VM failure (a trap), plugin `failure_policy: {policy}`"),
            outcome: format!(
                "the trapping request: {} {}, not forwarded; the next one: {}; 1.5 s later: {}",
                trapped.status,
                trapped.reason,
                describe(now),
                describe(later)
            ),
            metric: metric_cell(&moved(&before, &after)),
        });
        env.finish_expecting(&EXPECTED_FAILURE_LINES);
    }
    let _ = std::fs::remove_dir_all(&dir);
    check_doc(f.key, &rows);
}

// ------------------------------------------------------------------ the doc

static DOC_LOCK: Mutex<()> = Mutex::new(());

fn check_doc(key: &str, rows: &[Row]) {
    let mut table = String::from("\n| failure | outcome | metrics that moved |\n|---|---|---|\n");
    for r in rows {
        table.push_str(&format!(
            "| {} | {} | {} |\n",
            r.failure,
            r.outcome.replace('|', "\\|"),
            r.metric
        ));
    }
    let begin = format!("<!-- matrix {key}: generated by tests/tests/failure_matrix.rs -->");
    let end = format!("<!-- end matrix {key} -->");
    let _guard = DOC_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let path = repo_root().join(DOC);
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let section = doc
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(t, _)| t.to_string());
    if section.as_deref() == Some(table.as_str()) {
        return;
    }
    if std::env::var_os("GUARD_BLESS").is_some() {
        let new = match doc.split_once(&begin) {
            Some((b, rest)) => format!(
                "{b}{begin}{table}{end}{}",
                rest.split_once(&end).map(|(_, a)| a).unwrap_or("")
            ),
            None => format!("{doc}\n## {key}\n\n{begin}{table}{end}\n"),
        };
        std::fs::write(&path, new).unwrap();
    } else {
        panic!("{DOC} is out of date for {key} (rerun with GUARD_BLESS=1 to rewrite it); the table is:\n{table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_telemetry_matrix() {
    matrix(llm_telemetry()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_guard_matrix() {
    matrix(schema_guard()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_gate_matrix() {
    matrix(approval_gate()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_redact_matrix() {
    matrix(pii_redact()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_guard_matrix() {
    matrix(prompt_guard()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rag_acl_matrix() {
    let chroma = e2e::Chroma::start().await.unwrap();
    let r = chroma
        .client()
        .post(
            &format!("{CHROMA_BASE}/collections"),
            json!({"name": "docs"}).to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json().unwrap()["id"].as_str().unwrap().to_string();
    let r = chroma
        .client()
        .post(
            &format!("{CHROMA_BASE}/collections/{id}/add"),
            json!({"ids": ["a1", "b1"], "embeddings": [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0]],
                "metadatas": [{"tenant": "A"}, {"tenant": "B"}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
    let mut f = rag_acl(&id);
    f.upstream_port = Some(chroma.addr.port());
    matrix(f).await;
    drop(chroma);
}
