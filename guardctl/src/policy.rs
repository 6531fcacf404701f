//! The whole-policy file (`envoy/policy.yaml`): one member per filter, each exactly that
//! filter's plugin configuration, plus an optional `deployment` member for `guardctl render`.
//!
//! ```yaml
//! llm_telemetry: { "name": "default", "policies": { "default": { "failure_policy": "fail_open" } } }
//! pii_redact:    { ... }            # the JSON pii-redact's on_configure takes
//! deployment:                       # optional: images, workloads, call-out clusters
//!   namespace: llm-guard
//! ```
//!
//! YAML or JSON. Members are validated by the filters' own config parsers (the code of their
//! `on_configure`); errors name the JSON path with the member prefix
//! (`/pii_redact/policies/default/entities/EMAIL/request: ...`). Unknown members are rejected.

use approval_gate::ApprovalGate;
use guard_core::config::{from_value_at, FailurePolicy, FilterConfig};
use guard_host::GuardFilter;
use llm_telemetry::Telemetry;
use rag_acl::RagAcl;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Which Envoy listener (Istio workload) a filter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The LLM gateway: llm-telemetry → schema-guard → approval-gate → pii-redact → prompt-guard.
    Llm,
    /// The routes to a vector database (rag-acl, after jwt_authn).
    VectorDb,
}

/// Istio's `failStrategy` of a plugin (Envoy's `PluginConfig.failure_policy`): what Envoy does
/// after the filter's VM failed (a trap kills the VM for the worker). In every case the request
/// that trapped gets a 503 (`wasm_fail_stream`); then:
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum FailStrategy {
    /// Every later request gets a 503 until Envoy restarts.
    #[serde(rename = "FAIL_CLOSE")]
    Close,
    /// Every later request passes with the filter skipped (unguarded, no audit record) until
    /// Envoy restarts.
    #[serde(rename = "FAIL_OPEN")]
    Open,
    /// Requests get a 503 during the reload backoff (`reload_config.backoff`, default 1 s), then
    /// Envoy creates a new VM and requests are guarded again. The default of every filter: never
    /// unguarded, and it recovers by itself.
    #[serde(rename = "FAIL_RELOAD")]
    Reload,
}

impl FailStrategy {
    pub fn istio(self) -> &'static str {
        match self {
            FailStrategy::Close => "FAIL_CLOSE",
            FailStrategy::Open => "FAIL_OPEN",
            FailStrategy::Reload => "FAIL_RELOAD",
        }
    }
    /// Envoy's `PluginConfig.failure_policy`.
    pub fn envoy(self) -> &'static str {
        match self {
            FailStrategy::Close => "FAIL_CLOSED",
            FailStrategy::Open => "FAIL_OPEN",
            FailStrategy::Reload => "FAIL_RELOAD",
        }
    }
}

/// One filter: its member name, Envoy/Istio name, module and defaults.
#[derive(Debug)]
pub struct Filter {
    /// Member of the policy file (`pii_redact`).
    pub member: &'static str,
    /// Filter name in Envoy (`pii-redact`): filter, root and VM id, image name.
    pub name: &'static str,
    /// Module file built by `make wasm`.
    pub module: &'static str,
    pub listener: Listener,
    /// VM environment keys (secrets) the filter reads with its default settings.
    pub env: &'static [&'static str],
    /// Default `fail_strategy` (FAIL_RELOAD for every filter).
    pub fail: FailStrategy,
    /// What it does, for the comments of rendered manifests.
    pub role: &'static str,
}

