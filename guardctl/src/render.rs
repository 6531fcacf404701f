//! `guardctl render POLICY --target envoy|istio|istio-wasmplugin`: the deployment manifests of
//! a policy file (docs/policy.md).
//!
//! - `envoy`: two YAML documents, the LLM listener's `http_filters` (llm-telemetry,
//!   schema-guard, approval-gate, pii-redact, prompt-guard, router) with the clusters they call
//!   out to, and the vector-database listener's (rag-acl, router) with its clusters; entries
//!   exactly like `envoy/envoy.yaml` / `envoy/rag-acl.yaml`, each with the filter's
//!   `fail_strategy` as the plugin's `failure_policy`.
//! - `istio` (alias `istio-envoyfilter`): `EnvoyFilter`s (`networking.istio.io/v1alpha3`) that
//!   add the modules through ECDS with `allow_on_headers_stop_iteration: true`, which a
//!   `WasmPlugin` cannot set and every filter here needs: the manifests that work today.
//! - `istio-wasmplugin`: one `WasmPlugin` per filter (`extensions.istio.io/v1alpha1`), for when
//!   Istio exposes that field.
//!
//! The output is a function of the policy file and the digests only (no timestamps), so the
//! rendered defaults committed in `envoy/istio/` are checked against it by a test.

use crate::policy::{
    env_keys, istio_member, member_bytes, Deployment, Filter, Listener, Member, PolicyFile,
    DEPLOYMENT,
};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
/// A module the agent cannot fetch is replaced by an allow-all (`FAIL_OPEN`) or deny-all (any
/// other failure policy, `FAIL_RELOAD` included) RBAC filter config, so the filter must accept
/// that type too, as Istio's own WasmPlugin filters do.
const RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
const STRING_VALUE: &str = "type.googleapis.com/google.protobuf.StringValue";
const ROUTER: &str = "envoy.filters.http.router";
const ROUTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const HCM: &str = "envoy.filters.network.http_connection_manager";
const V8: &str = "envoy.wasm.runtime.v8";
const PART_OF: &str = "llm-guard";

/// What to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Envoy,
    Istio,
    IstioEnvoyFilter,
}

impl Target {
    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "envoy" => Some(Target::Envoy),
            // `istio` is the path that works today (EnvoyFilter); `istio-envoyfilter` stays an
            // alias of it.
            "istio" | "istio-envoyfilter" => Some(Target::IstioEnvoyFilter),
            "istio-wasmplugin" => Some(Target::Istio),
            _ => None,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Target::Envoy => "envoy",
            Target::Istio => "istio-wasmplugin",
            Target::IstioEnvoyFilter => "istio",
        }
    }
}

/// Image digests by filter name (`pii-redact` → 64 hex digits), from `make oci`'s
/// `target/oci/digests.json`.
#[derive(Debug, Default)]
pub struct Digests(BTreeMap<String, String>);

impl Digests {
    /// Read `{"<filter>": {"image": "oci://…:<tag>", "digest": "sha256:<hex>", …}}`. Returns
    /// the digests and warnings (an image whose tag is not the deployment's).
    pub fn load(path: &Path, tag: &str) -> Result<(Digests, Vec<String>)> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| anyhow!("{}: not an object of images", path.display()))?;
        let mut out = BTreeMap::new();
        let mut warnings = Vec::new();
        for (name, entry) in obj {
            let digest = entry
                .get("digest")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("{}: /{name}/digest missing", path.display()))?;
            let hex = digest
                .strip_prefix("sha256:")
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| {
                    anyhow!(
                        "{}: /{name}/digest {digest:?} is not sha256:<64 hex digits>",
                        path.display()
                    )
                })?;
            if let Some(image) = entry.get("image").and_then(Value::as_str) {
                let image_tag = image.rsplit('/').next().and_then(|t| t.rsplit_once(':'));
                if let Some((_, t)) = image_tag {
                    if t != tag {
                        warnings.push(format!(
                            "{}: {name} is {image}, not tag {tag}: its digest will not match the rendered url",
                            path.display()
                        ));
                    }
                }
            }
            out.insert(name.clone(), hex.to_ascii_lowercase());
        }
        Ok((Digests(out), warnings))
    }

    fn get(&self, f: &Filter) -> Option<&str> {
        self.0.get(f.name).map(String::as_str)
    }
}

