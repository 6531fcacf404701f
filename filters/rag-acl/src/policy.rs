//! The filter's policy: which claims become ACL attributes, the rules on document metadata
//! built from them, which roles may run which operations, and which collections exist for it.
//!
//! ```json
//! {
//!   "backend": "chroma",
//!   "attributes": { "tenant": "tenant", "groups": "groups", "clearance": "clearance" },
//!   "rules": [
//!     { "field": "tenant", "match": "equals", "attribute": "tenant" },
//!     { "field": "acl_groups", "match": "any_of", "attribute": "groups" },
//!     { "field": "clearance", "match": "at_most", "attribute": "clearance" }
//!   ],
//!   "roles_claim": "roles",
//!   "roles": { "*": ["server_info", "get_collection"], "reader": ["get", "query"],
//!              "writer": ["get", "query", "add", "upsert", "update", "delete"] },
//!   "collections": { "docs": {} },
//!   "lookup": { "cluster": "chroma", "authority": "chroma", "timeout_ms": 2000 }
//! }
//! ```

use crate::acl::{Acl, Rule};
use guard_core::config::claim_at;
use guard_core::error::{Error, Result};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The vector database behind the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Chroma's HTTP API v2.
    #[default]
    Chroma,
    /// Qdrant's REST API (reads).
    Qdrant,
}

/// How a document's metadata field is compared with the caller's attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    /// The field equals the attribute (a scalar claim).
    Equals,
    /// The field is one of the attribute's values (membership: a list claim).
    In,
    /// The field is a list holding at least one of the attribute's values.
    AnyOf,
    /// The field is a number at most the attribute (clearance).
    AtMost,
}

/// One rule of the policy: a metadata field against an attribute.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    pub field: String,
    #[serde(rename = "match")]
    pub kind: Match,
    pub attribute: String,
}

/// Where call-outs to the vector database go (id lookups, ownership checks of writes).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    /// The Envoy cluster of the vector database.
    pub cluster: String,
    /// `:authority` of the call-outs (default: the cluster name).
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_timeout() -> u64 {
    2000
}

/// A collection the policy covers.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CollectionDef {
    /// Chroma's id of the collection, when the operator knows it (else resolved by a lookup).
    pub id: Option<String>,
}

/// The filter's own policy fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub backend: Backend,
    /// ACL attribute name → claim path in the verified token (dot-separated: `org.tenant`).
    pub attributes: BTreeMap<String, String>,
    pub rules: Vec<RuleDef>,
    /// Claim path of the caller's roles (a string or a list of strings).
    pub roles_claim: Option<String>,
    /// Role → operations it may run. The role `*` is every authenticated caller.
    pub roles: BTreeMap<String, Vec<String>>,
    /// Collections the policy covers, by name; any other collection is refused.
    pub collections: BTreeMap<String, CollectionDef>,
    pub lookup: Option<Lookup>,
    /// Most ids a write may name (ownership checks look them all up).
    pub max_ids: usize,
    /// Inject the ACL into reads (default). `false`: reads go out as the caller sent them and
    /// only the result check removes what fails (answers come back short of `n_results`):
    /// for measuring what an application would leak before enforcing. Writes and deletes are
    /// always enforced.
    pub rewrite: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            backend: Backend::Chroma,
            attributes: BTreeMap::new(),
            rules: Vec::new(),
            roles_claim: None,
            roles: BTreeMap::new(),
            collections: BTreeMap::new(),
            lookup: None,
            max_ids: 1000,
            rewrite: true,
        }
    }
}

/// Chroma's operations, as the policy names them.
pub const CHROMA_OPS: &[&str] = &[
    "server_info",
    "list_collections",
    "count_collections",
    "create_collection",
    "get_collection",
    "update_collection",
    "delete_collection",
    "count",
    "get",
    "query",
    "add",
    "upsert",
    "update",
    "delete",
];

