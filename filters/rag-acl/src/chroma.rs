//! Chroma HTTP API v2: which operation a request is, the ACL injected into it, and its results
//! re-checked.

use crate::acl::Acl;
use serde_json::{json, Value};

/// A data operation on one collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Query,
    Count,
    Add,
    Upsert,
    Update,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Query => "query",
            Op::Count => "count",
            Op::Add => "add",
            Op::Upsert => "upsert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// A request on a collection's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tenant: String,
    pub database: String,
    /// The collection id (Chroma's data paths carry the UUID, not the name).
    pub collection: String,
    pub op: Op,
}

/// The operation of `method path` (query string ignored), or `None` for anything that is not
/// a record operation on one collection (collection management, tenants, `search`, `fork`,
/// functions, reset, ...): the adapter denies those unless configured.
pub fn classify(method: &str, path: &str) -> Option<Target> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let ["", "api", "v2", "tenants", tenant, "databases", database, "collections", collection, action] =
        parts.as_slice()
    else {
        return None;
    };
    let op = match (method, *action) {
        ("POST", "get") => Op::Get,
        ("POST", "query") => Op::Query,
        ("GET", "count") => Op::Count,
        ("POST", "add") => Op::Add,
        ("POST", "upsert") => Op::Upsert,
        ("POST", "update") => Op::Update,
        ("POST", "delete") => Op::Delete,
        _ => return None,
    };
    if [tenant, database, collection]
        .iter()
        .any(|s| s.is_empty() || s.contains('%'))
    {
        // Percent-encoded segments could name something else than they seem: refuse.
        return None;
    }
    Some(Target {
        tenant: (*tenant).to_string(),
        database: (*database).to_string(),
        collection: (*collection).to_string(),
        op,
    })
}

/// `where` for a request: the ACL alone when the caller sent none (absent, `null` or `{}`,
/// which Chroma would refuse inside `$and`), else `{"$and": [ACL, caller]}`.
fn wrapped(acl: &Acl, caller: Option<&Value>) -> Value {
    match caller {
        None | Some(Value::Null) => acl.chroma_where(),
        Some(Value::Object(m)) if m.is_empty() => acl.chroma_where(),
        Some(c) => json!({ "$and": [acl.chroma_where(), c] }),
    }
}

/// Rewrite a `get`, `query` or `delete` body: the ACL in its `where`, and for reads
/// `metadatas` added to `include` when the caller left it out (the result check needs it).
/// Returns whether metadata was added (to strip from the answer). Errors: not a JSON object.
pub fn rewrite_request(op: Op, body: &mut Value, acl: &Acl) -> Result<bool, String> {
    let Value::Object(m) = body else {
        return Err("the request body is not a JSON object".into());
    };
    let w = wrapped(acl, m.get("where"));
    m.insert("where".into(), w);
    if !matches!(op, Op::Get | Op::Query) {
        return Ok(false);
    }
    match m.get_mut("include") {
        // Chroma's default include has metadatas for get and query.
        None | Some(Value::Null) => Ok(false),
        Some(Value::Array(items)) => {
            if items.iter().any(|i| i == "metadatas") {
                Ok(false)
            } else {
                items.push(json!("metadatas"));
                Ok(true)
            }
        }
        Some(_) => Err("include is not a list".into()),
    }
}

/// Arrays of a result that run parallel to `ids`.
const PARALLEL: [&str; 6] = [
    "ids",
    "embeddings",
    "documents",
    "uris",
    "metadatas",
    "distances",
];

/// Keep, in every parallel array of `obj` (one level: `get`'s flat arrays, or one query's
/// inner arrays of query `query`), only the positions whose metadata passes. Returns how many
/// were removed.
fn retain(obj: &mut serde_json::Map<String, Value>, acl: &Acl, query: Option<usize>) -> usize {
    let metas: Vec<Option<Value>> = {
        let arr = obj.get("metadatas").and_then(|m| match query {
            None => m.as_array(),
            Some(q) => m.get(q).and_then(Value::as_array),
        });
        let ids = obj.get("ids").and_then(|m| match query {
            None => m.as_array(),
            Some(q) => m.get(q).and_then(Value::as_array),
        });
        let n = ids.map_or(0, Vec::len);
        (0..n)
            .map(|i| arr.and_then(|a| a.get(i)).cloned())
            .collect()
    };
    let keep: Vec<bool> = metas.iter().map(|m| acl.allows(m.as_ref())).collect();
    let removed = keep.iter().filter(|k| !**k).count();
    if removed == 0 {
        return 0;
    }
    for key in PARALLEL {
        let target = obj.get_mut(key).and_then(|v| match query {
            None => v.as_array_mut(),
            Some(q) => v.get_mut(q).and_then(Value::as_array_mut),
        });
        if let Some(items) = target {
            let mut i = 0;
            items.retain(|_| {
                let k = keep.get(i).copied().unwrap_or(false);
                i += 1;
                k
            });
        }
    }
    removed
}