/// Every filter, in DESIGN.md order (the LLM chain top-down, then rag-acl).
pub const FILTERS: [Filter; 6] = [
    Filter {
        member: "llm_telemetry",
        name: "llm-telemetry",
        module: "llm_telemetry.wasm",
        listener: Listener::Llm,
        env: &["GUARD_AUDIT_KEY"],
        fail: FailStrategy::Reload,
        role: "usage, latency, audit context",
    },
    Filter {
        member: "schema_guard",
        name: "schema-guard",
        module: "schema_guard.wasm",
        listener: Listener::Llm,
        env: &["GUARD_AUDIT_KEY"],
        fail: FailStrategy::Reload,
        role: "request validation; structured output and tool-call arguments in answers",
    },
    Filter {
        member: "approval_gate",
        name: "approval-gate",
        module: "approval_gate.wasm",
        listener: Listener::Llm,
        env: &["GUARD_AUDIT_KEY", "GUARD_APPROVAL_CLIENT_TOKEN"],
        fail: FailStrategy::Reload,
        role: "MCP tools/call and tool calls in answers held for a person's approval",
    },
    Filter {
        member: "pii_redact",
        name: "pii-redact",
        module: "pii_redact.wasm",
        listener: Listener::Llm,
        env: &["GUARD_PII_HMAC_KEY", "GUARD_AUDIT_KEY"],
        fail: FailStrategy::Reload,
        role: "PII redacted / pseudonymised in requests, restored and redacted in answers",
    },
    Filter {
        member: "prompt_guard",
        name: "prompt-guard",
        module: "prompt_guard.wasm",
        listener: Listener::Llm,
        env: &["GUARD_AUDIT_KEY"],
        fail: FailStrategy::Reload,
        role: "injection, jailbreak and topics in requests; exfiltration in answers",
    },
    Filter {
        member: "rag_acl",
        name: "rag-acl",
        module: "rag_acl.wasm",
        listener: Listener::VectorDb,
        env: &["GUARD_AUDIT_KEY"],
        fail: FailStrategy::Reload,
        role: "retrievals from the vector database limited to what the caller may see",
    },
];

/// The member that is not a filter.
pub const DEPLOYMENT: &str = "deployment";

pub fn filter(member: &str) -> Option<&'static Filter> {
    FILTERS.iter().find(|f| f.member == member)
}

/// `(name, version, policy names)` of a valid filter configuration.
pub type Summary = (String, String, Vec<String>);

fn summary<C>(c: &FilterConfig<C>) -> Summary {
    (
        c.name.clone(),
        c.version.clone(),
        c.policy_names().map(str::to_string).collect(),
    )
}

/// Validate one filter configuration with the code of that filter's `on_configure`.
pub fn parse_member(member: &str, bytes: &[u8]) -> Result<Summary, String> {
    let r = match member {
        "prompt_guard" => prompt_guard::engine::parse_config(bytes).map(|c| summary(&c)),
        "pii_redact" => pii_redact::engine::parse_config(bytes).map(|c| summary(&c)),
        "schema_guard" => schema_guard::filter::parse_config(bytes).map(|c| summary(&c)),
        "rag_acl" => FilterConfig::parse::<<RagAcl as GuardFilter>::Settings, _>(
            bytes,
            RagAcl::DEFAULT_FAILURE,
            RagAcl::compile,
        )
        .map(|c| summary(&c)),
        "approval_gate" => FilterConfig::parse::<<ApprovalGate as GuardFilter>::Settings, _>(
            bytes,
            ApprovalGate::DEFAULT_FAILURE,
            ApprovalGate::compile,
        )
        .map(|c| summary(&c)),
        "llm_telemetry" => FilterConfig::parse::<<Telemetry as GuardFilter>::Settings, _>(
            bytes,
            FailurePolicy::FailOpen,
            Telemetry::compile,
        )
        .map(|c| summary(&c)),
        other => return Err(format!("no filter named {other:?}")),
    };
    r.map_err(|e| e.to_string())
}

/// The order in which a single-filter file is tried against the parsers (the first that accepts
/// it names the filter; llm-telemetry's settings are the most permissive, so it comes last).
pub const RECOGNITION_ORDER: [&str; 6] = [
    "prompt_guard",
    "pii_redact",
    "schema_guard",
    "rag_acl",
    "approval_gate",
    "llm_telemetry",
];

/// Whether a parsed file is a whole policy file (rather than one filter's configuration): an
/// object with a filter member or `deployment` at the top. No filter configuration has such a
/// top-level field.
pub fn is_policy_file(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        o.keys()
            .any(|k| k == DEPLOYMENT || FILTERS.iter().any(|f| f.member == k))
    })
}

/// Parse a file as JSON, else as YAML (YAML's flow style is JSON's superset, but JSON first
/// keeps JSON's own error messages and number forms).
pub fn parse_text(text: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Ok(v),
        Err(json_err) => serde_yaml::from_str::<Value>(text)
            .map_err(|yaml_err| format!("neither JSON ({json_err}) nor YAML ({yaml_err})")),
    }
}