/// Render a validated policy file. `source` is the policy file's path as given (named in the
/// header comment).
pub fn render(
    policy: &PolicyFile,
    target: Target,
    digests: &Digests,
    source: &str,
) -> Result<String> {
    if policy.members.is_empty() {
        bail!("{source}: no filter member to render");
    }
    let docs = match target {
        Target::Envoy => envoy(policy)?,
        Target::Istio => wasm_plugins(policy, digests)?,
        Target::IstioEnvoyFilter => envoy_filters(policy, digests)?,
    };
    let mut out = header(target, source, policy.has_deployment);
    for (comment, doc) in docs {
        out.push_str("---\n");
        for line in comment.lines() {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&serde_yaml::to_string(&doc).context("writing YAML")?);
    }
    Ok(out)
}

fn header(target: Target, source: &str, has_deployment: bool) -> String {
    let mut h = format!(
        "# Rendered from {source} by `guardctl render {source} --target {}`.\n\
         # Do not edit: edit the policy file and render again (docs/policy.md).\n",
        target.as_str()
    );
    if !has_deployment {
        h.push_str(&format!(
            "# {source} has no `{DEPLOYMENT}` member: every deployment setting is a default.\n"
        ));
    }
    match target {
        Target::Envoy => h.push_str(
            "#\n\
             # Two documents: the LLM listener's `http_filters` (DESIGN.md order, then the router) and\n\
             # the clusters its filters call out to; the vector-database listener's (rag-acl, after\n\
             # jwt_authn in your chain) and its clusters. Paste them into your listeners.\n",
        ),
        Target::Istio => h.push_str(
            "#\n\
             # One WasmPlugin per filter. WARNING: WasmPlugin cannot set Envoy's\n\
             # `allow_on_headers_stop_iteration`, and every filter here needs it (each holds the\n\
             # request headers until the body is judged; without the flag Envoy never delivers the\n\
             # body and the request hangs). An EnvoyFilter cannot add it to a WasmPlugin's extension\n\
             # config either (istiod applies only ADD to EXTENSION_CONFIG). Until Istio exposes the\n\
             # field, deploy envoyfilter.yaml (`--target istio`) instead. Never apply\n\
             # both: the filters would run twice.\n\
             #\n\
             # sha256: the image (manifest) digest `make oci` wrote to target/oci/digests.json;\n\
             # empty: not pinned (rendered without digests).\n",
        ),
        Target::IstioEnvoyFilter => h.push_str(
            "#\n\
             # EnvoyFilters that add the filters through ECDS: an EXTENSION_CONFIG (the Wasm config,\n\
             # with `allow_on_headers_stop_iteration: true`, which a WasmPlugin cannot set) and an\n\
             # HTTP_FILTER inserted before the router that names it, per filter, in DESIGN.md order.\n\
             # Istio's agent pulls `oci://` modules of ECDS configs itself and checks `sha256` (the\n\
             # image digest), as it does for WasmPlugins. Apply these or wasmplugins.yaml, not both.\n\
             #\n\
             # sha256: the image (manifest) digest `make oci` wrote to target/oci/digests.json;\n\
             # absent: not pinned (rendered without digests).\n",
        ),
    }
    h
}

/// Members of one listener, in order.
fn members_of(policy: &PolicyFile, listener: Listener) -> Vec<&Member> {
    policy
        .members
        .iter()
        .filter(|m| m.filter.listener == listener)
        .collect()
}

/// The filter's configuration as the module receives it (pretty JSON).
fn configuration_string(config: &Value) -> String {
    String::from_utf8_lossy(&member_bytes(config)).into_owned()
}

