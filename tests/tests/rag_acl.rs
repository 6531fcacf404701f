//! rag-acl end to end: the shipped `envoy/rag-acl.yaml` (header_mutation → jwt_authn with a
//! test JWKS → rag-acl) in front of a real Chroma server (PyPI `chromadb`, `chroma run` on
//! loopback, telemetry off), seeded with documents of two tenants and several groups. Tests pass
//! explicit embeddings: Chroma's default embedder would download a model.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use e2e::{hs256_jwks, hs256_jwt, Chroma, Client, Env, Resp, Spec};
use serde_json::{json, Value};
use std::collections::BTreeSet;

const BASE: &str = "/api/v2/tenants/default_tenant/databases/default_database";
const KID: &str = "test";

/// (id, embedding, metadata). Who may read what (tenant, any group, clearance at most):
/// alice (A; finance, eng; 2) reads a1 a2; erin (A; hr; 3) reads a3; bob (B; finance; 3) b1.
fn records() -> Vec<(&'static str, [f64; 3], Value)> {
    vec![
        (
            "a1",
            [1.0, 0.0, 0.0],
            json!({"tenant":"A","acl_groups":["finance","eng"],"clearance":2}),
        ),
        (
            "a2",
            [0.9, 0.1, 0.0],
            json!({"tenant":"A","acl_groups":["eng"],"clearance":1}),
        ),
        (
            "a3",
            [0.0, 1.0, 0.0],
            json!({"tenant":"A","acl_groups":["hr"],"clearance":3}),
        ),
        (
            "a4",
            [0.8, 0.2, 0.0],
            json!({"tenant":"A","acl_groups":["finance"],"clearance":5}),
        ),
        (
            "b1",
            [1.0, 0.0, 0.01],
            json!({"tenant":"B","acl_groups":["finance"],"clearance":1}),
        ),
        (
            "b2",
            [0.0, 0.0, 1.0],
            json!({"tenant":"B","acl_groups":["eng"],"clearance":0}),
        ),
    ]
}

struct Setup {
    _chroma: Chroma,
    env: Env,
    key: Vec<u8>,
    collection: String,
    chroma: Client,
}

