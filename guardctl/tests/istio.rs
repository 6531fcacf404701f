//! Every manifest committed in `envoy/istio/` validates against Istio's own CRD schemas
//! (`../shared/data/istio-crds/wasmplugin-envoyfilter.crd.yaml`, or under `$GUARD_DATA_DIR`):
//! each document's CRD is picked by apiVersion group/version and kind, its `spec` is validated
//! against the version's `openAPIV3Schema.properties.spec`, and apiVersion, kind and
//! `metadata` are checked as the API server would.
//!
//! The schema is used as a structural schema: `x-kubernetes-*` keys are annotations, except
//! that fields a schema does not declare are errors unless it says
//! `x-kubernetes-preserve-unknown-fields` (what `kubectl apply` with strict field validation
//! reports). The few CEL rules (`x-kubernetes-validations`) of these CRDs are checked by hand
//! below.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

const CRDS: &str = "istio-crds/wasmplugin-envoyfilter.crd.yaml";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `$GUARD_DATA_DIR`, else `../shared/data` beside the repository.
fn data_dir() -> PathBuf {
    match std::env::var_os("GUARD_DATA_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => root().join("../shared/data"),
    }
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// One served version of a CRD.
struct Crd {
    group: String,
    version: String,
    kind: String,
    spec: jsonschema::Validator,
}

fn load_crds() -> Vec<Crd> {
    let path = data_dir().join(CRDS);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the Istio CRD schemas are missing: cannot read {} ({e}); they live in the shared data \
             directory beside the repository (../shared/data) or under $GUARD_DATA_DIR",
            path.display()
        )
    });
    let mut out = Vec::new();
    for crd in yaml_docs(&text) {
        assert_eq!(
            crd["kind"],
            "CustomResourceDefinition",
            "{}",
            path.display()
        );
        let group = crd["spec"]["group"].as_str().unwrap().to_string();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_string();
        for v in crd["spec"]["versions"].as_array().unwrap() {
            if v["served"] != true {
                continue;
            }
            let mut schema = v["schema"]["openAPIV3Schema"]["properties"]["spec"].clone();
            structural(&mut schema);
            let spec = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft7)
                .should_validate_formats(true)
                .build(&schema)
                .unwrap_or_else(|e| panic!("{kind} {}: schema does not compile: {e}", v["name"]));
            out.push(Crd {
                group: group.clone(),
                version: v["name"].as_str().unwrap().to_string(),
                kind: kind.clone(),
                spec,
            });
        }
    }
    assert!(
        out.len() >= 2,
        "expected WasmPlugin and EnvoyFilter in {}",
        path.display()
    );
    out
}