/// `outbound|…` names and authorities of a member's call-outs must be declared for Istio.
fn check_clusters(policy: &PolicyFile, target: Target) -> Result<()> {
    let d = &policy.deployment;
    let mut errors = Vec::new();
    for (pointer, cluster) in policy.cluster_refs() {
        match d.clusters.get(&cluster) {
            None => errors.push(format!(
                "{pointer}: cluster {cluster:?} is not declared in /{DEPLOYMENT}/clusters"
            )),
            Some(c) if target == Target::Envoy && c.envoy.is_none() => errors.push(format!(
                "/{DEPLOYMENT}/clusters/{cluster}: no `envoy` entry (needed by {pointer})"
            )),
            Some(c) if target != Target::Envoy && c.istio.is_none() => errors.push(format!(
                "/{DEPLOYMENT}/clusters/{cluster}: no `istio` name outbound|PORT||HOST (needed by {pointer})"
            )),
            Some(_) => {}
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{}", errors.join("\n"))
    }
}

// ---------------------------------------------------------------------------------- envoy

fn envoy(policy: &PolicyFile) -> Result<Vec<(String, Value)>> {
    check_clusters(policy, Target::Envoy)?;
    let d = &policy.deployment;
    let mut docs = Vec::new();
    for (listener, comment) in [
        (
            Listener::Llm,
            "The LLM listener (envoy/envoy.yaml): http_filters in DESIGN.md order, then the router.",
        ),
        (
            Listener::VectorDb,
            "The vector-database listener (envoy/rag-acl.yaml): rag-acl after header_mutation and\njwt_authn, then the router.",
        ),
    ] {
        let members = members_of(policy, listener);
        if members.is_empty() {
            continue;
        }
        let mut filters: Vec<Value> = members.iter().map(|m| envoy_wasm_filter(d, m)).collect();
        filters.push(json!({"name": ROUTER, "typed_config": {"@type": ROUTER_TYPE}}));
        let mut clusters = Vec::new();
        let mut seen = Vec::new();
        for m in &members {
            for (_, c) in crate::policy::member_cluster_refs(m.filter.member, &m.config) {
                if seen.contains(&c) {
                    continue;
                }
                if let Some(def) = d.clusters.get(&c).and_then(|def| def.envoy.as_ref()) {
                    clusters.push(envoy_cluster(&c, def));
                }
                seen.push(c);
            }
        }
        let mut doc = Map::new();
        doc.insert("http_filters".into(), Value::Array(filters));
        if !clusters.is_empty() {
            doc.insert("clusters".into(), Value::Array(clusters));
        }
        docs.push((comment.to_string(), Value::Object(doc)));
    }
    Ok(docs)
}

fn envoy_wasm_filter(d: &Deployment, m: &Member) -> Value {
    let f = m.filter;
    let vm = vm_config(
        d,
        m,
        json!({"local": {"filename": format!("{}/{}", d.envoy.wasm_dir.trim_end_matches('/'), f.module)}}),
    );
    json!({
        "name": f.name,
        "typed_config": {
            "@type": WASM_TYPE,
            "config": {
                "name": f.name,
                "root_id": f.name,
                "allow_on_headers_stop_iteration": true,
                "failure_policy": d.fail_strategy(f).envoy(),
                "vm_config": Value::Object(vm),
                "configuration": {
                    "@type": STRING_VALUE,
                    "value": configuration_string(&m.config),
                },
            },
        },
    })
}

/// A filter's `vm_config`: its VM id, V8, the secrets it reads from the host's environment, and
/// where its module comes from (`code`).
fn vm_config(d: &Deployment, m: &Member, code: Value) -> Map<String, Value> {
    let f = m.filter;
    let mut vm = Map::new();
    vm.insert("vm_id".into(), json!(f.name));
    vm.insert("runtime".into(), json!(V8));
    let keys = env_keys(d, f, &m.config);
    if !keys.is_empty() {
        vm.insert(
            "environment_variables".into(),
            json!({ "host_env_keys": keys }),
        );
    }
    vm.insert("code".into(), code);
    vm
}

fn envoy_cluster(name: &str, c: &crate::policy::EnvoyCluster) -> Value {
    let static_ip = c.address.parse::<std::net::IpAddr>().is_ok();
    let mut cluster = Map::new();
    cluster.insert("name".into(), json!(name));
    cluster.insert(
        "type".into(),
        json!(if static_ip { "STATIC" } else { "STRICT_DNS" }),
    );
    cluster.insert("connect_timeout".into(), json!(c.connect_timeout));
    cluster.insert(
        "load_assignment".into(),
        json!({
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": c.address, "port_value": c.port,
            }}}}]}],
        }),
    );
    if c.tls {
        cluster.insert(
            "transport_socket".into(),
            json!({
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": c.address,
                },
            }),
        );
    }
    Value::Object(cluster)
}