/// A validated policy file.
#[derive(Debug)]
pub struct PolicyFile {
    /// Present filter members in DESIGN.md order, with their summaries.
    pub members: Vec<Member>,
    pub deployment: Deployment,
    /// Whether the file had a `deployment` member (else the defaults below).
    pub has_deployment: bool,
}

#[derive(Debug)]
pub struct Member {
    pub filter: &'static Filter,
    pub config: Value,
    pub summary: Summary,
}

/// The bytes of a member as the envoy target renders it (pretty JSON, trailing newline): the
/// filter's policy version is the hash of these bytes.
pub fn member_bytes(config: &Value) -> Vec<u8> {
    let mut s = serde_json::to_string_pretty(config).unwrap_or_default();
    s.push('\n');
    s.into_bytes()
}

/// Validate a parsed policy file: every member with its filter's parser, the deployment
/// settings, and that every call-out cluster a member names is declared in
/// `deployment.clusters` (when there is a `deployment`). Returns every error, each naming its
/// JSON path.
pub fn validate(root: &Value) -> Result<PolicyFile, Vec<String>> {
    let mut errors = Vec::new();
    let Some(obj) = root.as_object() else {
        return Err(vec!["/: a policy file must be an object".to_string()]);
    };
    for key in obj.keys() {
        if key != DEPLOYMENT && filter(key).is_none() {
            errors.push(format!(
                "/{}: unknown member (expected one of {}, {DEPLOYMENT})",
                escape(key),
                FILTERS
                    .iter()
                    .map(|f| f.member)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let mut members = Vec::new();
    for f in &FILTERS {
        let Some(config) = obj.get(f.member) else {
            continue;
        };
        if !config.is_object() {
            errors.push(format!(
                "/{}: must be an object (the filter's plugin configuration)",
                f.member
            ));
            continue;
        }
        match parse_member(f.member, &member_bytes(config)) {
            Ok(summary) => members.push(Member {
                filter: f,
                config: config.clone(),
                summary,
            }),
            Err(e) => errors.push(prefixed(f.member, &e)),
        }
    }
    let has_deployment = obj.contains_key(DEPLOYMENT);
    // Cluster references are checked against a deployment that parsed (else its own errors say
    // what is wrong, not every reference).
    let mut deployment_ok = false;
    let deployment = match obj.get(DEPLOYMENT) {
        None | Some(Value::Null) => Deployment::defaults(),
        Some(v) => match Deployment::parse(v.clone()) {
            Ok(d) => {
                deployment_ok = true;
                d
            }
            Err(e) => {
                errors.extend(e);
                Deployment::defaults()
            }
        },
    };
    let file = PolicyFile {
        members,
        deployment,
        has_deployment,
    };
    if deployment_ok {
        for (pointer, cluster) in file.cluster_refs() {
            if !file.deployment.clusters.contains_key(&cluster) {
                errors.push(format!(
                    "{pointer}: cluster {cluster:?} is not declared in /{DEPLOYMENT}/clusters"
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(file)
    } else {
        Err(errors)
    }
}

/// A filter error (`/policies/...: message`, or a message without a path) under its member.
fn prefixed(member: &str, e: &str) -> String {
    if e.starts_with('/') {
        // "/: whole config" stays "/member: ..."
        match e.strip_prefix("/:") {
            Some(rest) => format!("/{member}:{rest}"),
            None => format!("/{member}{e}"),
        }
    } else {
        format!("/{member}: {e}")
    }
}

/// JSON Pointer escaping of one key.
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Where a member names an Envoy cluster it calls out to: `(filter member, field under each
/// policy)`, `*` for every member, the field a `/`-separated path. The field is an object with
/// `cluster` (and optionally `authority`).
pub const CALLOUTS: [(&str, &str); 4] = [
    ("approval_gate", "service"),
    ("prompt_guard", "second_opinion"),
    ("rag_acl", "lookup"),
    // The review queue of a fallback escalation (docs/fallback.md), in any filter's policy.
    ("*", "fallback/escalate"),
];

/// The call-out object at `field` (a `/`-separated path) of a policy.
fn callout<'a>(policy: &'a Value, field: &str) -> Option<&'a Value> {
    field.split('/').try_fold(policy, |v, k| v.get(k))
}

fn callout_mut<'a>(policy: &'a mut Value, field: &str) -> Option<&'a mut Value> {
    field.split('/').try_fold(policy, |v, k| v.get_mut(k))
}

impl PolicyFile {
    /// Every call-out cluster the members name: `(JSON pointer of the field, cluster)`.
    pub fn cluster_refs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for m in &self.members {
            for (pointer, cluster) in member_cluster_refs(m.filter.member, &m.config) {
                out.push((format!("/{}{pointer}", m.filter.member), cluster));
            }
        }
        out
    }
}

/// The call-out clusters of one member: `(pointer inside the member, cluster)`.
pub fn member_cluster_refs(member: &str, config: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (m, field) in CALLOUTS {
        if m != member && m != "*" {
            continue;
        }
        let Some(policies) = config.get("policies").and_then(Value::as_object) else {
            continue;
        };
        for (name, policy) in policies {
            if let Some(c) = callout(policy, field)
                .and_then(|f| f.get("cluster"))
                .and_then(Value::as_str)
            {
                out.push((
                    format!("/policies/{}/{field}/cluster", escape(name)),
                    c.to_string(),
                ));
            }
        }
    }
    out
}

// ------------------------------------------------------------------ deployment

/// What `guardctl render` needs besides the filter configurations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// Namespace of the rendered Istio resources (each workload may override it).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub images: Images,
    #[serde(default)]
    pub envoy: EnvoyOpts,
    /// The LLM gateway workload (every filter but rag-acl).
    #[serde(default = "Workload::gateway")]
    pub gateway: Workload,
    /// The vector-database workload (rag-acl).
    #[serde(default = "Workload::vector_db")]
    pub vector_db: Workload,
    /// Per-filter settings, keyed by member name.
    #[serde(default)]
    pub filters: BTreeMap<String, FilterOpts>,
    /// The clusters the filters call out to, keyed by the name the members use.
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterDef>,
}

fn default_namespace() -> String {
    "llm-guard".to_string()
}

/// Where the OCI images are: `oci://<registry>/<prefix>/<filter>:<tag>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Images {
    /// `host[:port][/path]`; `make oci` pushes to `127.0.0.1:5000` by default.
    pub registry: String,
    pub prefix: String,
    /// Default: the workspace version (what `make oci` tags).
    pub tag: Option<String>,
    pub pull_policy: PullPolicy,
    /// Name of a Kubernetes docker-registry Secret in the WasmPlugin's namespace.
    pub pull_secret: Option<String>,
}

impl Default for Images {
    fn default() -> Self {
        Images {
            registry: "127.0.0.1:5000".to_string(),
            prefix: "llm-guard".to_string(),
            tag: None,
            pull_policy: PullPolicy::IfNotPresent,
            pull_secret: None,
        }
    }
}

impl Images {
    pub fn tag(&self) -> &str {
        self.tag.as_deref().unwrap_or(env!("CARGO_PKG_VERSION"))
    }
    pub fn url(&self, filter: &Filter) -> String {
        format!(
            "oci://{}/{}/{}:{}",
            self.registry.trim_end_matches('/'),
            self.prefix.trim_matches('/'),
            filter.name,
            self.tag()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PullPolicy {
    IfNotPresent,
    Always,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Always => "Always",
        }
    }
}

/// The standalone Envoy target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvoyOpts {
    /// Directory of the built modules (`code.local.filename`), as Envoy sees it.
    pub wasm_dir: String,
}

impl Default for EnvoyOpts {
    fn default() -> Self {
        EnvoyOpts {
            wasm_dir: "target/wasm32-wasip1/release".to_string(),
        }
    }
}

/// A workload the filters run in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Default: the deployment's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Pod labels (`WasmPlugin.selector.matchLabels`, `EnvoyFilter.workloadSelector.labels`).
    pub selector: BTreeMap<String, String>,
    /// Ports whose traffic the filters see (`WasmPlugin.match[].ports`, the EnvoyFilter's
    /// `listener.portNumber`); empty: every port.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// `WasmPlugin.match[].mode`: SERVER (inbound to a sidecar), CLIENT (gateways, outbound).
    #[serde(default = "default_mode")]
    pub mode: String,
    /// The EnvoyFilter's `match.context`.
    #[serde(default = "default_context")]
    pub context: String,
}

