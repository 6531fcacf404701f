//! rag-acl on Chroma: request routing, the `where` rewrite, the result re-check and the write
//! checks, on arbitrary paths and bodies, under an ACL the header picks.
//!
//! Input: header, then `path \0 request body \0 answer body`.
//!
//! Invariants (the crate's contract):
//! - a record operation routes as `Record` with the same target; no routed segment is empty or
//!   percent-encoded;
//! - the rewritten `where` is the ACL alone or `{"$and": [ACL, caller's where]}`: a caller's
//!   filter can only narrow it; reads ask for `metadatas` when they said it was added;
//! - after the re-check no record left in a `get` / `query` answer fails the ACL, and the
//!   parallel arrays keep their lengths equal;
//! - an accepted `add` / `upsert` carries passing metadata for every id; an accepted write's
//!   stored records (and an update's merged metadata) pass the ACL.
#![no_main]

use guard_fuzz::Headed;
use libfuzzer_sys::fuzz_target;
use rag_acl::acl::{Acl, Rule};
use rag_acl::chroma::{
    check_owned, check_response, check_written, classify, rewrite_request, route, Op, Route,
};
use serde_json::{json, Value};

const OPS: [Op; 7] = [Op::Get, Op::Query, Op::Count, Op::Add, Op::Upsert, Op::Update, Op::Delete];
const PARALLEL: [&str; 6] = ["ids", "embeddings", "documents", "uris", "metadatas", "distances"];

fn acl(bits: u8) -> Acl {
    let mut rules = Vec::new();
    if bits & 1 != 0 {
        let value = if bits & 0x10 != 0 { json!(2) } else { json!("A") };
        rules.push(Rule::Equals { field: "tenant".into(), value });
    }
    if bits & 2 != 0 {
        let values = if bits & 0x20 != 0 { vec![] } else { vec![json!("finance"), json!("eng")] };
        rules.push(Rule::AnyOf { field: "acl_groups".into(), values });
    }
    if bits & 4 != 0 {
        let values = if bits & 0x40 != 0 { vec![] } else { vec![json!("eu"), json!(1)] };
        rules.push(Rule::In { field: "region".into(), values });
    }
    if bits & 8 != 0 {
        rules.push(Rule::AtMost { field: "clearance".into(), value: 2.0 });
    }
    Acl { rules }
}

/// Array `key` of `obj` (or its `q`-th inner array).
fn arr<'a>(obj: &'a Value, key: &str, q: Option<usize>) -> Option<&'a Vec<Value>> {
    let v = obj.get(key)?;
    match q {
        None => v.as_array(),
        Some(q) => v.get(q)?.as_array(),
    }
}

fn check_records(answer: &Value, before: &Value, acl: &Acl, q: Option<usize>) {
    let Some(ids) = arr(answer, "ids", q) else { return };
    for i in 0..ids.len() {
        let m = arr(answer, "metadatas", q).and_then(|m| m.get(i));
        assert!(acl.allows(m), "record {i} of query {q:?} fails the ACL after the re-check");
    }
    let n_before = arr(before, "ids", q).map_or(0, Vec::len);
    for key in PARALLEL {
        if arr(before, key, q).map(Vec::len) == Some(n_before) {
            assert_eq!(arr(answer, key, q).map(Vec::len), Some(ids.len()), "{key} of query {q:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(h) = Headed::split(data) else { return };
    let parts = guard_fuzz::parts(h.payload, 3);
    let path = String::from_utf8_lossy(parts.first().copied().unwrap_or_default());
    let method = ["GET", "POST", "PUT", "DELETE"][usize::from(h.ctl[0] & 3)];
    let acl = acl(h.ctl[1]);
    let op = OPS[usize::from(h.ctl[2]) % OPS.len()];

    // Routing.
    let target = classify(method, &path);
    let routed = route(method, &path);
    if let Some(t) = &target {
        assert_eq!(routed.as_ref(), Some(&Route::Record(t.clone())));
        for s in [&t.tenant, &t.database, &t.collection] {
            assert!(!s.is_empty() && !s.contains('%') && !s.contains('/'), "segment {s:?}");
        }
    }
    if let Some(r) = &routed {
        let _ = r.op();
    }

    // The where rewrite.
    let body: Option<Value> = parts.get(1).and_then(|b| serde_json::from_slice(b).ok());
    if let Some(original) = body {
        let mut body = original.clone();
        match rewrite_request(op, &mut body, &acl) {
            Ok(added) => {
                let w = &body["where"];
                let acl_where = acl.chroma_where();
                match original.get("where") {
                    None | Some(Value::Null) => assert_eq!(w, &acl_where),
                    Some(Value::Object(m)) if m.is_empty() => assert_eq!(w, &acl_where),
                    Some(caller) => assert_eq!(w, &json!({"$and": [acl_where, caller]})),
                }
                if added {
                    assert!(matches!(op, Op::Get | Op::Query));
                    let inc = body["include"].as_array().expect("include");
                    assert!(inc.iter().any(|i| i == "metadatas"));
                }
                // Nothing but `where` and `include` changed.
                let (Value::Object(a), Value::Object(b)) = (&original, &body) else {
                    panic!("body is no longer an object")
                };
                for (k, v) in a {
                    if k != "where" && k != "include" {
                        assert_eq!(b.get(k), Some(v), "{k} changed");
                    }
                }
            }
            Err(_) => assert!(!original.is_object() || original.get("include").is_some_and(|i| !i.is_array() && !i.is_null())),
        }

        // Write checks on the same body.
        if let Ok(ids) = check_written(op, &original, &acl, 64) {
            if matches!(op, Op::Add | Op::Upsert) {
                let metas = original.get("metadatas").and_then(Value::as_array);
                for i in 0..ids.len() {
                    assert!(acl.allows(metas.and_then(|m| m.get(i))), "accepted write {i} fails the ACL");
                }
            }
        }
        if let Some(stored) = parts.get(2).and_then(|b| serde_json::from_slice::<Value>(b).ok()) {
            if check_owned(op, &original, &stored, &acl).is_ok() {
                let metas = stored.get("metadatas").and_then(Value::as_array);
                let n = stored.get("ids").and_then(Value::as_array).map_or(0, Vec::len);
                for i in 0..n {
                    assert!(acl.allows(metas.and_then(|m| m.get(i))), "stored record {i} is not the caller's");
                }
            }
        }
    }

    // The result re-check.
    if let Some(answer) = parts.get(2).and_then(|b| serde_json::from_slice::<Value>(b).ok()) {
        let mut checked = answer.clone();
        let read = if h.flag(2) { Op::Query } else { Op::Get };
        if check_response(read, &mut checked, &acl, false).is_ok() {
            match read {
                Op::Get => check_records(&checked, &answer, &acl, None),
                _ => {
                    let n = answer.get("ids").and_then(Value::as_array).map_or(0, Vec::len);
                    for q in 0..n {
                        check_records(&checked, &answer, &acl, Some(q));
                    }
                }
            }
        }
        let mut stripped = answer;
        if check_response(read, &mut stripped, &acl, true).is_ok() {
            assert_eq!(stripped["metadatas"], Value::Null, "metadata not stripped");
        }
    }
});
