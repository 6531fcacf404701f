//! The whole-policy file (`envoy/policy.yaml`) as a user runs guardctl on it: `lint` checks
//! every member with its filter's own parser, `render` prints the Envoy entries and the Istio
//! manifests. The shipped policy, the shipped Envoy configs and the committed manifests in
//! `envoy/istio/` are kept from drifting apart here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Run guardctl at the repository root: (exit code, stdout, stderr).
fn guardctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_guardctl"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn yaml_file(path: &str) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(root().join(path)).unwrap()).unwrap()
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The `http_filters` of the first listener of a shipped Envoy config.
fn shipped_filters(path: &str) -> Vec<Value> {
    let v = yaml_file(path);
    v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"]
        .as_array()
        .unwrap()
        .clone()
}

fn shipped_cluster(path: &str, name: &str) -> Value {
    let v = yaml_file(path);
    v["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no cluster {name} in {path}"))
        .clone()
}

/// A wasm filter entry with its `configuration.value` (a JSON string) parsed, so entries compare
/// by value whatever the JSON's layout.
fn normalized(filter: &Value) -> Value {
    let mut f = filter.clone();
    if let Some(v) = f
        .pointer_mut("/typed_config/config/configuration/value")
        .filter(|v| v.is_string())
    {
        *v = serde_json::from_str(v.as_str().unwrap()).unwrap();
    }
    f
}

fn inline_config(filter: &Value) -> Value {
    serde_json::from_str(
        filter["typed_config"]["config"]["configuration"]["value"]
            .as_str()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn policy_members_are_the_shipped_configs() {
    let policy = yaml_file("envoy/policy.yaml");
    let llm = shipped_filters("envoy/envoy.yaml");
    let mut checked = 0;
    for (member, name, file) in [
        ("llm_telemetry", "llm-telemetry", None),
        (
            "schema_guard",
            "schema-guard",
            Some("envoy/policies/schema-guard.json"),
        ),
        (
            "approval_gate",
            "approval-gate",
            Some("envoy/policies/approval-gate.json"),
        ),
        (
            "pii_redact",
            "pii-redact",
            Some("envoy/policies/pii-redact.json"),
        ),
        (
            "prompt_guard",
            "prompt-guard",
            Some("envoy/policies/prompt-guard.json"),
        ),
    ] {
        let inline = llm.iter().find(|f| f["name"] == name).unwrap();
        assert_eq!(
            policy[member],
            inline_config(inline),
            "{member} vs envoy/envoy.yaml"
        );
        if let Some(file) = file {
            let json: Value =
                serde_json::from_str(&std::fs::read_to_string(root().join(file)).unwrap()).unwrap();
            assert_eq!(policy[member], json, "{member} vs {file}");
        }
        checked += 1;
    }
    let rag = shipped_filters("envoy/rag-acl.yaml");
    let rag = rag.iter().find(|f| f["name"] == "rag-acl").unwrap();
    assert_eq!(
        policy["rag_acl"],
        inline_config(rag),
        "rag_acl vs envoy/rag-acl.yaml"
    );
    checked += 1;
    // Every member is checked, and nothing but the members and `deployment` is there.
    let keys: Vec<&String> = policy.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), checked + 1, "{keys:?}");
    assert!(policy["deployment"].is_object());
}

