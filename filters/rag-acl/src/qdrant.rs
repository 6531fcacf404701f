//! Qdrant REST: read operations, the ACL injected into their filters, and returned points
//! re-checked. Shapes from Qdrant's source and client models (docs/rag-acl-facts.md §3).

use crate::acl::Acl;
use serde_json::{json, Map, Value};

/// A read on one collection's points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `POST /collections/{c}/points/query` (filter at the root and in every prefetch).
    Query,
    /// `POST .../points/search` (deprecated, still served).
    Search,
    /// `POST .../points/recommend` (deprecated, still served).
    Recommend,
    /// `POST .../points/scroll`.
    Scroll,
    /// `POST .../points/count`.
    Count,
    /// `POST .../points` with `ids`: no filter field, only the result check.
    Retrieve,
}

impl Op {
    /// The operation's name in the policy (`roles`).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Query => "query",
            Op::Search => "search",
            Op::Recommend => "recommend",
            Op::Scroll => "scroll",
            Op::Count => "count",
            Op::Retrieve => "retrieve",
        }
    }
}

/// The collection and read operation of `method path`, or `None` (writes, batches, groups,
/// facets and anything else: the adapter denies what it does not know).
pub fn classify(method: &str, path: &str) -> Option<(String, Op)> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let (collection, op) = match (method, parts.as_slice()) {
        ("POST", ["", "collections", c, "points"]) => (c, Op::Retrieve),
        ("POST", ["", "collections", c, "points", action]) => (
            c,
            match *action {
                "query" => Op::Query,
                "search" => Op::Search,
                "recommend" => Op::Recommend,
                "scroll" => Op::Scroll,
                "count" => Op::Count,
                _ => return None,
            },
        ),
        _ => return None,
    };
    if collection.is_empty() || collection.contains('%') {
        return None;
    }
    Some(((*collection).to_string(), op))
}

fn and(acl: &Value, caller: Option<&Value>) -> Value {
    match caller {
        None | Some(Value::Null) => acl.clone(),
        Some(c) => json!({ "must": [acl, c] }),
    }
}

/// Inject into every filter of a query, recursively through `prefetch`.
fn inject_query(m: &mut Map<String, Value>, acl: &Value) {
    let f = and(acl, m.get("filter"));
    m.insert("filter".into(), f);
    match m.get_mut("prefetch") {
        Some(Value::Array(items)) => {
            for p in items.iter_mut() {
                if let Value::Object(pm) = p {
                    inject_query(pm, acl);
                }
            }
        }
        Some(Value::Object(pm)) => inject_query(pm, acl),
        _ => {}
    }
}

/// What the request rewrite did: payload fields the filter added (to strip from the answer).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rewritten {
    /// `with_payload` was off: the whole payload is stripped again.
    pub strip_payload: bool,
    /// Fields added to an include list (or removed from an exclude list): stripped again.
    pub strip_fields: Vec<String>,
}

/// Rewrite a read: the ACL AND-ed into its filters (the root and every prefetch of a query),
/// and `with_payload` widened so the ACL fields come back for the check. Errors: not a JSON
/// object, or an ACL that can never match (answer empty instead of sending it).
pub fn rewrite_request(op: Op, body: &mut Value, acl: &Acl) -> Result<Rewritten, String> {
    let Value::Object(m) = body else {
        return Err("the request body is not a JSON object".into());
    };
    let Some(filter) = acl.qdrant_filter() else {
        return Err("the caller's identity matches no document".into());
    };
    match op {
        Op::Query => inject_query(m, &filter),
        Op::Search | Op::Recommend | Op::Scroll | Op::Count => {
            let f = and(&filter, m.get("filter"));
            m.insert("filter".into(), f);
        }
        Op::Retrieve => {}
    }
    if op == Op::Count {
        return Ok(Rewritten::default());
    }
    // Scroll and retrieve return payloads by default; the others do not.
    let default_on = matches!(op, Op::Scroll | Op::Retrieve);
    let fields: Vec<String> = acl.fields().iter().map(|f| f.to_string()).collect();
    let mut out = Rewritten::default();
    let wp = m.get("with_payload").cloned();
    let new = match wp {
        None | Some(Value::Null) if default_on => None,
        Some(Value::Bool(true)) => None,
        None | Some(Value::Null) | Some(Value::Bool(false)) => {
            out.strip_payload = true;
            Some(json!({ "include": fields }))
        }
        Some(Value::Array(list)) => Some(Value::Array(widen(list, &fields, &mut out))),
        Some(Value::Object(mut o)) => {
            if let Some(Value::Array(list)) = o.remove("include") {
                o.insert(
                    "include".into(),
                    Value::Array(widen(list, &fields, &mut out)),
                );
            } else if let Some(Value::Array(list)) = o.get_mut("exclude") {
                list.retain(|v| {
                    let hit = v.as_str().is_some_and(|s| fields.iter().any(|f| f == s));
                    if hit {
                        out.strip_fields
                            .push(v.as_str().unwrap_or_default().to_string());
                    }
                    !hit
                });
            }
            Some(Value::Object(o))
        }
        Some(_) => return Err("with_payload is not a boolean, list or object".into()),
    };
    if let Some(n) = new {
        m.insert("with_payload".into(), n);
    }
    Ok(out)
}

