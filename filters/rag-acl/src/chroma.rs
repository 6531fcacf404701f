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

/// Any request of Chroma's v2 API the filter knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Heartbeat, version, health, pre-flight checks, identity, tenant and database lookups.
    Server,
    /// `GET B/collections`.
    ListCollections { base: String },
    /// `GET B/collections_count`.
    CountCollections { base: String },
    /// `POST B/collections` (the name is in the body).
    CreateCollection { base: String },
    /// `GET B/collections/{name}` (by name), or `GET B/collections/by-id/{id}`.
    GetCollection {
        base: String,
        name: Option<String>,
        id: Option<String>,
    },
    /// `PUT B/collections/{id}`.
    UpdateCollection { base: String, slot: String },
    /// `DELETE B/collections/{name or id}`.
    DeleteCollection { base: String, slot: String },
    /// A record operation on one collection.
    Record(Target),
}

impl Route {
    /// The operation's name in the policy (`roles`).
    pub fn op(&self) -> &'static str {
        match self {
            Route::Server => "server_info",
            Route::ListCollections { .. } => "list_collections",
            Route::CountCollections { .. } => "count_collections",
            Route::CreateCollection { .. } => "create_collection",
            Route::GetCollection { .. } => "get_collection",
            Route::UpdateCollection { .. } => "update_collection",
            Route::DeleteCollection { .. } => "delete_collection",
            Route::Record(t) => t.op.as_str(),
        }
    }
}

fn segment_ok(s: &str) -> bool {
    // Percent-encoded segments could name something else than they seem: refuse them.
    !s.is_empty() && !s.contains('%')
}

/// Whether `s` looks like a Chroma collection id (a UUID).
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

/// The request `method path` (query string ignored), or `None` for anything else (search,
/// fork, functions, reset, tenant or database creation, v1 paths...): denied by default.
pub fn route(method: &str, path: &str) -> Option<Route> {
    if let Some(t) = classify(method, path) {
        return Some(Route::Record(t));
    }
    let bare = path.split(['?', '#']).next().unwrap_or_default();
    let parts: Vec<&str> = bare.trim_end_matches('/').split('/').collect();
    if !parts.iter().skip(1).all(|s| segment_ok(s)) {
        return None;
    }
    let base = |t: &str, d: &str| format!("/api/v2/tenants/{t}/databases/{d}");
    Some(match (method, parts.as_slice()) {
        (
            "GET",
            ["", "api", "v2", "heartbeat" | "version" | "healthcheck" | "pre-flight-checks"]
            | ["", "api", "v2", "auth", "identity"]
            | ["", "api", "v2", "tenants", _]
            | ["", "api", "v2", "tenants", _, "databases"]
            | ["", "api", "v2", "tenants", _, "databases", _],
        ) => Route::Server,
        ("GET", ["", "api", "v2", "tenants", t, "databases", d, "collections"]) => {
            Route::ListCollections { base: base(t, d) }
        }
        ("GET", ["", "api", "v2", "tenants", t, "databases", d, "collections_count"]) => {
            Route::CountCollections { base: base(t, d) }
        }
        ("POST", ["", "api", "v2", "tenants", t, "databases", d, "collections"]) => {
            Route::CreateCollection { base: base(t, d) }
        }
        ("GET", ["", "api", "v2", "tenants", t, "databases", d, "collections", "by-id", id]) => {
            Route::GetCollection {
                base: base(t, d),
                name: None,
                id: Some((*id).to_string()),
            }
        }
        ("GET", ["", "api", "v2", "tenants", t, "databases", d, "collections", name]) => {
            Route::GetCollection {
                base: base(t, d),
                name: Some((*name).to_string()),
                id: None,
            }
        }
        ("PUT", ["", "api", "v2", "tenants", t, "databases", d, "collections", slot]) => {
            Route::UpdateCollection {
                base: base(t, d),
                slot: (*slot).to_string(),
            }
        }
        ("DELETE", ["", "api", "v2", "tenants", t, "databases", d, "collections", slot]) => {
            Route::DeleteCollection {
                base: base(t, d),
                slot: (*slot).to_string(),
            }
        }
        _ => return None,
    })
}

impl Target {
    /// `/api/v2/tenants/{t}/databases/{d}`.
    pub fn base(&self) -> String {
        format!(
            "/api/v2/tenants/{}/databases/{}",
            self.tenant, self.database
        )
    }
}

/// A write the ACL refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: &'static str,
    pub message: String,
}

fn refused(reason: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        reason,
        message: message.into(),
    }
}

/// The ids of a write body (strings, at most `max_ids`).
pub fn write_ids(body: &Value, max_ids: usize) -> Result<Vec<String>, Refused> {
    let ids = body
        .get("ids")
        .and_then(Value::as_array)
        .ok_or_else(|| refused("bad_request", "the write has no ids list"))?;
    if ids.len() > max_ids {
        return Err(refused(
            "too_many_ids",
            format!(
                "the write names {} ids, more than the {max_ids} allowed",
                ids.len()
            ),
        ));
    }
    ids.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| refused("bad_request", "an id is not a string"))
        })
        .collect()
}