// ---------------------------------------------------------------------------------- istio

/// Priorities of the LLM chain: descending in DESIGN.md order (higher runs first in a phase).
fn priority(policy: &PolicyFile, m: &Member) -> i64 {
    let chain = members_of(policy, m.filter.listener);
    let n = chain.len();
    let i = chain
        .iter()
        .position(|x| x.filter.member == m.filter.member)
        .unwrap_or(0);
    ((n - i) * 100) as i64
}

fn labels() -> Value {
    json!({ "app.kubernetes.io/part-of": PART_OF })
}

fn match_labels(w: &crate::policy::Workload) -> Value {
    json!(w.selector)
}

fn wasm_plugins(policy: &PolicyFile, digests: &Digests) -> Result<Vec<(String, Value)>> {
    check_clusters(policy, Target::Istio)?;
    let d = &policy.deployment;
    let mut docs = Vec::new();
    for m in &policy.members {
        let f = m.filter;
        let w = d.workload(f);
        let mut spec = Map::new();
        spec.insert("selector".into(), json!({ "matchLabels": match_labels(w) }));
        spec.insert("url".into(), json!(d.images.url(f)));
        spec.insert("sha256".into(), json!(digests.get(f).unwrap_or("")));
        spec.insert(
            "imagePullPolicy".into(),
            json!(d.images.pull_policy.as_str()),
        );
        if let Some(s) = &d.images.pull_secret {
            spec.insert("imagePullSecret".into(), json!(s));
        }
        spec.insert("pluginName".into(), json!(f.name));
        spec.insert("type".into(), json!("HTTP"));
        // After Istio's authentication and authorization filters (STATS phase): a request RBAC or
        // ext_authz refuses never costs a scan nor creates an approval request.
        spec.insert("phase".into(), json!("STATS"));
        spec.insert("priority".into(), json!(priority(policy, m)));
        spec.insert("failStrategy".into(), json!(d.fail_strategy(f).istio()));
        let mut selector = Map::new();
        selector.insert("mode".into(), json!(w.mode));
        if !w.ports.is_empty() {
            selector.insert(
                "ports".into(),
                Value::Array(w.ports.iter().map(|p| json!({ "number": p })).collect()),
            );
        }
        spec.insert("match".into(), json!([Value::Object(selector)]));
        let keys = env_keys(d, f, &m.config);
        if !keys.is_empty() {
            spec.insert(
                "vmConfig".into(),
                json!({ "env": keys.iter().map(|k| json!({"name": k, "valueFrom": "HOST"})).collect::<Vec<_>>() }),
            );
        }
        spec.insert("pluginConfig".into(), istio_member(d, m));
        let doc = json!({
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": {
                "name": format!("{PART_OF}-{}", f.name),
                "namespace": w.namespace(d),
                "labels": labels(),
            },
            "spec": Value::Object(spec),
        });
        let comment = format!(
            "{}: {} ({}, priority {}).",
            f.name,
            f.role,
            d.fail_strategy(f).istio(),
            priority(policy, m)
        );
        docs.push((comment, doc));
    }
    Ok(docs)
}

/// The ECDS resource name of a filter: namespace-qualified, as Istio's EnvoyFilter reference
/// recommends for extension configs, so two namespaces never collide.
fn ecds_name(namespace: &str, f: &Filter) -> String {
    format!("{namespace}/{PART_OF}-{}", f.name)
}