fn default_mode() -> String {
    "SERVER".to_string()
}

fn default_context() -> String {
    "SIDECAR_INBOUND".to_string()
}

impl Workload {
    fn gateway() -> Workload {
        Workload {
            namespace: None,
            selector: BTreeMap::from([("app".to_string(), "llm-gateway".to_string())]),
            ports: vec![10000],
            mode: default_mode(),
            context: default_context(),
        }
    }
    fn vector_db() -> Workload {
        Workload {
            namespace: None,
            selector: BTreeMap::from([("app".to_string(), "chroma".to_string())]),
            ports: vec![8000],
            mode: default_mode(),
            context: default_context(),
        }
    }
    pub fn namespace<'a>(&'a self, d: &'a Deployment) -> &'a str {
        self.namespace.as_deref().unwrap_or(&d.namespace)
    }
}

/// Per-filter deployment settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterOpts {
    /// Default: FAIL_RELOAD for every filter.
    pub fail_strategy: Option<FailStrategy>,
    /// VM environment keys handed from the proxy's environment (secrets). Default: the keys
    /// the filter reads with its default settings; `GUARD_CAPTURE_KEY` is added when a policy
    /// captures, and a renamed key (`hash_key_env`, `client_token_env`) is added too.
    pub env: Option<Vec<String>>,
}