fn widen(mut list: Vec<Value>, fields: &[String], out: &mut Rewritten) -> Vec<Value> {
    for f in fields {
        if !list.iter().any(|v| v.as_str() == Some(f)) {
            list.push(json!(f));
            out.strip_fields.push(f.clone());
        }
    }
    list
}

/// Re-check the points of an answer: a point whose payload fails the ACL is removed (a
/// prevented leak), then what the rewrite added is stripped. Returns how many were removed.
/// Errors: not a Qdrant answer.
pub fn check_response(
    op: Op,
    body: &mut Value,
    acl: &Acl,
    rewritten: &Rewritten,
) -> Result<usize, String> {
    let result = body
        .get_mut("result")
        .ok_or_else(|| "the answer has no result".to_string())?;
    let points = match op {
        Op::Count => return Ok(0),
        Op::Query | Op::Scroll => result.get_mut("points").and_then(Value::as_array_mut),
        Op::Search | Op::Recommend | Op::Retrieve => result.as_array_mut(),
    }
    .ok_or_else(|| "the answer has no points".to_string())?;
    let before = points.len();
    points.retain(|p| acl.allows(p.get("payload")));
    let removed = before - points.len();
    for p in points.iter_mut() {
        let Some(pm) = p.as_object_mut() else {
            continue;
        };
        if rewritten.strip_payload {
            pm.remove("payload");
        } else if let Some(Value::Object(payload)) = pm.get_mut("payload") {
            for f in &rewritten.strip_fields {
                payload.remove(f);
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::acl::Rule;

    fn acl() -> Acl {
        Acl {
            rules: vec![
                Rule::Equals {
                    field: "tenant".into(),
                    value: json!("A"),
                },
                Rule::AnyOf {
                    field: "acl_groups".into(),
                    values: vec![json!("finance")],
                },
            ],
        }
    }

    fn acl_filter() -> Value {
        json!({"must":[{"key":"tenant","match":{"value":"A"}},{"key":"acl_groups","match":{"any":["finance"]}}]})
    }

    #[test]
    fn classifies_reads_only() {
        let cases = [
            ("POST", "/collections/docs/points/query", Some(Op::Query)),
            ("POST", "/collections/docs/points/search", Some(Op::Search)),
            (
                "POST",
                "/collections/docs/points/recommend",
                Some(Op::Recommend),
            ),
            (
                "POST",
                "/collections/docs/points/scroll?wait=true",
                Some(Op::Scroll),
            ),
            ("POST", "/collections/docs/points/count", Some(Op::Count)),
            ("POST", "/collections/docs/points", Some(Op::Retrieve)),
            ("PUT", "/collections/docs/points", None),
            ("POST", "/collections/docs/points/delete", None),
            ("POST", "/collections/docs/points/query/batch", None),
            ("POST", "/collections/docs/points/payload", None),
            ("GET", "/collections/docs/points/7", None),
            ("POST", "/collections/%64ocs/points/query", None),
        ];
        for (method, path, want) in cases {
            assert_eq!(classify(method, path).map(|c| c.1), want, "{method} {path}");
        }
    }

    #[test]
    fn the_acl_is_anded_into_every_filter_of_recorded_requests() {
        let a = acl_filter();
        // Verbatim request bodies from Qdrant's docs (docs/rag-acl-facts.md §3.2).
        let mut search = json!({"filter":{"must":[{"key":"city","match":{"value":"London"}}]},"params":{"hnsw_ef":128,"exact":false},"vector":[0.2,0.1,0.9,0.7],"limit":3});
        rewrite_request(Op::Search, &mut search, &acl()).unwrap();
        assert_eq!(
            search["filter"],
            json!({"must":[a, {"must":[{"key":"city","match":{"value":"London"}}]}]})
        );
        let mut widening = json!({"query":[0.2,0.1,0.9,0.7],"filter":{"should":[{"key":"tenant","match":{"value":"B"}},{"key":"city","match":{"value":"London"}}]},"limit":3,"with_payload":true});
        rewrite_request(Op::Query, &mut widening, &acl()).unwrap();
        assert_eq!(widening["filter"]["must"][0], a);
        let mut hybrid = json!({"prefetch":[{"query":[0.01,0.45,0.67,0.1],"using":"dense","limit":20},{"query":{"indices":[1,42],"values":[0.22,0.8]},"using":"sparse","limit":20}],"query":{"fusion":"rrf"},"limit":10});
        let rw = rewrite_request(Op::Query, &mut hybrid, &acl()).unwrap();
        assert_eq!(hybrid["filter"], a);
        assert_eq!(hybrid["prefetch"][0]["filter"], a);
        assert_eq!(hybrid["prefetch"][1]["filter"], a);
        // Payload was off: the ACL fields are asked for, and stripped again later.
        assert_eq!(
            hybrid["with_payload"],
            json!({"include":["tenant","acl_groups"]})
        );
        assert!(rw.strip_payload);
        let mut scroll = json!({"limit":256,"offset":42,"with_payload":{"include":["title"]},"with_vector":false});
        let rw = rewrite_request(Op::Scroll, &mut scroll, &acl()).unwrap();
        assert_eq!(scroll["filter"], a);
        assert_eq!(
            scroll["with_payload"],
            json!({"include":["title","tenant","acl_groups"]})
        );
        assert_eq!(rw.strip_fields, vec!["tenant", "acl_groups"]);
        let mut retrieve = json!({"ids":["5c56c793-69f3-4fbf-87e6-c4bf54c28c26"],"with_payload":{"exclude":["tenant"]},"with_vector":false});
        let rw = rewrite_request(Op::Retrieve, &mut retrieve, &acl()).unwrap();
        assert!(retrieve.get("filter").is_none());
        assert_eq!(retrieve["with_payload"], json!({"exclude":[]}));
        assert_eq!(rw.strip_fields, vec!["tenant"]);
        // A caller without groups matches nothing: never sent.
        let nobody = Acl {
            rules: vec![Rule::AnyOf {
                field: "acl_groups".into(),
                values: vec![],
            }],
        };
        assert!(rewrite_request(Op::Query, &mut json!({}), &nobody).is_err());
    }

    #[test]
    fn returned_points_are_rechecked_and_added_fields_stripped() {
        let rw = Rewritten {
            strip_payload: false,
            strip_fields: vec!["acl_groups".into()],
        };
        let mut query = json!({"result":{"points":[
            {"id":10,"version":3,"score":0.81,"payload":{"tenant":"A","acl_groups":["finance"],"title":"t"}},
            {"id":14,"version":1,"score":0.75,"payload":{"tenant":"B","acl_groups":["finance"]}},
            {"id":15,"version":1,"score":0.7,"payload":{"tenant":["A","B"],"acl_groups":["finance"]}}]},
            "status":"ok","time":0.002});
        assert_eq!(
            check_response(Op::Query, &mut query, &acl(), &rw).unwrap(),
            2
        );
        assert_eq!(
            query["result"]["points"],
            json!([{"id":10,"version":3,"score":0.81,"payload":{"tenant":"A","title":"t"}}])
        );
        let strip_all = Rewritten {
            strip_payload: true,
            strip_fields: vec![],
        };
        let mut search = json!({"result":[{"id":1,"score":0.9,"payload":{"tenant":"A","acl_groups":["finance"]}},
            {"id":2,"score":0.8,"payload":{"tenant":"A","acl_groups":["hr"]}},{"id":3,"score":0.7}],"status":"ok","time":0.001});
        assert_eq!(
            check_response(Op::Search, &mut search, &acl(), &strip_all).unwrap(),
            2
        );
        assert_eq!(search["result"], json!([{"id":1,"score":0.9}]));
        assert!(check_response(
            Op::Scroll,
            &mut json!({"status":{"error":"x"}}),
            &acl(),
            &rw
        )
        .is_err());
    }
}