fn envoy_filters(policy: &PolicyFile, digests: &Digests) -> Result<Vec<(String, Value)>> {
    check_clusters(policy, Target::IstioEnvoyFilter)?;
    let d = &policy.deployment;
    let mut docs = Vec::new();
    for (listener, name, what) in [
        (
            Listener::Llm,
            PART_OF.to_string(),
            "The LLM gateway: llm-telemetry, schema-guard, approval-gate, pii-redact, prompt-guard,\nin this order before the router.",
        ),
        (
            Listener::VectorDb,
            format!("{PART_OF}-rag-acl"),
            "The vector-database workload: rag-acl before the router (after Istio's jwt_authn).",
        ),
    ] {
        let members = members_of(policy, listener);
        let Some(first) = members.first() else {
            continue;
        };
        let w = d.workload(first.filter);
        let ns = w.namespace(d);
        let mut patches = Vec::new();
        for m in &members {
            patches.push(json!({
                "applyTo": "EXTENSION_CONFIG",
                "patch": {
                    "operation": "ADD",
                    "value": ecds_config(d, m, ns, digests),
                },
            }));
        }
        let ports: Vec<Option<u16>> = if w.ports.is_empty() {
            vec![None]
        } else {
            w.ports.iter().copied().map(Some).collect()
        };
        for port in ports {
            for m in &members {
                let mut listener_match = Map::new();
                if let Some(p) = port {
                    listener_match.insert("portNumber".into(), json!(p));
                }
                listener_match.insert(
                    "filterChain".into(),
                    json!({"filter": {"name": HCM, "subFilter": {"name": ROUTER}}}),
                );
                patches.push(json!({
                    "applyTo": "HTTP_FILTER",
                    "match": {
                        "context": w.context,
                        "listener": Value::Object(listener_match),
                    },
                    "patch": {
                        "operation": "INSERT_BEFORE",
                        "value": {
                            "name": ecds_name(ns, m.filter),
                            "config_discovery": {
                                "config_source": {
                                    "ads": {},
                                    "initial_fetch_timeout": "0s",
                                    "resource_api_version": "V3",
                                },
                                "type_urls": [WASM_TYPE, RBAC_TYPE],
                            },
                        },
                    },
                }));
            }
        }
        let doc = json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "EnvoyFilter",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": labels(),
            },
            "spec": {
                "workloadSelector": { "labels": match_labels(w) },
                "configPatches": patches,
            },
        });
        docs.push((what.to_string(), doc));
    }
    Ok(docs)
}

/// The TypedExtensionConfig of one filter: the Wasm config of envoy/envoy.yaml (the plugin's
/// fail strategy included) with the module fetched from the OCI image (by Istio's agent).
fn ecds_config(d: &Deployment, m: &Member, namespace: &str, digests: &Digests) -> Value {
    let f = m.filter;
    let mut remote = Map::new();
    remote.insert(
        "http_uri".into(),
        json!({
            "uri": d.images.url(f),
            // Never used by Envoy: Istio's agent fetches the module and rewrites the config to a
            // local file before Envoy sees it (as it does for a WasmPlugin, whose generated
            // config names this same placeholder cluster).
            "cluster": "_",
            "timeout": "30s",
        }),
    );
    if let Some(hex) = digests.get(f) {
        remote.insert("sha256".into(), json!(hex));
    }
    let vm = vm_config(d, m, json!({ "remote": Value::Object(remote) }));
    json!({
        "name": ecds_name(namespace, f),
        "typed_config": {
            "@type": WASM_TYPE,
            "config": {
                "name": f.name,
                "root_id": f.name,
                "allow_on_headers_stop_iteration": true,
                "failure_policy": d.fail_strategy(f).envoy(),
                "vm_config": Value::Object(vm),
                "configuration": {
                    "@type": STRING_VALUE,
                    "value": configuration_string(&istio_member(d, m)),
                },
            },
        },
    })
}