/// Qdrant's operations the filter knows (reads).
pub const QDRANT_OPS: &[&str] = &[
    "query",
    "search",
    "recommend",
    "scroll",
    "count",
    "retrieve",
];

/// The compiled policy.
#[derive(Debug)]
pub struct Compiled {
    pub settings: Settings,
    /// Role → operations.
    roles: BTreeMap<String, BTreeSet<String>>,
}

/// Why a caller cannot be given an ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub reason: &'static str,
    pub message: String,
}

impl Denied {
    fn new(reason: &'static str, message: String) -> Self {
        Denied { reason, message }
    }
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.contains(['.', ' ', '/'])
}

/// Compile and check a policy; errors name the JSON path.
pub fn compile(settings: Settings, path: &str) -> Result<Compiled> {
    let ops = match settings.backend {
        Backend::Chroma => CHROMA_OPS,
        Backend::Qdrant => QDRANT_OPS,
    };
    for (name, claim) in &settings.attributes {
        if name.is_empty() || claim.is_empty() || claim.split('.').any(str::is_empty) {
            return Err(Error::config(format!(
                "{path}/attributes/{name}: {claim:?} is not a claim path (dot-separated names)"
            )));
        }
    }
    for (i, r) in settings.rules.iter().enumerate() {
        if r.field.is_empty() || r.field.starts_with(['$', '#']) {
            return Err(Error::config(format!(
                "{path}/rules/{i}/field: {:?} is not a metadata field name",
                r.field
            )));
        }
        if !settings.attributes.contains_key(&r.attribute) {
            return Err(Error::config(format!(
                "{path}/rules/{i}/attribute: {:?} is not defined in {path}/attributes",
                r.attribute
            )));
        }
    }
    if settings.rules.is_empty() {
        return Err(Error::config(format!(
            "{path}/rules: at least one rule is needed (an empty ACL would let every caller see every document)"
        )));
    }
    if let Some(c) = &settings.roles_claim {
        if c.is_empty() || c.split('.').any(str::is_empty) {
            return Err(Error::config(format!(
                "{path}/roles_claim: {c:?} is not a claim path"
            )));
        }
    }
    let mut roles = BTreeMap::new();
    for (role, list) in &settings.roles {
        let mut set = BTreeSet::new();
        for (i, op) in list.iter().enumerate() {
            if !ops.contains(&op.as_str()) {
                return Err(Error::config(format!(
                    "{path}/roles/{role}/{i}: {op:?} is not a {} operation (one of {})",
                    match settings.backend {
                        Backend::Chroma => "Chroma",
                        Backend::Qdrant => "Qdrant",
                    },
                    ops.join(", ")
                )));
            }
            set.insert(op.clone());
        }
        roles.insert(role.clone(), set);
    }
    for (name, c) in &settings.collections {
        if !valid_id(name) && name != "*" {
            return Err(Error::config(format!(
                "{path}/collections/{name}: not a collection name"
            )));
        }
        if let Some(id) = &c.id {
            if !valid_id(id) {
                return Err(Error::config(format!(
                    "{path}/collections/{name}/id: {id:?} is not a collection id"
                )));
            }
        }
    }
    if let Some(l) = &settings.lookup {
        if l.cluster.is_empty() {
            return Err(Error::config(format!(
                "{path}/lookup/cluster: empty cluster name"
            )));
        }
        if !(1..=60_000).contains(&l.timeout_ms) {
            return Err(Error::config(format!(
                "{path}/lookup/timeout_ms: {} is not within 1..=60000",
                l.timeout_ms
            )));
        }
    }
    let writes_by_id = roles
        .values()
        .any(|ops| ops.iter().any(|o| o == "update" || o == "upsert"));
    let unresolved = settings.collections.values().any(|c| c.id.is_none());
    let needs_lookup = settings.backend == Backend::Chroma && (writes_by_id || unresolved);
    if needs_lookup && settings.lookup.is_none() {
        return Err(Error::config(format!(
            "{path}/lookup: needed (collections without an id are resolved, and update / upsert are checked for ownership, by call-outs to the database)"
        )));
    }
    if settings.max_ids == 0 || settings.max_ids > 100_000 {
        return Err(Error::config(format!(
            "{path}/max_ids: {} is not within 1..=100000",
            settings.max_ids
        )));
    }
    Ok(Compiled { settings, roles })
}