async fn seed(chroma: &Client, name: &str) -> String {
    let r = chroma
        .post(
            &format!("{BASE}/collections"),
            json!({"name": name}).to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json().unwrap()["id"].as_str().unwrap().to_string();
    let recs = records();
    let body = json!({
        "ids": recs.iter().map(|r| r.0).collect::<Vec<_>>(),
        "embeddings": recs.iter().map(|r| r.1.to_vec()).collect::<Vec<_>>(),
        "metadatas": recs.iter().map(|r| r.2.clone()).collect::<Vec<_>>(),
        "documents": recs.iter().map(|r| format!("document {}", r.0)).collect::<Vec<_>>(),
    });
    let r = chroma
        .post(&format!("{BASE}/collections/{id}/add"), body.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status == 201 || r.status == 200, "{}", r.text());
    id
}

async fn setup_with(swaps: &[(&str, &str)]) -> Setup {
    let chroma = Chroma::start().await.unwrap();
    let client = chroma.client();
    let collection = seed(&client, "docs").await;
    seed(&client, "secret").await;
    let key: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let dir = std::env::temp_dir().join(format!(
        "rag-acl-jwks-{}-{}",
        std::process::id(),
        chroma.addr.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, hs256_jwks(&key, KID)).unwrap();
    let mut spec = Spec::shipped_file("envoy/rag-acl.yaml")
        .swap(
            "port_value: 8000",
            &format!("port_value: {}", chroma.addr.port()),
        )
        .swap(
            "filename: envoy/rag-acl/demo-jwks.json",
            &format!("filename: {}", jwks.display()),
        );
    for (from, to) in swaps {
        spec = spec.swap(from, to);
    }
    let env = Env::start(spec).await.unwrap();
    Setup {
        _chroma: chroma,
        env,
        key,
        collection,
        chroma: client,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Setup {
    fn token(&self, claims: Value) -> String {
        let mut c = json!({"iss": "https://issuer.demo", "aud": "vectordb", "exp": now() + 600});
        for (k, v) in claims.as_object().unwrap() {
            c[k] = v.clone();
        }
        hs256_jwt(&self.key, KID, &c)
    }
    fn alice(&self) -> String {
        self.token(json!({"sub":"alice","tenant":"A","groups":["finance","eng"],"clearance":2,"roles":["reader"]}))
    }
    fn bob_writer(&self) -> String {
        self.token(json!({"sub":"bob","tenant":"B","groups":["finance","eng"],"clearance":3,"roles":["reader","writer"]}))
    }
    fn carol_writer(&self) -> String {
        self.token(
            json!({"sub":"carol","tenant":"A","groups":["eng"],"clearance":3,"roles":["writer"]}),
        )
    }

    async fn call(
        &self,
        method: &str,
        op: &str,
        token: Option<&str>,
        body: Option<Value>,
        rid: &str,
    ) -> Resp {
        let path = if op.starts_with('/') {
            op.to_string()
        } else {
            format!("{BASE}/collections/{}/{op}", self.collection)
        };
        let mut req = self
            .env
            .client()
            .request(method, &path, body.map(|b| b.to_string().into_bytes()))
            .header("x-request-id", rid);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.send().await.unwrap()
    }
}

/// Every id of a get (flat) or query (nested) answer.
fn ids(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for x in v["ids"].as_array().unwrap() {
        match x {
            Value::String(s) => {
                out.insert(s.clone());
            }
            Value::Array(inner) => {
                out.extend(inner.iter().map(|s| s.as_str().unwrap().to_string()))
            }
            _ => panic!("bad ids {v}"),
        }
    }
    out
}

/// Status and reason code of an answer (a refusal in Chroma's error shape).
fn refusal(r: &Resp) -> (u16, Value) {
    let code = r.json().map(|v| v["code"].clone()).unwrap_or(Value::Null);
    (r.status, code)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn a_tenant_never_receives_another_tenants_documents() {
    let s = setup_with(&[]).await;
    let alice = s.alice();
    let q = |w: Option<Value>| {
        let mut b =
            json!({"query_embeddings": [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], "n_results": 10});
        if let Some(w) = w {
            b["where"] = w;
        }
        b
    };
    let cases: Vec<(&str, &str, Value)> = vec![
        ("no filter", "query", q(None)),
        (
            "own filter",
            "query",
            q(Some(json!({"clearance": {"$gte": 0}}))),
        ),
        (
            "$or that tries to widen",
            "query",
            q(Some(
                json!({"$or": [{"tenant": "B"}, {"tenant": "A"}, {"acl_groups": {"$contains": "hr"}}]}),
            )),
        ),
        (
            "$ne that tries to widen",
            "query",
            q(Some(json!({"tenant": {"$ne": "nobody"}}))),
        ),
        ("empty filter", "get", json!({"where": {}})),
        (
            "B's ids directly",
            "get",
            json!({"ids": ["b1", "b2", "a3", "a1"]}),
        ),
        (
            "B's ids in a query",
            "query",
            json!({"query_embeddings": [[1.0, 0.0, 0.0]], "n_results": 5, "ids": ["b1", "b2", "a2"]}),
        ),
    ];
    for (i, (name, op, body)) in cases.into_iter().enumerate() {
        let r = s
            .call("POST", op, Some(&alice), Some(body), &format!("read-{i}"))
            .await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let v = r.json().unwrap();
        let got = ids(&v);
        let want = match name {
            "B's ids directly" => set(&["a1"]),
            "B's ids in a query" => set(&["a2"]),
            _ => set(&["a1", "a2"]),
        };
        assert_eq!(got, want, "{name}: {v}");
        // Every metadata that comes back is the caller's.
        for m in v["metadatas"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| match m {
                Value::Array(inner) => inner.clone(),
                other => vec![other.clone()],
            })
        {
            assert_eq!(m["tenant"], "A", "{name}: {v}");
        }
        let rec = s
            .env
            .audit_record("rag_acl", &format!("read-{i}"))
            .await
            .unwrap();
        assert_eq!(rec["decision"], "modify", "{name}: {rec}");
        assert_eq!(rec["operation"], op, "{rec}");
        assert_eq!(rec["collection"], "docs", "{rec}");
        assert_eq!(rec["identity"], "alice", "{rec}");
    }

    // Metadata the caller did not ask for is requested for the check and stripped again.
    let r = s
        .call("POST", "query", Some(&alice), Some(json!({"query_embeddings": [[1.0, 0.0, 0.0]], "n_results": 10, "include": ["documents"]})), "no-meta")
        .await;
    let v = r.json().unwrap();
    assert_eq!(ids(&v), set(&["a1", "a2"]), "{v}");
    assert!(v["metadatas"].is_null(), "{v}");
    assert_eq!(v["include"], json!(["documents"]), "{v}");

    // Another tenant, other groups: other documents.
    let erin =
        s.token(json!({"sub":"erin","tenant":"A","groups":["hr"],"clearance":3,"roles":"reader"}));
    let r = s
        .call("POST", "get", Some(&erin), Some(json!({})), "erin")
        .await;
    assert_eq!(ids(&r.json().unwrap()), set(&["a3"]));
    let bob = s.bob_writer();
    let r = s
        .call(
            "POST",
            "get",
            Some(&bob),
            Some(json!({"where": {"tenant": "A"}})),
            "bob-asks-for-a",
        )
        .await;
    assert_eq!(ids(&r.json().unwrap()), set(&[]), "{}", r.text());
    let r = s
        .call("POST", "get", Some(&bob), Some(json!({})), "bob")
        .await;
    assert_eq!(ids(&r.json().unwrap()), set(&["b1", "b2"]));

    let stats = s.env.stats().await.unwrap();
    assert!(
        stats.contains("wasmcustom.guard.rag_acl.collection.docs.op.query.queries_rewritten: 6"),
        "{stats}"
    );
    s.env.finish();
}

#[tokio::test]
async fn identity_roles_and_collections_are_enforced() {
    let s = setup_with(&[]).await;
    let body = json!({"query_embeddings": [[1.0, 0.0, 0.0]], "n_results": 3});

    // jwt_authn answers 401 before the filter: no token, an expired one, a bad signature.
    let r = s
        .call("POST", "query", None, Some(body.clone()), "no-token")
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let expired = hs256_jwt(
        &s.key,
        KID,
        &json!({"iss":"https://issuer.demo","aud":"vectordb","exp": now() - 3600,"tenant":"A","groups":["eng"],"clearance":1,"roles":"reader"}),
    );
    let r = s
        .call(
            "POST",
            "query",
            Some(&expired),
            Some(body.clone()),
            "expired",
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let forged = hs256_jwt(
        b"another key entirely, 32 bytes!",
        KID,
        &json!({"iss":"https://issuer.demo","aud":"vectordb","exp": now() + 60,"tenant":"B","groups":["eng"],"clearance":9,"roles":"reader"}),
    );
    let r = s
        .call("POST", "query", Some(&forged), Some(body.clone()), "forged")
        .await;
    assert_eq!(r.status, 401, "{}", r.text());

    // A claim the policy needs but the token lacks: 403 naming it.
    let no_tenant = s.token(json!({"sub":"dave","groups":["eng"],"clearance":1,"roles":"reader"}));
    let r = s
        .call(
            "POST",
            "query",
            Some(&no_tenant),
            Some(body.clone()),
            "no-tenant",
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let v = r.json().unwrap();
    assert_eq!(v["code"], "missing_claim", "{v}");
    assert!(v["message"].as_str().unwrap().contains("\"tenant\""), "{v}");
    assert_eq!(v["error"], "Forbidden", "Chroma's error shape: {v}");

    // A role without the operation; an endpoint nobody may use; a collection outside the policy.
    let alice = s.alice();
    let r = s
        .call("POST", "add", Some(&alice), Some(json!({"ids":["x"],"embeddings":[[1,0,0]],"metadatas":[{"tenant":"A","acl_groups":["eng"],"clearance":1}]})), "reader-writes")
        .await;
    assert_eq!(refusal(&r), (403, json!("operation_denied")));
    let r = s
        .call("POST", "/api/v2/reset", Some(&alice), None, "reset")
        .await;
    assert_eq!(refusal(&r), (403, json!("unknown_operation")));
    let r = s
        .call("POST", "search", Some(&alice), Some(json!({})), "search")
        .await;
    assert_eq!(refusal(&r), (403, json!("unknown_operation")));
    let r = s
        .call(
            "GET",
            &format!("{BASE}/collections/secret"),
            Some(&alice),
            None,
            "secret-by-name",
        )
        .await;
    assert_eq!(refusal(&r), (403, json!("collection_not_allowed")));
    let secret_id = s
        .chroma
        .get(&format!("{BASE}/collections/secret"))
        .send()
        .await
        .unwrap()
        .json()
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .call(
            "POST",
            &format!("{BASE}/collections/{secret_id}/query"),
            Some(&alice),
            Some(body.clone()),
            "secret-by-id",
        )
        .await;
    assert_eq!(
        refusal(&r),
        (403, json!("collection_not_allowed")),
        "{}",
        r.text()
    );
    // Listing collections shows only the covered ones; the name lookup works for clients.
    let r = s
        .call(
            "GET",
            &format!("{BASE}/collections"),
            Some(&alice),
            None,
            "list",
        )
        .await;
    let names: Vec<String> = r
        .json()
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["docs".to_string()]);
    let r = s
        .call(
            "GET",
            &format!("{BASE}/collections/docs"),
            Some(&alice),
            None,
            "by-name",
        )
        .await;
    assert_eq!(r.json().unwrap()["id"], s.collection.as_str());
    // Counting would reveal other tenants' totals: admins only.
    let r = s.call("GET", "count", Some(&alice), None, "count").await;
    assert_eq!(r.status, 403, "{}", r.text());

    // A client-supplied identity header never reaches anything (stripped before jwt_authn).
    let r = s
        .env
        .client()
        .post(&format!("{BASE}/collections/{}/get", s.collection), "{}")
        .header("authorization", format!("Bearer {alice}"))
        .header(
            "x-jwt-payload",
            e2e::b64url(br#"{"sub":"mallory","tenant":"B"}"#),
        )
        .header("x-request-id", "forged-header")
        .send()
        .await
        .unwrap();
    assert_eq!(ids(&r.json().unwrap()), set(&["a1", "a2"]));
    let rec = s
        .env
        .audit_record("rag_acl", "forged-header")
        .await
        .unwrap();
    assert_eq!(rec["identity"], "alice", "{rec}");

    let rec = s.env.audit_record("rag_acl", "no-tenant").await.unwrap();
    assert_eq!(
        (rec["decision"].clone(), rec["reasons"].clone()),
        (json!("block"), json!(["missing_claim"])),
        "{rec}"
    );
    let stats = s.env.stats().await.unwrap();
    for want in [
        "wasmcustom.guard.rag_acl.collection.none.op.add.operations_refused: 1",
        "wasmcustom.guard.rag_acl.collection.other.op.query.operations_refused: 1",
        "wasmcustom.guard.rag_acl.collection.none.op.query.operations_refused: 1",
        "wasmcustom.guard.rag_acl.collection.none.op.unknown.operations_refused: 2",
    ] {
        assert!(stats.contains(want), "{want} missing:\n{stats}");
    }
    s.env.finish();
}

#[tokio::test]
async fn writes_stay_within_the_writers_tenant() {
    let s = setup_with(&[]).await;
    let bob = s.bob_writer();
    let carol = s.carol_writer();
    let add = |id: &str, meta: Value| json!({"ids":[id],"embeddings":[[0.5,0.5,0.0]],"metadatas":[meta],"documents":[format!("new {id}")]});

    // Adding a record for another tenant, or without the access metadata: refused.
    let r = s
        .call(
            "POST",
            "add",
            Some(&bob),
            Some(add(
                "x1",
                json!({"tenant":"A","acl_groups":["finance"],"clearance":1}),
            )),
            "add-cross",
        )
        .await;
    assert_eq!(refusal(&r), (403, json!("acl_violation")), "{}", r.text());
    let r = s
        .call(
            "POST",
            "add",
            Some(&bob),
            Some(json!({"ids":["x2"],"embeddings":[[0.5,0.5,0.0]]})),
            "add-bare",
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    // Within the tenant: accepted, and readable by its owner.
    let r = s
        .call(
            "POST",
            "add",
            Some(&bob),
            Some(add(
                "b3",
                json!({"tenant":"B","acl_groups":["eng"],"clearance":1}),
            )),
            "add-own",
        )
        .await;
    assert!(r.status == 201 || r.status == 200, "{}", r.text());

    // Updating or upserting a record of another tenant: refused (ownership looked up).
    let r = s
        .call(
            "POST",
            "update",
            Some(&bob),
            Some(json!({"ids":["a2"],"documents":["defaced"]})),
            "update-cross",
        )
        .await;
    assert_eq!(refusal(&r), (403, json!("not_owner")), "{}", r.text());
    let r = s
        .call(
            "POST",
            "upsert",
            Some(&bob),
            Some(add(
                "a1",
                json!({"tenant":"B","acl_groups":["eng"],"clearance":1}),
            )),
            "upsert-cross",
        )
        .await;
    assert_eq!(refusal(&r), (403, json!("not_owner")), "{}", r.text());
    // Moving one's own record to another tenant: refused (merged metadata re-checked).
    let r = s
        .call(
            "POST",
            "update",
            Some(&bob),
            Some(json!({"ids":["b3"],"metadatas":[{"tenant":"A"}]})),
            "update-move",
        )
        .await;
    assert_eq!(refusal(&r), (403, json!("acl_violation")), "{}", r.text());
    // An update of one's own record: accepted.
    let r = s
        .call(
            "POST",
            "update",
            Some(&bob),
            Some(json!({"ids":["b3"],"documents":["edited"],"metadatas":[{"clearance":2}]})),
            "update-own",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Deleting another tenant's records deletes nothing: the ACL is in the delete's where.
    let r = s
        .call(
            "POST",
            "delete",
            Some(&carol),
            Some(json!({"ids":["b1","b2","b3"]})),
            "delete-cross",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The database itself (asked directly, not through Envoy) shows what happened.
    let all = s
        .chroma
        .post(
            &format!("{BASE}/collections/{}/get", s.collection),
            json!({"include":["metadatas","documents"]}).to_string(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .unwrap();
    let stored = ids(&all);
    assert_eq!(
        stored,
        set(&["a1", "a2", "a3", "a4", "b1", "b2", "b3"]),
        "{all}"
    );
    let pos = |id: &str| {
        all["ids"]
            .as_array()
            .unwrap()
            .iter()
            .position(|x| x == id)
            .unwrap()
    };
    assert_eq!(all["documents"][pos("a2")], "document a2");
    assert_eq!(all["metadatas"][pos("a1")]["tenant"], "A");
    assert_eq!(all["metadatas"][pos("b3")]["tenant"], "B");
    assert_eq!(all["metadatas"][pos("b3")]["clearance"], 2);
    assert_eq!(all["documents"][pos("b3")], "edited");
    // And a writer deletes their own.
    let r = s
        .call(
            "POST",
            "delete",
            Some(&bob),
            Some(json!({"ids":["b3","a1"]})),
            "delete-own",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let left = s
        .chroma
        .post(&format!("{BASE}/collections/{}/get", s.collection), "{}")
        .send()
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ids(&left), set(&["a1", "a2", "a3", "a4", "b1", "b2"]));

    let stats = s.env.stats().await.unwrap();
    for want in [
        "wasmcustom.guard.rag_acl.collection.docs.op.add.operations_refused: 2",
        "wasmcustom.guard.rag_acl.collection.docs.op.update.operations_refused: 2",
        "wasmcustom.guard.rag_acl.collection.docs.op.upsert.operations_refused: 1",
        "wasmcustom.guard.rag_acl.collection.docs.op.delete.queries_rewritten: 2",
    ] {
        assert!(stats.contains(want), "{want} missing:\n{stats}");
    }
    s.env.finish();
}

/// With the rewrite off (the measuring mode), the result check alone removes what fails: the
/// prevented-leak counter and the record show it.
#[tokio::test]
async fn the_result_check_removes_what_the_database_returned() {
    let s = setup_with(&[(r#""rewrite": true"#, r#""rewrite": false"#)]).await;
    let alice = s.alice();
    let r = s
        .call("POST", "query", Some(&alice), Some(json!({"query_embeddings": [[1.0, 0.0, 0.0]], "n_results": 6, "include": ["documents", "distances"]})), "check-only")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json().unwrap();
    assert_eq!(ids(&v), set(&["a1", "a2"]), "{v}");
    assert_eq!(
        v["documents"][0].as_array().unwrap().len(),
        2,
        "parallel arrays cut too: {v}"
    );
    assert_eq!(v["distances"][0].as_array().unwrap().len(), 2, "{v}");
    assert!(v["metadatas"].is_null(), "{v}");
    let rec = s.env.audit_record("rag_acl", "check-only").await.unwrap();
    assert_eq!(rec["results_removed"], 4, "{rec}");
    assert_eq!(
        (rec["decision"].clone(), rec["reasons"].clone()),
        (json!("modify"), json!(["leak_prevented"])),
        "{rec}"
    );
    let stats = s.env.stats().await.unwrap();
    assert!(
        stats.contains("wasmcustom.guard.rag_acl.collection.docs.op.query.results_removed: 4"),
        "{stats}"
    );
    s.env.finish();
}

/// Identity from a trusted claims header (`jwt_authn`'s `forward_payload_header`) instead of
/// metadata: a client's own copy of the header never counts (the chain drops it before
/// `jwt_authn`, which writes the verified payload).
#[tokio::test]
async fn claims_from_a_trusted_header_cannot_be_forged() {
    let s = setup_with(&[(
        r#""identity": { "jwt": { "payload_key": "jwt_payload" } }"#,
        r#""identity": { "claims_header": "x-jwt-payload" }"#,
    )])
    .await;
    let forged = e2e::b64url(
        json!({"sub":"mallory","tenant":"B","groups":["finance","eng"],"clearance":9,"roles":["reader"]})
            .to_string()
            .as_bytes(),
    );
    let body = json!({"query_embeddings": [[1.0, 0.0, 0.0]], "n_results": 10});
    let r = s
        .env
        .client()
        .post(
            &format!("{BASE}/collections/{}/query", s.collection),
            body.to_string(),
        )
        .header("authorization", format!("Bearer {}", s.alice()))
        .header("x-jwt-payload", &forged)
        .header("x-request-id", "forged-claims")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ids(&r.json().unwrap()), set(&["a1", "a2"]));
    let rec = s
        .env
        .audit_record("rag_acl", "forged-claims")
        .await
        .unwrap();
    assert_eq!(rec["identity"], "alice", "{rec}");
    // Without a token the forged header alone gets nowhere.
    let r = s
        .env
        .client()
        .post(
            &format!("{BASE}/collections/{}/query", s.collection),
            body.to_string(),
        )
        .header("x-jwt-payload", &forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    s.env.finish();
}