/// Re-check a `get` or `query` answer: every record whose metadata fails the ACL is removed
/// from every parallel array (defence in depth behind the injected `where`). With
/// `strip_metadata` (the filter added `metadatas` to `include`), metadata is removed again.
/// Returns how many records were removed (prevented leaks). Errors: not a Chroma result.
pub fn check_response(
    op: Op,
    body: &mut Value,
    acl: &Acl,
    strip_metadata: bool,
) -> Result<usize, String> {
    let Value::Object(obj) = body else {
        return Err("the answer is not a JSON object".into());
    };
    if !obj.get("ids").is_some_and(Value::is_array) {
        return Err("the answer has no ids".into());
    }
    let removed = match op {
        Op::Get => retain(obj, acl, None),
        Op::Query => {
            let queries = obj.get("ids").and_then(Value::as_array).map_or(0, Vec::len);
            (0..queries).map(|q| retain(obj, acl, Some(q))).sum()
        }
        _ => 0,
    };
    if strip_metadata {
        obj.insert("metadatas".into(), Value::Null);
        if let Some(Value::Array(inc)) = obj.get_mut("include") {
            inc.retain(|i| i != "metadatas");
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::acl::Rule;

    const B: &str = "/api/v2/tenants/default_tenant/databases/default_database/collections";
    const C: &str = "4fc4d72b-357e-4c0c-aed5-39bf9b71aef2";

    fn tenant_a() -> Acl {
        Acl {
            rules: vec![Rule::Equals {
                field: "tenant".into(),
                value: json!("A"),
            }],
        }
    }

    #[test]
    fn classifies_record_operations_only() {
        let cases: [(&str, String, Option<Op>); 12] = [
            ("POST", format!("{B}/{C}/get"), Some(Op::Get)),
            ("POST", format!("{B}/{C}/query?x=1"), Some(Op::Query)),
            ("GET", format!("{B}/{C}/count"), Some(Op::Count)),
            ("POST", format!("{B}/{C}/add"), Some(Op::Add)),
            ("POST", format!("{B}/{C}/upsert"), Some(Op::Upsert)),
            ("POST", format!("{B}/{C}/update"), Some(Op::Update)),
            ("POST", format!("{B}/{C}/delete"), Some(Op::Delete)),
            ("GET", format!("{B}/{C}/get"), None),
            ("POST", format!("{B}/{C}/search"), None),
            ("POST", format!("{B}/{C}/fork"), None),
            ("GET", format!("{B}/docs"), None),
            ("POST", format!("{B}/%2E%2E/get"), None),
        ];
        for (method, path, want) in cases {
            assert_eq!(
                classify(method, &path).map(|t| t.op),
                want,
                "{method} {path}"
            );
        }
        let t = classify("POST", &format!("{B}/{C}/query")).unwrap();
        assert_eq!(
            (t.tenant.as_str(), t.collection.as_str()),
            ("default_tenant", C)
        );
    }

    #[test]
    fn callers_filters_cannot_widen_the_acl() {
        let acl = tenant_a();
        let a = json!({"tenant":{"$eq":"A"}});
        let cases = [
            (
                "absent",
                json!({"query_embeddings":[[1,0,0]]}),
                json!({"$and":[a]}),
            ),
            ("null", json!({"where":null}), json!({"$and":[a]})),
            ("empty object", json!({"where":{}}), json!({"$and":[a]})),
            (
                "widening $or",
                json!({"where":{"$or":[{"tenant":"B"},{"tenant":"A"}]}}),
                json!({"$and":[{"$and":[a]},{"$or":[{"tenant":"B"},{"tenant":"A"}]}]}),
            ),
            (
                "always true",
                json!({"where":{"$and":[]}}),
                json!({"$and":[{"$and":[a]},{"$and":[]}]}),
            ),
        ];
        for (name, mut body, want) in cases {
            rewrite_request(Op::Query, &mut body, &acl).unwrap();
            assert_eq!(body["where"], want, "{name}");
        }
        assert!(rewrite_request(Op::Get, &mut json!([1]), &acl).is_err());
    }

    #[test]
    fn metadata_is_requested_when_left_out_and_stripped_again() {
        let acl = tenant_a();
        let mut body = json!({"ids":["a1","b1"],"include":["documents"]});
        assert!(rewrite_request(Op::Get, &mut body, &acl).unwrap());
        assert_eq!(body["include"], json!(["documents", "metadatas"]));
        let mut default = json!({"ids":["a1"]});
        assert!(!rewrite_request(Op::Get, &mut default, &acl).unwrap());
        assert!(default.get("include").is_none());

        // What Chroma answered (as if the where had been ignored): b1 must not come back.
        let mut answer = json!({"ids":["a1","b1"],"embeddings":null,"documents":["A finance","B finance"],
            "uris":null,"metadatas":[{"tenant":"A"},{"tenant":"B"}],"include":["documents","metadatas"]});
        assert_eq!(check_response(Op::Get, &mut answer, &acl, true).unwrap(), 1);
        assert_eq!(
            answer,
            json!({"ids":["a1"],"embeddings":null,"documents":["A finance"],"uris":null,
                "metadatas":null,"include":["documents"]})
        );
    }

    #[test]
    fn query_results_are_checked_per_query() {
        let acl = tenant_a();
        let mut answer = json!({"ids":[["a1","b1"],["b2","a2"]],"embeddings":null,
            "documents":[["A finance","B finance"],["B none","A eng"]],"uris":null,
            "metadatas":[[{"tenant":"A"},{"tenant":"B"}],[{"tenant":"B"},{"tenant":"A"}]],
            "distances":[[0.0,0.0001],[0.5,1.0]],"include":["documents","metadatas","distances"]});
        assert_eq!(
            check_response(Op::Query, &mut answer, &acl, false).unwrap(),
            2
        );
        assert_eq!(answer["ids"], json!([["a1"], ["a2"]]));
        assert_eq!(answer["documents"], json!([["A finance"], ["A eng"]]));
        assert_eq!(answer["distances"], json!([[0.0], [1.0]]));
        assert_eq!(
            answer["metadatas"],
            json!([[{"tenant":"A"}], [{"tenant":"A"}]])
        );
        // A record without metadata fails a non-empty ACL.
        let mut bare = json!({"ids":["x"],"metadatas":[null],"documents":["?"]});
        assert_eq!(check_response(Op::Get, &mut bare, &acl, false).unwrap(), 1);
        assert_eq!(bare["ids"], json!([]));
        assert!(check_response(Op::Get, &mut json!({"error":"x"}), &acl, false).is_err());
    }
}