fn scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

impl Compiled {
    /// The caller's ACL from their claims, or why there is none (a claim the policy needs is
    /// missing or has the wrong type: a 403 that names it).
    pub fn acl(&self, claims: &Value) -> std::result::Result<Acl, Denied> {
        let mut rules = Vec::with_capacity(self.settings.rules.len());
        for r in &self.settings.rules {
            let path = self
                .settings
                .attributes
                .get(&r.attribute)
                .map(String::as_str)
                .unwrap_or_default();
            let Some(v) = claim_at(claims, path).filter(|v| !v.is_null()) else {
                return Err(Denied::new(
                    "missing_claim",
                    format!(
                        "the token has no claim {path:?} (attribute {:?}) that the access policy needs",
                        r.attribute
                    ),
                ));
            };
            let bad = || {
                Denied::new(
                    "bad_claim",
                    format!("the token's claim {path:?} has the wrong type for its rule"),
                )
            };
            let field = r.field.clone();
            rules.push(match r.kind {
                Match::Equals => {
                    if !scalar(v) {
                        return Err(bad());
                    }
                    Rule::Equals {
                        field,
                        value: v.clone(),
                    }
                }
                Match::In | Match::AnyOf => {
                    let values: Vec<Value> = match v {
                        Value::Array(items) if items.iter().all(scalar) => items.clone(),
                        s if scalar(s) => vec![s.clone()],
                        _ => return Err(bad()),
                    };
                    if r.kind == Match::In {
                        Rule::In { field, values }
                    } else {
                        Rule::AnyOf { field, values }
                    }
                }
                Match::AtMost => {
                    let n = match v {
                        Value::Number(n) => n.as_f64(),
                        _ => None,
                    }
                    .ok_or_else(bad)?;
                    Rule::AtMost { field, value: n }
                }
            });
        }
        Ok(Acl { rules })
    }

    /// The caller's roles (from `roles_claim`; `*` always).
    pub fn roles(&self, claims: &Value) -> Vec<String> {
        let mut out = vec!["*".to_string()];
        if let Some(v) = self
            .settings
            .roles_claim
            .as_deref()
            .and_then(|p| claim_at(claims, p))
        {
            match v {
                Value::String(s) => out.push(s.clone()),
                Value::Array(items) => out.extend(
                    items
                        .iter()
                        .filter_map(Value::as_str)
                        .take(64)
                        .map(str::to_string),
                ),
                _ => {}
            }
        }
        out
    }

    /// Whether any of `roles` may run `op`.
    pub fn allowed(&self, roles: &[String], op: &str) -> bool {
        roles
            .iter()
            .any(|r| self.roles.get(r).is_some_and(|ops| ops.contains(op)))
    }

    /// Whether the policy covers the collection `name`.
    pub fn covers(&self, name: &str) -> bool {
        self.settings.collections.contains_key(name) || self.settings.collections.contains_key("*")
    }