#[test]
fn lint_checks_every_member_of_the_shipped_policy() {
    let (code, out, err) = guardctl(&["lint", "envoy/policy.yaml"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let filters: Vec<&str> = lines
        .iter()
        .map(|l| l["filter"].as_str().unwrap())
        .collect();
    assert_eq!(
        filters,
        [
            "llm_telemetry",
            "schema_guard",
            "approval_gate",
            "pii_redact",
            "prompt_guard",
            "rag_acl"
        ]
    );
    for l in &lines {
        assert_eq!(l["ok"], true);
        assert_eq!(l["policies"], json!(["default"]));
        assert_eq!(l["version"].as_str().unwrap().len(), 16);
    }
}

#[test]
fn lint_policy_files_good_and_bad() {
    let dir = std::env::temp_dir().join(format!("guardctl-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shipped = std::fs::read_to_string(root().join("envoy/policy.yaml")).unwrap();
    let cases: Vec<(&str, String, i32, Vec<&str>)> = vec![
        (
            "json policy file",
            r#"{"pii_redact": {"policies": {"default": {"requests": false}}}}"#.into(),
            0,
            vec![r#""filter":"pii_redact""#],
        ),
        (
            "yaml subset",
            "prompt_guard:\n  policies:\n    default: { dry_run: true }\n".into(),
            0,
            vec![r#""filter":"prompt_guard""#],
        ),
        (
            "bad entity action, with the member prefix",
            r#"{"pii_redact": {"policies": {"default": {"entities": {"EMAIL": {"request": "zap"}}}}}}"#
                .into(),
            2,
            vec!["/pii_redact/policies/default/entities/EMAIL/request: unknown variant `zap`"],
        ),
        (
            "unknown member",
            "pii_redcat: {}\nprompt_guard: {}\n".into(),
            2,
            vec!["/pii_redcat: unknown member"],
        ),
        (
            "member not an object",
            "schema_guard: [1]\n".into(),
            2,
            vec!["/schema_guard: must be an object"],
        ),
        (
            "two bad members, both reported, the good one still summarised",
            "llm_telemetry: { policies: { default: { modles: [] } } }\nprompt_guard: { policies: { default: { thresholds: { flag: 2, block: 3 } } } }\nschema_guard: {}\n"
                .into(),
            2,
            vec![
                "2 errors",
                "/llm_telemetry/policies/default/modles: unknown field",
                "/prompt_guard/policies/default/thresholds",
                r#""filter":"schema_guard""#,
            ],
        ),
        (
            "deployment typo",
            shipped.replace("    registry: 127.0.0.1:5000", "    regsitry: 127.0.0.1:5000"),
            2,
            vec!["/deployment/images/regsitry: unknown field"],
        ),
        (
            "bad istio cluster name",
            shipped.replace(
                "outbound|18090||approval-service",
                "outbound|port||approval-service",
            ),
            2,
            vec!["/deployment/clusters/approvals/istio"],
        ),
        (
            "a call-out cluster not declared",
            shipped.replace(
                "service: { cluster: approvals,",
                "service: { cluster: approval,",
            ),
            2,
            vec![r#"/approval_gate/policies/default/service/cluster: cluster "approval" is not declared"#],
        ),
        (
            "a fallback's escalation cluster not declared",
            shipped.replace(
                "fallback: { on_upstream_failure: error }",
                "fallback: { on_upstream_failure: escalate, escalate: { cluster: reviews } }",
            ),
            2,
            vec![r#"/llm_telemetry/policies/default/fallback/escalate/cluster: cluster "reviews" is not declared"#],
        ),
        (
            "a fallback's escalation to a declared cluster",
            shipped.replace(
                "fallback: { on_upstream_failure: error }",
                "fallback: { on_upstream_failure: escalate, escalate: { cluster: approvals } }",
            ),
            0,
            vec![r#""filter":"llm_telemetry""#],
        ),
        (
            "unknown filter in deployment",
            shipped.replace("    rag_acl: { fail_strategy", "    rag_acls: { fail_strategy"),
            2,
            vec!["/deployment/filters/rag_acls: no such filter"],
        ),
        (
            "bad fail strategy",
            shipped.replacen("FAIL_RELOAD, env", "FAIL_SOMETIMES, env", 1),
            2,
            vec!["/deployment/filters/llm_telemetry/fail_strategy: unknown variant"],
        ),
        (
            "Envoy's spelling of fail closed is not Istio's",
            shipped.replacen("FAIL_RELOAD, env", "FAIL_CLOSED, env", 1),
            2,
            vec!["/deployment/filters/llm_telemetry/fail_strategy: unknown variant"],
        ),
        (
            "FAIL_CLOSE and FAIL_OPEN are still accepted",
            shipped
                .replacen("FAIL_RELOAD, env", "FAIL_OPEN, env", 1)
                .replacen("FAIL_RELOAD, env", "FAIL_CLOSE, env", 1),
            0,
            vec![r#""filter":"llm_telemetry""#],
        ),
        (
            "not yaml either",
            "pii_redact: {\n".into(),
            2,
            vec!["not valid json"],
        ),
    ];
    for (name, text, want_code, wants) in cases {
        let f = dir.join(format!("{}.yaml", name.replace([' ', ','], "_")));
        std::fs::write(&f, &text).unwrap();
        let (code, out, err) = guardctl(&["lint", f.to_str().unwrap()]);
        assert_eq!(code, want_code, "{name}: {out}{err}");
        for want in wants {
            assert!(
                out.contains(want) || err.contains(want),
                "{name}: {want:?} not in\n{out}{err}"
            );
        }
    }
    // A single filter's file keeps working, in JSON or YAML.
    let (code, out, err) = guardctl(&["lint", "envoy/policies/pii-redact.json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(r#""filter":"pii_redact""#), "{out}");
    let f = dir.join("single.yaml");
    std::fs::write(
        &f,
        "policies:\n  default:\n    entities: { EMAIL: { action: mask } }\n",
    )
    .unwrap();
    let (code, out, err) = guardctl(&["lint", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(r#""filter":"pii_redact""#), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn rendered_envoy_filters_are_the_shipped_ones() {
    let (code, out, err) = guardctl(&["render", "envoy/policy.yaml", "--target", "envoy"]);
    assert_eq!(code, 0, "{err}");
    let docs = yaml_docs(&out);
    assert_eq!(docs.len(), 2, "{out}");
    // The LLM listener: the five filters and the router, entry for entry.
    let rendered: Vec<Value> = docs[0]["http_filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(normalized)
        .collect();
    let shipped: Vec<Value> = shipped_filters("envoy/envoy.yaml")
        .iter()
        .map(normalized)
        .collect();
    assert_eq!(rendered.len(), shipped.len());
    for (r, s) in rendered.iter().zip(&shipped) {
        assert_eq!(r, s, "{} differs from envoy/envoy.yaml", s["name"]);
    }
    assert_eq!(
        docs[0]["clusters"],
        json!([shipped_cluster("envoy/envoy.yaml", "approvals")])
    );
    // The vector-database listener: rag-acl (after jwt_authn there) and the router.
    let shipped: Vec<Value> = shipped_filters("envoy/rag-acl.yaml")
        .iter()
        .filter(|f| f["name"] == "rag-acl" || f["name"] == "envoy.filters.http.router")
        .map(normalized)
        .collect();
    let rendered: Vec<Value> = docs[1]["http_filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(normalized)
        .collect();
    assert_eq!(rendered, shipped);
    assert_eq!(
        docs[1]["clusters"],
        json!([shipped_cluster("envoy/rag-acl.yaml", "chroma")])
    );
}

#[test]
fn committed_istio_manifests_are_the_rendered_ones() {
    for (file, target) in [
        ("envoy/istio/wasmplugins.yaml", "istio-wasmplugin"),
        ("envoy/istio/envoyfilter.yaml", "istio"),
    ] {
        let (code, out, err) = guardctl(&[
            "render",
            "envoy/policy.yaml",
            "--target",
            target,
            "--no-digests",
        ]);
        assert_eq!(code, 0, "{err}");
        let committed = std::fs::read_to_string(root().join(file)).unwrap();
        assert!(
            committed == out,
            "{file} is not what `guardctl render envoy/policy.yaml --target {target} --no-digests` prints: render it again"
        );
    }
}

#[test]
fn wasm_plugins_follow_the_policy() {
    let (code, out, err) = guardctl(&[
        "render",
        "envoy/policy.yaml",
        "--target",
        "istio-wasmplugin",
        "--no-digests",
    ]);
    assert_eq!(code, 0, "{err}");
    let docs = yaml_docs(&out);
    let policy = yaml_file("envoy/policy.yaml");
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["spec"]["pluginName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "llm-telemetry",
            "schema-guard",
            "approval-gate",
            "pii-redact",
            "prompt-guard",
            "rag-acl"
        ]
    );
    // One phase, priorities descending in DESIGN.md order on the gateway.
    let prio: Vec<i64> = docs
        .iter()
        .take(5)
        .map(|d| d["spec"]["priority"].as_i64().unwrap())
        .collect();
    assert!(prio.windows(2).all(|w| w[0] > w[1]), "{prio:?}");
    for d in &docs {
        let spec = &d["spec"];
        let name = spec["pluginName"].as_str().unwrap();
        let member = name.replace('-', "_");
        assert_eq!(spec["phase"], "STATS");
        assert_eq!(spec["sha256"], "", "{name}: no placeholder without digests");
        assert_eq!(
            spec["url"],
            format!(
                "oci://127.0.0.1:5000/llm-guard/{name}:{}",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(spec["failStrategy"], "FAIL_RELOAD", "{name}");
        let app = if name == "rag-acl" {
            "chroma"
        } else {
            "llm-gateway"
        };
        assert_eq!(spec["selector"]["matchLabels"], json!({"app": app}));
        assert_eq!(spec["match"][0]["mode"], "SERVER");
        let env: Vec<&str> = spec["vmConfig"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e["valueFrom"], "HOST");
                e["name"].as_str().unwrap()
            })
            .collect();
        assert!(env.contains(&"GUARD_AUDIT_KEY"), "{name}: {env:?}");
        // pluginConfig is the member, with call-out clusters under their Istio names.
        let mut expected = policy[&member].clone();
        match member.as_str() {
            "approval_gate" => {
                expected["policies"]["default"]["service"]["cluster"] =
                    json!("outbound|18090||approval-service.llm-guard.svc.cluster.local");
                expected["policies"]["default"]["service"]["authority"] =
                    json!("approval-service.llm-guard.svc.cluster.local");
                assert!(env.contains(&"GUARD_APPROVAL_CLIENT_TOKEN"));
            }
            "rag_acl" => {
                expected["policies"]["default"]["lookup"]["cluster"] =
                    json!("outbound|8000||chroma.llm-guard.svc.cluster.local");
                expected["policies"]["default"]["lookup"]["authority"] =
                    json!("chroma.llm-guard.svc.cluster.local");
            }
            "pii_redact" => assert!(env.contains(&"GUARD_PII_HMAC_KEY")),
            _ => {}
        }
        assert_eq!(spec["pluginConfig"], expected, "{name}");
    }
}

/// `deployment.filters.<f>.fail_strategy` reaches every target: Istio's `failStrategy` of a
/// WasmPlugin, Envoy's `failure_policy` in the ECDS configs (`--target istio`) and in the
/// `http_filters` entries (`--target envoy`). Default FAIL_RELOAD for every filter; FAIL_CLOSE
/// and FAIL_OPEN still render (Envoy spells the first FAIL_CLOSED).
#[test]
fn fail_strategy_reaches_every_target() {
    let dir = std::env::temp_dir().join(format!("guardctl-fail-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shipped = std::fs::read_to_string(root().join("envoy/policy.yaml")).unwrap();
    let edited = dir.join("policy.yaml");
    std::fs::write(
        &edited,
        shipped
            .replace(
                "llm_telemetry: { fail_strategy: FAIL_RELOAD",
                "llm_telemetry: { fail_strategy: FAIL_OPEN",
            )
            .replace(
                "schema_guard: { fail_strategy: FAIL_RELOAD",
                "schema_guard: { fail_strategy: FAIL_CLOSE",
            ),
    )
    .unwrap();
    let edited = edited.to_str().unwrap();
    let render = |policy: &str, target: &str| -> Vec<Value> {
        let (code, out, err) = guardctl(&["render", policy, "--target", target, "--no-digests"]);
        assert_eq!(code, 0, "{target}: {err}");
        yaml_docs(&out)
    };
    // (filter name, Envoy failure_policy) of every wasm config a target renders.
    let envoy_policies = |docs: &[Value]| -> Vec<(String, String)> {
        let mut out = Vec::new();
        for d in docs {
            let configs: Vec<&Value> = match d["http_filters"].as_array() {
                Some(filters) => filters
                    .iter()
                    .filter(|f| f["name"] != "envoy.filters.http.router")
                    .map(|f| &f["typed_config"]["config"])
                    .collect(),
                None => d["spec"]["configPatches"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["applyTo"] == "EXTENSION_CONFIG")
                    .map(|p| &p["patch"]["value"]["typed_config"]["config"])
                    .collect(),
            };
            for c in configs {
                out.push((
                    c["name"].as_str().unwrap().to_string(),
                    c["failure_policy"].as_str().unwrap_or("(none)").to_string(),
                ));
            }
        }
        out
    };
    let istio = |docs: &[Value]| -> Vec<(String, String)> {
        docs.iter()
            .map(|d| {
                (
                    d["spec"]["pluginName"].as_str().unwrap().to_string(),
                    d["spec"]["failStrategy"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let names = [
        "llm-telemetry",
        "schema-guard",
        "approval-gate",
        "pii-redact",
        "prompt-guard",
        "rag-acl",
    ];
    let want = |first: &str, second: &str| -> Vec<(String, String)> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let v = match i {
                    0 => first,
                    1 => second,
                    _ => "FAIL_RELOAD",
                };
                (n.to_string(), v.to_string())
            })
            .collect()
    };
    for target in ["envoy", "istio"] {
        assert_eq!(
            envoy_policies(&render("envoy/policy.yaml", target)),
            want("FAIL_RELOAD", "FAIL_RELOAD"),
            "{target}"
        );
        assert_eq!(
            envoy_policies(&render(edited, target)),
            want("FAIL_OPEN", "FAIL_CLOSED"),
            "{target}"
        );
    }
    assert_eq!(
        istio(&render("envoy/policy.yaml", "istio-wasmplugin")),
        want("FAIL_RELOAD", "FAIL_RELOAD")
    );
    assert_eq!(
        istio(&render(edited, "istio-wasmplugin")),
        want("FAIL_OPEN", "FAIL_CLOSE")
    );
    // Without a deployment member every filter gets the default.
    let bare = dir.join("bare.yaml");
    std::fs::write(&bare, "prompt_guard: {}\n").unwrap();
    assert_eq!(
        envoy_policies(&render(bare.to_str().unwrap(), "envoy")),
        [("prompt-guard".to_string(), "FAIL_RELOAD".to_string())]
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn rendered_plugin_configs_pass_lint() {
    // What Istio hands the modules (pluginConfig as JSON, the ECDS configuration string) is
    // accepted by the filters' own parsers.
    let dir = std::env::temp_dir().join(format!("guardctl-plugincfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_, wasm_plugins, _) = guardctl(&[
        "render",
        "envoy/policy.yaml",
        "--target",
        "istio-wasmplugin",
        "--no-digests",
    ]);
    let (_, filters, _) = guardctl(&[
        "render",
        "envoy/policy.yaml",
        "--target",
        "istio",
        "--no-digests",
    ]);
    let mut configs = Vec::new();
    for d in yaml_docs(&wasm_plugins) {
        configs.push((
            d["spec"]["pluginName"].as_str().unwrap().replace('-', "_"),
            serde_json::to_string(&d["spec"]["pluginConfig"]).unwrap(),
        ));
    }
    for d in yaml_docs(&filters) {
        for p in d["spec"]["configPatches"].as_array().unwrap() {
            if p["applyTo"] == "EXTENSION_CONFIG" {
                let config = &p["patch"]["value"]["typed_config"]["config"];
                configs.push((
                    config["name"].as_str().unwrap().replace('-', "_"),
                    config["configuration"]["value"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                ));
            }
        }
    }
    assert_eq!(configs.len(), 12);
    for (i, (member, text)) in configs.iter().enumerate() {
        // As the member of a policy file, so that its own filter's parser checks it (a small
        // config alone could pass for another filter's).
        let config: Value = serde_json::from_str(text).unwrap();
        let f = dir.join(format!("{i}.json"));
        std::fs::write(&f, json!({ member.as_str(): config }).to_string()).unwrap();
        let (code, out, err) = guardctl(&["lint", f.to_str().unwrap()]);
        assert_eq!(code, 0, "{member}: {err}");
        let line: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(line["filter"], member.as_str(), "{text}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn envoy_filters_insert_the_chain_in_order_with_the_flag() {
    let (code, out, err) = guardctl(&[
        "render",
        "envoy/policy.yaml",
        "--target",
        "istio",
        "--no-digests",
    ]);
    assert_eq!(code, 0, "{err}");
    let docs = yaml_docs(&out);
    assert_eq!(docs.len(), 2);
    for (doc, filters, app, port) in [
        (
            &docs[0],
            vec![
                "llm-telemetry",
                "schema-guard",
                "approval-gate",
                "pii-redact",
                "prompt-guard",
            ],
            "llm-gateway",
            10000,
        ),
        (&docs[1], vec!["rag-acl"], "chroma", 8000),
    ] {
        assert_eq!(
            doc["spec"]["workloadSelector"]["labels"],
            json!({"app": app})
        );
        let patches = doc["spec"]["configPatches"].as_array().unwrap();
        let ecds: Vec<&Value> = patches
            .iter()
            .filter(|p| p["applyTo"] == "EXTENSION_CONFIG")
            .collect();
        let inserts: Vec<&Value> = patches
            .iter()
            .filter(|p| p["applyTo"] == "HTTP_FILTER")
            .collect();
        assert_eq!(ecds.len(), filters.len());
        assert_eq!(inserts.len(), filters.len());
        for ((e, i), name) in ecds.iter().zip(&inserts).zip(&filters) {
            let config = &e["patch"]["value"]["typed_config"]["config"];
            assert_eq!(e["patch"]["operation"], "ADD");
            assert_eq!(config["name"], *name);
            assert_eq!(config["allow_on_headers_stop_iteration"], true, "{name}");
            assert_eq!(
                config["vm_config"]["code"]["remote"]["http_uri"]["uri"],
                format!(
                    "oci://127.0.0.1:5000/llm-guard/{name}:{}",
                    env!("CARGO_PKG_VERSION")
                )
            );
            assert!(config["vm_config"]["code"]["remote"]
                .get("sha256")
                .is_none());
            // The insertion names the ECDS resource, before the router, on the port.
            assert_eq!(i["patch"]["operation"], "INSERT_BEFORE");
            assert_eq!(i["patch"]["value"]["name"], e["patch"]["value"]["name"]);
            assert_eq!(
                i["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
                "envoy.filters.http.router"
            );
            assert_eq!(i["match"]["listener"]["portNumber"], port);
            assert_eq!(i["match"]["context"], "SIDECAR_INBOUND");
        }
    }
}

#[test]
fn render_pins_digests() {
    let dir = std::env::temp_dir().join(format!("guardctl-digests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tag = env!("CARGO_PKG_VERSION");
    let hex = "ab".repeat(32);
    let f = dir.join("digests.json");
    std::fs::write(
        &f,
        json!({
            "pii-redact": {
                "image": format!("oci://127.0.0.1:5000/llm-guard/pii-redact:{tag}"),
                "digest": format!("sha256:{hex}"),
                "layer_digest": format!("sha256:{}", "cd".repeat(32)),
                "size": 1234
            }
        })
        .to_string(),
    )
    .unwrap();
    let f = f.to_str().unwrap();
    let (code, out, err) = guardctl(&[
        "render",
        "envoy/policy.yaml",
        "--target",
        "istio-wasmplugin",
        "--digests",
        f,
    ]);
    assert_eq!(code, 0, "{err}");
    for d in yaml_docs(&out) {
        let want = if d["spec"]["pluginName"] == "pii-redact" {
            hex.as_str()
        } else {
            ""
        };
        assert_eq!(d["spec"]["sha256"], want, "{}", d["spec"]["pluginName"]);
    }
    let (code, out, err) = guardctl(&[
        "render",
        "envoy/policy.yaml",
        "--target",
        "istio",
        "--digests",
        f,
    ]);
    assert_eq!(code, 0, "{err}");
    let pinned: Vec<Value> = yaml_docs(&out)
        .iter()
        .flat_map(|d| d["spec"]["configPatches"].as_array().unwrap().clone())
        .filter_map(|p| {
            p.pointer("/patch/value/typed_config/config/vm_config/code/remote/sha256")
                .cloned()
        })
        .collect();
    assert_eq!(pinned, [json!(hex)]);
    // A digest that is not one, or an unreadable file: exit 2 with the reason.
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"pii-redact": {"digest": "sha256:xyz"}}"#).unwrap();
    let (code, _, err) = guardctl(&[
        "render",
        "envoy/policy.yaml",
        "--target",
        "istio-wasmplugin",
        "--digests",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("/pii-redact/digest"), "{err}");
    // An image of another tag: rendered, with a warning.
    std::fs::write(
        &bad,
        json!({"rag-acl": {"image": "oci://r/llm-guard/rag-acl:9.9.9", "digest": format!("sha256:{hex}")}}).to_string(),
    )
    .unwrap();
    let (code, _, err) = guardctl(&[
        "render",
        "envoy/policy.yaml",
        "--target",
        "istio-wasmplugin",
        "--digests",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning") && err.contains("9.9.9"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn render_usage_errors() {
    for (args, want) in [
        (vec!["render", "envoy/policy.yaml"], "--target"),
        (
            vec!["render", "envoy/policy.yaml", "--target", "k8s"],
            "--target must be",
        ),
        (vec!["render", "--target", "envoy"], "policy file"),
        (
            vec![
                "render",
                "envoy/policies/pii-redact.json",
                "--target",
                "envoy",
            ],
            "not a policy file",
        ),
        (
            vec!["render", "nope.yaml", "--target", "envoy"],
            "cannot read",
        ),
    ] {
        let (code, _, err) = guardctl(&args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // A call-out cluster without the entry a target needs.
    let dir = std::env::temp_dir().join(format!("guardctl-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("p.yaml");
    std::fs::write(
        &f,
        "approval_gate: { policies: { default: { service: { cluster: approvals } } } }\n\
         deployment: { clusters: { approvals: { envoy: { address: 10.0.0.1, port: 80 } } } }\n",
    )
    .unwrap();
    let f = f.to_str().unwrap();
    let (code, out, err) = guardctl(&["render", f, "--target", "envoy"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("name: approvals") && out.contains("10.0.0.1"),
        "{out}"
    );
    let (code, _, err) = guardctl(&["render", f, "--target", "istio-wasmplugin", "--no-digests"]);
    assert_eq!(code, 2);
    assert!(err.contains("no `istio` name"), "{err}");
    // Without a deployment member, lint passes but render asks for the cluster.
    std::fs::write(
        dir.join("q.yaml"),
        "approval_gate: { policies: { default: { service: { cluster: approvals } } } }\n",
    )
    .unwrap();
    let q = dir.join("q.yaml");
    let q = q.to_str().unwrap();
    assert_eq!(guardctl(&["lint", q]).0, 0);
    let (code, _, err) = guardctl(&["render", q, "--target", "envoy"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("not declared in /deployment/clusters"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