/// Check the metadata a write sets. `add` and `upsert` must give every record metadata that
/// passes the ACL (a document the writer could not read back is not theirs to write); `update`
/// is checked after its metadata is merged into the stored record ([`check_owned`]).
pub fn check_written(
    op: Op,
    body: &Value,
    acl: &Acl,
    max_ids: usize,
) -> Result<Vec<String>, Refused> {
    let ids = write_ids(body, max_ids)?;
    if !matches!(op, Op::Add | Op::Upsert) {
        return Ok(ids);
    }
    let metas = body.get("metadatas").and_then(Value::as_array);
    for (i, id) in ids.iter().enumerate() {
        let m = metas.and_then(|m| m.get(i));
        if !acl.allows(m) {
            return Err(refused(
                "acl_violation",
                format!(
                    "record {id:?}: its metadata does not carry the caller's access attributes ({})",
                    acl.fields().join(", ")
                ),
            ));
        }
    }
    Ok(ids)
}

/// The body of the ownership lookup of a write: the stored metadata of its ids.
pub fn ownership_query(ids: &[String]) -> Value {
    json!({ "ids": ids, "include": ["metadatas"] })
}

/// Check a write against the stored records its ids name (the lookup's answer): each stored
/// record must pass the ACL (it is the caller's), and for `update` the stored metadata with the
/// update's metadata merged in must still pass (no moving a record to another tenant). Ids that
/// do not exist yet are new records (checked by [`check_written`]).
pub fn check_owned(op: Op, body: &Value, stored: &Value, acl: &Acl) -> Result<(), Refused> {
    let ids = stored
        .get("ids")
        .and_then(Value::as_array)
        .ok_or_else(|| refused("lookup_failed", "the ownership lookup returned no ids"))?;
    let metas = stored.get("metadatas").and_then(Value::as_array);
    let req_ids = body.get("ids").and_then(Value::as_array);
    let req_metas = body.get("metadatas").and_then(Value::as_array);
    for (i, id) in ids.iter().enumerate() {
        let m = metas.and_then(|m| m.get(i));
        let label = id.as_str().unwrap_or_default();
        if !acl.allows(m) {
            return Err(refused(
                "not_owner",
                format!("record {label:?} exists and is not the caller's to change"),
            ));
        }
        if op != Op::Update {
            continue;
        }
        // The update's metadata for this id (the last one, as the database applies them).
        let new = req_ids.and_then(|r| {
            r.iter()
                .rposition(|x| x == id)
                .and_then(|j| req_metas.and_then(|m| m.get(j)))
        });
        if let (Some(Value::Object(old)), Some(Value::Object(upd))) = (m, new) {
            let mut merged = old.clone();
            for (k, v) in upd {
                merged.insert(k.clone(), v.clone());
            }
            if !acl.allows(Some(&Value::Object(merged))) {
                return Err(refused(
                    "acl_violation",
                    format!(
                        "record {label:?}: the update would move it out of the caller's access"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Keep, in a `list collections` answer, only the collections `keep` allows; returns how many
/// were removed.
pub fn filter_collections(body: &mut Value, keep: impl Fn(&str) -> bool) -> Result<usize, String> {
    let list = body
        .as_array_mut()
        .ok_or_else(|| "the answer is not a list of collections".to_string())?;
    let before = list.len();
    list.retain(|c| c.get("name").and_then(Value::as_str).is_some_and(&keep));
    Ok(before - list.len())
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
    request_metadata(body)
}

/// Ask for `metadatas` in a read's `include` (the result check needs them). Returns whether
/// they were added (to strip from the answer).
pub fn request_metadata(body: &mut Value) -> Result<bool, String> {
    let Value::Object(m) = body else {
        return Err("the request body is not a JSON object".into());
    };
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

    #[test]
    fn routes_every_known_endpoint_and_nothing_else() {
        let b = "/api/v2/tenants/default_tenant/databases/default_database";
        let cases: Vec<(&str, String, Option<&str>)> = vec![
            ("GET", "/api/v2/heartbeat".into(), Some("server_info")),
            ("GET", "/api/v2/auth/identity".into(), Some("server_info")),
            (
                "GET",
                "/api/v2/tenants/t1/databases/d1".into(),
                Some("server_info"),
            ),
            (
                "GET",
                format!("{b}/collections?limit=10"),
                Some("list_collections"),
            ),
            (
                "GET",
                format!("{b}/collections_count"),
                Some("count_collections"),
            ),
            (
                "POST",
                format!("{b}/collections"),
                Some("create_collection"),
            ),
            (
                "GET",
                format!("{b}/collections/docs"),
                Some("get_collection"),
            ),
            (
                "GET",
                format!("{b}/collections/by-id/{C}"),
                Some("get_collection"),
            ),
            (
                "PUT",
                format!("{b}/collections/{C}"),
                Some("update_collection"),
            ),
            (
                "DELETE",
                format!("{b}/collections/docs"),
                Some("delete_collection"),
            ),
            ("POST", format!("{b}/collections/{C}/query"), Some("query")),
            ("POST", "/api/v2/reset".into(), None),
            ("POST", "/api/v2/tenants".into(), None),
            ("POST", format!("{b}/collections/{C}/search"), None),
            ("POST", format!("{b}/collections/{C}/fork"), None),
            ("GET", "/api/v1/heartbeat".into(), None),
            ("GET", format!("{b}/collections/d%6Fcs"), None),
            ("DELETE", b.to_string(), None),
        ];
        for (m, p, want) in cases {
            assert_eq!(route(m, &p).map(|r| r.op()), want, "{m} {p}");
        }
        assert!(is_uuid(C) && !is_uuid("docs") && !is_uuid(&C.replace('-', "x")));
    }

    #[test]
    fn writes_must_stay_inside_the_acl() {
        let acl = tenant_a();
        let ok = json!({"ids": ["x"], "metadatas": [{"tenant": "A"}]});
        assert_eq!(check_written(Op::Add, &ok, &acl, 10).unwrap(), vec!["x"]);
        for (body, reason) in [
            (
                json!({"ids": ["x"], "metadatas": [{"tenant": "B"}]}),
                "acl_violation",
            ),
            (
                json!({"ids": ["x", "y"], "metadatas": [{"tenant": "A"}]}),
                "acl_violation",
            ),
            (json!({"ids": ["x"]}), "acl_violation"),
            (json!({"ids": ["x"], "metadatas": [null]}), "acl_violation"),
            (json!({"metadatas": [{"tenant": "A"}]}), "bad_request"),
            (
                json!({"ids": [1], "metadatas": [{"tenant": "A"}]}),
                "bad_request",
            ),
        ] {
            assert_eq!(
                check_written(Op::Upsert, &body, &acl, 10)
                    .unwrap_err()
                    .reason,
                reason,
                "{body}"
            );
        }
        let many = json!({"ids": (0..11).map(|i| i.to_string()).collect::<Vec<_>>()});
        assert_eq!(
            check_written(Op::Update, &many, &acl, 10)
                .unwrap_err()
                .reason,
            "too_many_ids"
        );
        // Update: metadata optional here, checked once merged into the stored record.
        assert!(check_written(Op::Update, &json!({"ids": ["x"]}), &acl, 10).is_ok());
    }

    #[test]
    fn stored_records_must_be_the_callers() {
        let acl = tenant_a();
        let stored =
            json!({"ids": ["a1", "b1"], "metadatas": [{"tenant": "A", "g": 1}, {"tenant": "B"}]});
        let body = json!({"ids": ["a1", "b1"]});
        assert_eq!(
            check_owned(Op::Update, &body, &stored, &acl)
                .unwrap_err()
                .reason,
            "not_owner"
        );
        let stored = json!({"ids": ["a1"], "metadatas": [{"tenant": "A", "g": 1}]});
        assert!(check_owned(
            Op::Update,
            &json!({"ids": ["a1", "new"], "metadatas": [{"g": 2}, {"tenant": "A"}]}),
            &stored,
            &acl
        )
        .is_ok());
        let moved = json!({"ids": ["a1"], "metadatas": [{"tenant": "B"}]});
        assert_eq!(
            check_owned(Op::Update, &moved, &stored, &acl)
                .unwrap_err()
                .reason,
            "acl_violation"
        );
        // The last metadata for a repeated id is the one applied.
        let twice = json!({"ids": ["a1", "a1"], "metadatas": [{"tenant": "A"}, {"tenant": "B"}]});
        assert_eq!(
            check_owned(Op::Update, &twice, &stored, &acl)
                .unwrap_err()
                .reason,
            "acl_violation"
        );
        assert_eq!(
            check_owned(Op::Upsert, &body, &json!({}), &acl)
                .unwrap_err()
                .reason,
            "lookup_failed"
        );
        assert_eq!(
            ownership_query(&["a".into()]),
            json!({"ids": ["a"], "include": ["metadatas"]})
        );
    }

    #[test]
    fn collection_lists_keep_only_covered_names() {
        let mut v =
            json!([{"name": "docs", "id": "1"}, {"name": "secret", "id": "2"}, {"id": "3"}]);
        assert_eq!(filter_collections(&mut v, |n| n == "docs").unwrap(), 2);
        assert_eq!(v, json!([{"name": "docs", "id": "1"}]));
        assert!(filter_collections(&mut json!({}), |_| true).is_err());
    }
}