/// OpenAPI v3 of a CRD as JSON Schema: `x-kubernetes-*` and `nullable` dropped (annotations),
/// and objects with declared `properties` closed unless they preserve unknown fields.
fn structural(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    obj.retain(|k, _| !k.starts_with("x-kubernetes-") && k != "nullable");
    if obj.contains_key("properties") && !obj.contains_key("additionalProperties") && !preserve {
        obj.insert("additionalProperties".into(), json!(false));
    }
    for (k, v) in obj.iter_mut() {
        match k.as_str() {
            "properties" => {
                if let Some(props) = v.as_object_mut() {
                    for p in props.values_mut() {
                        structural(p);
                    }
                }
            }
            "items" | "additionalProperties" | "not" => structural(v),
            "oneOf" | "anyOf" | "allOf" => {
                if let Some(list) = v.as_array_mut() {
                    for s in list {
                        structural(s);
                    }
                }
            }
            _ => {}
        }
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

/// A label's name part or value: up to 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
fn is_label_part(s: &str, may_be_empty: bool) -> bool {
    if s.is_empty() {
        return may_be_empty;
    }
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn check_labels(labels: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(obj) = labels.as_object() else {
        errors.push(format!("{at}: not a map of labels"));
        return;
    };
    for (k, v) in obj {
        let (prefix, name) = match k.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, k.as_str()),
        };
        if prefix.is_some_and(|p| !is_dns_subdomain(p)) || !is_label_part(name, false) {
            errors.push(format!("{at}/{k}: not a label key"));
        }
        if !v.as_str().is_some_and(|v| is_label_part(v, true)) {
            errors.push(format!("{at}/{k}: {v} is not a label value"));
        }
    }
}

/// The CEL rules (`x-kubernetes-validations`) of the two CRDs, by hand.
fn check_rules(kind: &str, spec: &Value, errors: &mut Vec<String>) {
    let has = |k: &str| spec.get(k).is_some();
    match kind {
        "WasmPlugin" => {
            if [has("selector"), has("targetRef"), has("targetRefs")]
                .iter()
                .filter(|b| **b)
                .count()
                > 1
            {
                errors.push("/spec: only one of targetRefs or selector can be set".into());
            }
            if let Some(url) = spec.get("url").and_then(Value::as_str) {
                let scheme = url.split_once("://").map_or("", |(s, _)| s);
                if !["", "http", "https", "oci", "file"].contains(&scheme) {
                    errors.push(format!(
                        "/spec/url: url must have schema one of [http, https, file, oci]: {url}"
                    ));
                }
            }
            for (i, e) in spec
                .pointer("/vmConfig/env")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if e.get("valueFrom") == Some(&json!("HOST")) && e.get("value").is_some() {
                    errors.push(format!(
                        "/spec/vmConfig/env/{i}: value may only be set when valueFrom is INLINE"
                    ));
                }
            }
            if let Some(labels) = spec
                .pointer("/selector/matchLabels")
                .and_then(Value::as_object)
            {
                for (k, v) in labels {
                    if k.is_empty()
                        || k.contains('*')
                        || v.as_str().is_some_and(|v| v.contains('*'))
                    {
                        errors.push(format!(
                            "/spec/selector/matchLabels/{k}: wildcard not allowed, key must not be empty"
                        ));
                    }
                }
            }
        }
        "EnvoyFilter" => {
            if has("workloadSelector") && has("targetRefs") {
                errors.push("/spec: only one of targetRefs or workloadSelector can be set".into());
            }
            for (i, p) in spec
                .get("configPatches")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if let Some(m) = p.get("match") {
                    let waypoint_ctx = m.get("context") == Some(&json!("WAYPOINT"));
                    if waypoint_ctx != m.get("waypoint").is_some() {
                        errors.push(format!(
                            "/spec/configPatches/{i}/match: only support waypointMatch when context is WAYPOINT"
                        ));
                    }
                }
            }
        }
        _ => {}
    }
}

/// Validate one document: the errors, empty when it is a valid resource.
fn validate(crds: &[Crd], doc: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let api = doc["apiVersion"].as_str().unwrap_or("");
    let kind = doc["kind"].as_str().unwrap_or("");
    let Some((group, version)) = api.split_once('/') else {
        return vec![format!("/apiVersion: {api:?} is not group/version")];
    };
    let Some(crd) = crds
        .iter()
        .find(|c| c.group == group && c.version == version && c.kind == kind)
    else {
        return vec![format!("no served CRD for {api} {kind}")];
    };
    let meta = &doc["metadata"];
    match meta["name"].as_str() {
        Some(n) if is_dns_subdomain(n) => {}
        other => errors.push(format!(
            "/metadata/name: {other:?} is not a DNS-1123 subdomain"
        )),
    }
    if let Some(ns) = meta.get("namespace") {
        if !ns.as_str().is_some_and(is_dns_label) {
            errors.push(format!("/metadata/namespace: {ns} is not a DNS-1123 label"));
        }
    }
    if let Some(labels) = meta.get("labels") {
        check_labels(labels, "/metadata/labels", &mut errors);
    }
    let top: Map<String, Value> = doc.as_object().cloned().unwrap_or_default();
    for k in top.keys() {
        if !["apiVersion", "kind", "metadata", "spec"].contains(&k.as_str()) {
            errors.push(format!("/{k}: not a field of {kind}"));
        }
    }
    let Some(spec) = doc.get("spec") else {
        errors.push("/spec: required".into());
        return errors;
    };
    for e in crd.spec.iter_errors(spec) {
        errors.push(format!("/spec{}: {e}", e.instance_path().as_str()));
    }
    check_rules(kind, spec, &mut errors);
    errors
}