    /// The collection a configured id names.
    pub fn name_of_id(&self, id: &str) -> Option<&str> {
        self.settings
            .collections
            .iter()
            .find(|(_, c)| c.id.as_deref() == Some(id))
            .map(|(n, _)| n.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use serde_json::json;

    fn settings(v: Value) -> Settings {
        serde_json::from_value(v).unwrap()
    }

    fn base() -> Value {
        json!({
            "attributes": {"tenant": "org.tenant", "groups": "groups", "clearance": "clearance"},
            "rules": [
                {"field": "tenant", "match": "equals", "attribute": "tenant"},
                {"field": "acl_groups", "match": "any_of", "attribute": "groups"},
                {"field": "clearance", "match": "at_most", "attribute": "clearance"}
            ],
            "roles_claim": "roles",
            "roles": {"*": ["server_info"], "reader": ["get", "query"]},
            "collections": {"docs": {"id": "4fc4d72b-357e-4c0c-aed5-39bf9b71aef2"}}
        })
    }

    #[test]
    fn claims_become_the_acl() {
        let c = compile(settings(base()), "/p").unwrap();
        let claims =
            json!({"org": {"tenant": "A"}, "groups": ["eng"], "clearance": 2, "roles": "reader"});
        let acl = c.acl(&claims).unwrap();
        assert!(acl.allows(Some(
            &json!({"tenant":"A","acl_groups":["eng","x"],"clearance":1})
        )));
        assert!(!acl.allows(Some(
            &json!({"tenant":"B","acl_groups":["eng"],"clearance":1})
        )));
        let roles = c.roles(&claims);
        assert!(c.allowed(&roles, "query") && c.allowed(&roles, "server_info"));
        assert!(!c.allowed(&roles, "add"));
        assert!(!c.allowed(&c.roles(&json!({})), "query"));
        assert_eq!(
            c.name_of_id("4fc4d72b-357e-4c0c-aed5-39bf9b71aef2"),
            Some("docs")
        );
        assert!(c.covers("docs") && !c.covers("other"));
    }

    #[test]
    fn missing_or_mistyped_claims_are_named() {
        let c = compile(settings(base()), "/p").unwrap();
        let e = c
            .acl(&json!({"groups": ["eng"], "clearance": 2}))
            .unwrap_err();
        assert_eq!(e.reason, "missing_claim");
        assert!(e.message.contains("org.tenant"), "{}", e.message);
        let e = c
            .acl(&json!({"org": {"tenant": "A"}, "groups": ["eng"], "clearance": "high"}))
            .unwrap_err();
        assert_eq!(e.reason, "bad_claim");
        let e = c
            .acl(&json!({"org": {"tenant": ["A"]}, "groups": ["eng"], "clearance": 1}))
            .unwrap_err();
        assert_eq!(e.reason, "bad_claim");
        // A single group as a string is a list of one; no groups match nothing.
        let acl = c
            .acl(&json!({"org": {"tenant": "A"}, "groups": "eng", "clearance": 1}))
            .unwrap();
        assert!(acl.allows(Some(
            &json!({"tenant":"A","acl_groups":["eng"],"clearance":0})
        )));
        let acl = c
            .acl(&json!({"org": {"tenant": "A"}, "groups": [], "clearance": 1}))
            .unwrap();
        assert!(!acl.allows(Some(
            &json!({"tenant":"A","acl_groups":["eng"],"clearance":0})
        )));
    }

    #[test]
    fn bad_policies_name_the_path() {
        let cases = [
            (json!({"rules": []}), "/p/rules"),
            (
                json!({"rules": [{"field": "t", "match": "equals", "attribute": "nope"}], "attributes": {}}),
                "/p/rules/0/attribute",
            ),
            (
                json!({"roles": {"reader": ["select"]}}),
                "/p/roles/reader/0",
            ),
            (json!({"collections": {"docs": {}}}), "/p/lookup"),
            (json!({"roles": {"w": ["update"]}}), "/p/lookup"),
            (json!({"max_ids": 0}), "/p/max_ids"),
            (
                json!({"attributes": {"tenant": "a..b"}}),
                "/p/attributes/tenant",
            ),
        ];
        for (patch, want) in cases {
            let mut v = base();
            for (k, x) in patch.as_object().unwrap() {
                v[k] = x.clone();
            }
            let err = compile(settings(v), "/p").unwrap_err().to_string();
            assert!(err.contains(want), "{patch}: {err}");
        }
        assert!(serde_json::from_value::<Settings>(json!({"bogus": 1})).is_err());
    }
}