/// A cluster the filters call out to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterDef {
    /// For the envoy target: the cluster entry to render.
    #[serde(default)]
    pub envoy: Option<EnvoyCluster>,
    /// For Istio: the cluster Istio generates for the service, `outbound|PORT||HOST`.
    #[serde(default)]
    pub istio: Option<String>,
    /// `:authority` of the call-outs under Istio (default: HOST of the `istio` name).
    #[serde(default)]
    pub authority: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvoyCluster {
    pub address: String,
    pub port: u16,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    /// TLS to the service (SNI = address).
    #[serde(default)]
    pub tls: bool,
}

fn default_connect_timeout() -> String {
    "1s".to_string()
}

impl ClusterDef {
    /// The `:authority` under Istio: the configured one, else the host of `outbound|P||HOST`.
    pub fn istio_authority(&self) -> Option<String> {
        if let Some(a) = &self.authority {
            return Some(a.clone());
        }
        let name = self.istio.as_deref()?;
        let host = name.rsplit('|').next()?;
        (!host.is_empty()).then(|| host.to_string())
    }
}

impl Deployment {
    pub fn defaults() -> Deployment {
        // An empty object takes every default.
        Deployment {
            namespace: default_namespace(),
            images: Images::default(),
            envoy: EnvoyOpts::default(),
            gateway: Workload::gateway(),
            vector_db: Workload::vector_db(),
            filters: BTreeMap::new(),
            clusters: BTreeMap::new(),
        }
    }