#[test]
fn every_committed_istio_manifest_validates_against_the_crds() {
    let crds = load_crds();
    let dir = root().join("envoy/istio");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let mut kinds = Vec::new();
    for f in &files {
        let docs = yaml_docs(&std::fs::read_to_string(f).unwrap());
        assert!(!docs.is_empty(), "{}: no document", f.display());
        for (i, doc) in docs.iter().enumerate() {
            let errors = validate(&crds, doc);
            assert!(
                errors.is_empty(),
                "{} document {i} ({} {}):\n  {}",
                f.display(),
                doc["kind"],
                doc["metadata"]["name"],
                errors.join("\n  ")
            );
            kinds.push(doc["kind"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        kinds.iter().filter(|k| *k == "WasmPlugin").count(),
        6,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "EnvoyFilter").count(),
        2,
        "{kinds:?}"
    );
}

/// A valid WasmPlugin and EnvoyFilter from the committed files, to break in the cases below.
fn samples() -> (Value, Value) {
    let wp =
        yaml_docs(&std::fs::read_to_string(root().join("envoy/istio/wasmplugins.yaml")).unwrap());
    let ef =
        yaml_docs(&std::fs::read_to_string(root().join("envoy/istio/envoyfilter.yaml")).unwrap());
    (wp[0].clone(), ef[0].clone())
}

#[test]
fn the_validation_rejects_what_the_api_server_would() {
    let crds = load_crds();
    let (wp, ef) = samples();
    assert!(validate(&crds, &wp).is_empty());
    assert!(validate(&crds, &ef).is_empty());
    type Edit = fn(&mut Value);
    let cases: [(&str, &Value, Edit, &str); 13] = [
        (
            "bad phase",
            &wp,
            |d| d["spec"]["phase"] = json!("AUTHORIZATION"),
            "/spec/phase",
        ),
        (
            "sha256 with its prefix",
            &wp,
            |d| d["spec"]["sha256"] = json!(format!("sha256:{}", "a".repeat(64))),
            "/spec/sha256",
        ),
        (
            "sha256 placeholder",
            &wp,
            |d| d["spec"]["sha256"] = json!("TODO"),
            "/spec/sha256",
        ),
        (
            "a field WasmPlugin does not have (the flag we need)",
            &wp,
            |d| d["spec"]["allowOnHeadersStopIteration"] = json!(true),
            "/spec",
        ),
        (
            "bad fail strategy",
            &wp,
            |d| d["spec"]["failStrategy"] = json!("FAIL_CLOSED"),
            "/spec/failStrategy",
        ),
        (
            "port 0",
            &wp,
            |d| d["spec"]["match"][0]["ports"][0]["number"] = json!(0),
            "/spec/match/0/ports/0/number",
        ),
        (
            "bad mode",
            &wp,
            |d| d["spec"]["match"][0]["mode"] = json!("INBOUND"),
            "/spec/match/0/mode",
        ),
        (
            "HOST env with a value",
            &wp,
            |d| d["spec"]["vmConfig"]["env"][0]["value"] = json!("secret"),
            "/spec/vmConfig/env/0",
        ),
        (
            "url scheme",
            &wp,
            |d| d["spec"]["url"] = json!("ftp://x/y.wasm"),
            "/spec/url",
        ),
        (
            "upper-case name",
            &wp,
            |d| d["metadata"]["name"] = json!("LLM-guard"),
            "/metadata/name",
        ),
        (
            "unknown version",
            &wp,
            |d| d["apiVersion"] = json!("extensions.istio.io/v1"),
            "no served CRD",
        ),
        (
            "bad applyTo",
            &ef,
            |d| d["spec"]["configPatches"][0]["applyTo"] = json!("EXTENSION"),
            "/spec/configPatches/0/applyTo",
        ),
        (
            "bad operation",
            &ef,
            |d| d["spec"]["configPatches"][0]["patch"]["operation"] = json!("APPEND"),
            "/spec/configPatches/0/patch/operation",
        ),
    ];
    for (name, base, edit, want) in cases {
        let mut doc = base.clone();
        edit(&mut doc);
        let errors = validate(&crds, &doc);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{name}: expected an error at {want}, got {errors:?}"
        );
    }
}