    /// Deserialize and check the `deployment` member; errors name `/deployment/...`.
    pub fn parse(v: Value) -> Result<Deployment, Vec<String>> {
        let base = format!("/{DEPLOYMENT}");
        let d: Deployment = from_value_at(v, &base).map_err(|e| vec![e.to_string()])?;
        let mut errors = Vec::new();
        let check_name = |errors: &mut Vec<String>, path: String, value: &str, max: usize| {
            if !is_dns_label_like(value, max) {
                errors.push(format!(
                    "{path}: {value:?} is not a valid Kubernetes name (lower-case letters, digits, '-', at most {max})"
                ));
            }
        };
        check_name(&mut errors, format!("{base}/namespace"), &d.namespace, 63);
        for (key, w) in [("gateway", &d.gateway), ("vector_db", &d.vector_db)] {
            if let Some(ns) = &w.namespace {
                check_name(&mut errors, format!("{base}/{key}/namespace"), ns, 63);
            }
        }
        for (key, w) in [("gateway", &d.gateway), ("vector_db", &d.vector_db)] {
            if w.selector.is_empty() {
                errors.push(format!(
                    "{base}/{key}/selector: empty (it would select every workload in the namespace)"
                ));
            }
            for (k, v) in &w.selector {
                if k.is_empty() || k.contains('*') || v.contains('*') || v.len() > 63 {
                    errors.push(format!(
                        "{base}/{key}/selector/{}: not a label match (no wildcards, values up to 63 characters)",
                        escape(k)
                    ));
                }
            }
            for (i, p) in w.ports.iter().enumerate() {
                if *p == 0 {
                    errors.push(format!("{base}/{key}/ports/{i}: port 0"));
                }
            }
            if !["SERVER", "CLIENT", "CLIENT_AND_SERVER"].contains(&w.mode.as_str()) {
                errors.push(format!(
                    "{base}/{key}/mode: {:?} is not SERVER, CLIENT or CLIENT_AND_SERVER",
                    w.mode
                ));
            }
            if !["SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY", "ANY"]
                .contains(&w.context.as_str())
            {
                errors.push(format!(
                    "{base}/{key}/context: {:?} is not SIDECAR_INBOUND, SIDECAR_OUTBOUND, GATEWAY or ANY",
                    w.context
                ));
            }
        }
        if d.images.registry.trim_matches('/').is_empty() || d.images.registry.contains("://") {
            errors.push(format!(
                "{base}/images/registry: {:?} is not host[:port][/path] (no scheme)",
                d.images.registry
            ));
        }
        let tag = d.images.tag();
        if tag.is_empty()
            || tag.len() > 128
            || !tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            errors.push(format!("{base}/images/tag: {tag:?} is not an image tag"));
        }
        if let Some(s) = &d.images.pull_secret {
            check_name(&mut errors, format!("{base}/images/pull_secret"), s, 253);
        }
        for (key, opts) in &d.filters {
            if filter(key).is_none() {
                errors.push(format!(
                    "{base}/filters/{}: no such filter (expected one of {})",
                    escape(key),
                    FILTERS
                        .iter()
                        .map(|f| f.member)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if let Some(env) = &opts.env {
                for (i, e) in env.iter().enumerate() {
                    if !is_env_name(e) {
                        errors.push(format!(
                            "{base}/filters/{}/env/{i}: {e:?} is not an environment variable name",
                            escape(key)
                        ));
                    }
                }
            }
        }
        for (name, c) in &d.clusters {
            let at = format!("{base}/clusters/{}", escape(name));
            if c.envoy.is_none() && c.istio.is_none() {
                errors.push(format!("{at}: needs `envoy` or `istio` (or both)"));
            }
            if let Some(e) = &c.envoy {
                if e.address.is_empty() || e.port == 0 {
                    errors.push(format!("{at}/envoy: needs an address and a port"));
                }
                if !is_duration(&e.connect_timeout) {
                    errors.push(format!(
                        "{at}/envoy/connect_timeout: {:?} is not a duration like 1s or 0.5s",
                        e.connect_timeout
                    ));
                }
            }
            if let Some(i) = &c.istio {
                if !is_outbound_cluster(i) {
                    errors.push(format!(
                        "{at}/istio: {i:?} is not an Istio cluster name outbound|PORT|SUBSET|HOST"
                    ));
                }
            }
        }
        if errors.is_empty() {
            Ok(d)
        } else {
            Err(errors)
        }
    }

    pub fn opts(&self, f: &Filter) -> FilterOpts {
        self.filters.get(f.member).cloned().unwrap_or_default()
    }

    pub fn fail_strategy(&self, f: &Filter) -> FailStrategy {
        self.opts(f).fail_strategy.unwrap_or(f.fail)
    }

    pub fn workload(&self, f: &Filter) -> &Workload {
        match f.listener {
            Listener::Llm => &self.gateway,
            Listener::VectorDb => &self.vector_db,
        }
    }
}

/// The VM environment keys (secrets) a filter gets: the deployment's list or the filter's
/// defaults, plus `GUARD_CAPTURE_KEY` when a policy captures bodies and any key a policy renamed
/// (`hash_key_env` of pii-redact, `service.client_token_env` of approval-gate).
pub fn env_keys(d: &Deployment, f: &Filter, config: &Value) -> Vec<String> {
    let mut keys: Vec<String> = match d.opts(f).env {
        Some(e) => e,
        None => f.env.iter().map(|s| s.to_string()).collect(),
    };
    let mut add = |k: &str| {
        if !k.is_empty() && !keys.iter().any(|x| x == k) {
            keys.push(k.to_string());
        }
    };
    if let Some(policies) = config.get("policies").and_then(Value::as_object) {
        for p in policies.values() {
            if p.get("capture").and_then(Value::as_bool) == Some(true) {
                add("GUARD_CAPTURE_KEY");
            }
            if f.member == "pii_redact" {
                if let Some(k) = p.get("hash_key_env").and_then(Value::as_str) {
                    add(k);
                }
            }
            if f.member == "approval_gate" {
                if let Some(k) = p
                    .get("service")
                    .and_then(|s| s.get("client_token_env"))
                    .and_then(Value::as_str)
                {
                    add(k);
                }
            }
        }
    }
    keys
}

/// A member with its call-out clusters renamed for Istio (`outbound|PORT||HOST`) and their
/// `:authority` set to the service host when the member does not set one.
pub fn istio_member(d: &Deployment, member: &Member) -> Value {
    let mut config = member.config.clone();
    for (m, field) in CALLOUTS {
        if m != member.filter.member && m != "*" {
            continue;
        }
        let Some(policies) = config.get_mut("policies").and_then(Value::as_object_mut) else {
            continue;
        };
        for policy in policies.values_mut() {
            let Some(call) = callout_mut(policy, field).and_then(Value::as_object_mut) else {
                continue;
            };
            let Some(def) = call
                .get("cluster")
                .and_then(Value::as_str)
                .and_then(|c| d.clusters.get(c))
            else {
                continue;
            };
            let Some(istio) = &def.istio else { continue };
            if !call.contains_key("authority") {
                if let Some(a) = def.istio_authority() {
                    call.insert("authority".to_string(), json!(a));
                }
            }
            call.insert("cluster".to_string(), json!(istio));
        }
    }
    config
}

fn is_dns_label_like(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_duration(s: &str) -> bool {
    s.strip_suffix('s')
        .is_some_and(|n| !n.is_empty() && n.parse::<f64>().is_ok_and(|v| v.is_finite() && v >= 0.0))
}

/// `outbound|PORT|SUBSET|HOST` (SUBSET may be empty).
fn is_outbound_cluster(s: &str) -> bool {
    let parts: Vec<&str> = s.split('|').collect();
    matches!(parts.as_slice(), [dir, port, _, host]
        if (*dir == "outbound" || *dir == "inbound")
            && port.parse::<u16>().is_ok_and(|p| p > 0)
            && !host.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_the_member_prefix() {
        assert_eq!(
            prefixed("pii_redact", "/policies/default/x: bad"),
            "/pii_redact/policies/default/x: bad"
        );
        assert_eq!(
            prefixed("pii_redact", "/: not json"),
            "/pii_redact: not json"
        );
        assert_eq!(prefixed("pii_redact", "odd"), "/pii_redact: odd");
    }

    #[test]
    fn outbound_cluster_names() {
        for (s, ok) in [
            ("outbound|8080||approvals.ns.svc.cluster.local", true),
            ("outbound|8080|v1|approvals", true),
            ("outbound|0||a", false),
            ("outbound|x||a", false),
            ("approvals", false),
            ("outbound|8080||", false),
        ] {
            assert_eq!(is_outbound_cluster(s), ok, "{s}");
        }
    }

    #[test]
    fn istio_authority_defaults_to_the_host() {
        let c = ClusterDef {
            envoy: None,
            istio: Some("outbound|8080||svc.ns.svc.cluster.local".into()),
            authority: None,
        };
        assert_eq!(
            c.istio_authority().as_deref(),
            Some("svc.ns.svc.cluster.local")
        );
    }

    #[test]
    fn env_keys_follow_the_member() {
        let d = Deployment::defaults();
        let pii = filter("pii_redact").unwrap();
        let cfg = json!({"policies": {"default": {"capture": true, "hash_key_env": "MY_KEY"}}});
        assert_eq!(
            env_keys(&d, pii, &cfg),
            [
                "GUARD_PII_HMAC_KEY",
                "GUARD_AUDIT_KEY",
                "GUARD_CAPTURE_KEY",
                "MY_KEY"
            ]
        );
    }

    #[test]
    fn fallback_escalation_clusters_are_call_outs_of_every_member() {
        let config = json!({"policies": {
            "default": {"fallback": {"on_flagged_answer": "escalate", "escalate": {"cluster": "approvals"}}},
            "other": {}
        }});
        for member in ["llm_telemetry", "schema_guard", "rag_acl"] {
            assert_eq!(
                member_cluster_refs(member, &config),
                vec![(
                    "/policies/default/fallback/escalate/cluster".to_string(),
                    "approvals".to_string()
                )],
                "{member}"
            );
        }
    }
}
