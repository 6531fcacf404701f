//! The review queue against the real binary: what a guard filter's `fallback.escalate` posts,
//! who may read, list and resolve reviews, and the console pages (masked excerpts, CSRF). The
//! approval endpoints are untouched by it (tests/api.rs, tests/console.rs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{default_flags, Reply, Service, TempDir, OPS, PII};
use serde_json::{json, Value};

/// What the driver of a guard filter posts (guard-host `escalation_call`).
fn escalation() -> Value {
    json!({
        "trigger": "flagged_answer",
        "reason": "schema_violation",
        "request_id": "req-42",
        "caller": "alice",
        "filter": "schema_guard",
        "policy": "default/default",
        "route": "llm",
        "api": "openai_chat",
        "model": "gpt-test",
        "http_status": 502,
        "excerpt_raw": "user: mail bob@example.com the report\n\nassistant: <b>not json</b>",
    })
}

fn create(svc: &Service, body: &Value) -> String {
    let r = svc.client("POST", "/v1/reviews", Some(body));
    assert_eq!(r.status, 201, "{}", r.text());
    let j = r.json();
    assert_eq!(j["status"], "open");
    assert!(j["created_at"].as_i64().unwrap() > 0);
    j["id"].as_str().unwrap().to_owned()
}

#[test]
fn a_filter_creates_a_review_and_reads_it_back() {
    let dir = TempDir::new();
    let svc = Service::start(&dir.db(), &default_flags());
    let id = create(&svc, &escalation());
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    let r = svc.client("GET", &format!("/v1/reviews/{id}"), None);
    assert_eq!(r.status, 200);
    let j = r.json();
    let created = j["created_at"].clone();
    assert_eq!(
        j,
        json!({
            "id": id, "kind": "review", "status": "open", "trigger": "flagged_answer",
            "reason": "schema_violation", "filter": "schema_guard", "policy": "default/default",
            "route": "llm", "api": "openai_chat", "model": "gpt-test", "http_status": 502,
            "caller": "alice", "request_id": "req-42", "created_at": created,
            "resolved_at": null, "resolved_by": null, "note": null,
        })
    );
    // The API never shows an excerpt.
    assert!(!r.text().contains("bob@example.com"));
    // Approvers may read it too.
    assert_eq!(
        svc.approver(OPS, "GET", &format!("/v1/reviews/{id}"), None)
            .status,
        200
    );
    // Minimal body: an upstream failure without excerpt.
    let id2 = create(
        &svc,
        &json!({"trigger": "upstream_failure", "reason": "upstream_failure"}),
    );
    assert_ne!(id, id2);
}

#[test]
fn bad_reviews_and_callers_are_refused() {
    let dir = TempDir::new();
    let svc = Service::start(&dir.db(), &default_flags());
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "bad trigger",
            json!({"trigger": "whim", "reason": "x"}),
            400,
            "trigger",
        ),
        (
            "no reason",
            json!({"trigger": "flagged_answer", "reason": ""}),
            400,
            "reason",
        ),
        (
            "unknown field",
            json!({"trigger": "flagged_answer", "reason": "x", "status": 502}),
            400,
            "unknown field",
        ),
        (
            "long field",
            json!({"trigger": "flagged_answer", "reason": "x", "caller": "c".repeat(300)}),
            400,
            "caller",
        ),
    ];
    for (name, body, status, needle) in cases {
        let r = svc.client("POST", "/v1/reviews", Some(&body));
        assert_eq!(r.status, status, "{name}: {}", r.text());
        assert!(
            r.json()["message"].as_str().unwrap().contains(needle),
            "{name}"
        );
    }
    // Without the client token.
    let r = svc.request(
        "POST",
        "/v1/reviews",
        &[("content-type", "application/json")],
        escalation().to_string().as_bytes(),
    );
    assert_eq!(r.status, 401);
    // Reading needs the token or an approver; listing and resolving need an approver.
    let id = create(&svc, &escalation());
    assert_eq!(
        svc.request("GET", &format!("/v1/reviews/{id}"), &[], b"")
            .status,
        401
    );
    assert_eq!(svc.client("GET", "/v1/reviews", None).status, 401);
    assert_eq!(
        svc.client(
            "POST",
            &format!("/v1/reviews/{id}/resolve"),
            Some(&json!({}))
        )
        .status,
        401
    );
    assert_eq!(
        svc.client("GET", "/v1/reviews/0123456789abcdef", None)
            .status,
        404
    );
    assert_eq!(svc.client("GET", "/v1/reviews/not-hex!", None).status, 404);
    assert_eq!(
        svc.client("DELETE", &format!("/v1/reviews/{id}"), None)
            .status,
        405
    );
}

#[test]
fn approvers_list_and_resolve_reviews_once() {
    let dir = TempDir::new();
    let svc = Service::start(&dir.db(), &default_flags());
    let a = create(&svc, &escalation());
    let b = create(
        &svc,
        &json!({"trigger": "upstream_failure", "reason": "upstream_failure", "request_id": "req-43"}),
    );
    let ids = |status: &str| -> Vec<String> {
        let r = svc.approver(OPS, "GET", &format!("/v1/reviews?status={status}"), None);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["reviews"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut open = ids("open");
    open.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(open, want);
    let r = svc.approver(
        OPS,
        "POST",
        &format!("/v1/reviews/{a}/resolve"),
        Some(&json!({"note": "called the customer back"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["status"], "resolved");
    assert_eq!(j["resolved_by"], "ops");
    assert_eq!(j["note"], "called the customer back");
    assert!(j["resolved_at"].as_i64().unwrap() >= j["created_at"].as_i64().unwrap());
    // Once only.
    let r = svc.approver(
        PII,
        "POST",
        &format!("/v1/reviews/{a}/resolve"),
        Some(&json!({})),
    );
    assert_eq!(r.status, 409);
    assert_eq!(r.error(), "already_resolved");
    assert_eq!(ids("open"), vec![b.clone()]);
    assert_eq!(ids("resolved"), vec![a.clone()]);
    assert_eq!(ids("all").len(), 2);
    let r = svc.approver(OPS, "GET", "/v1/reviews?status=maybe", None);
    assert_eq!(r.status, 400);
    // A resolution must be JSON (no cross-site form posts).
    let r = svc.request(
        "POST",
        &format!("/v1/reviews/{b}/resolve"),
        &[
            ("authorization", &format!("Bearer {OPS}")),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        b"note=x",
    );
    assert_eq!(r.status, 415);
    // Approvals are untouched by reviews.
    let id = svc.create(json!({}));
    assert_eq!(
        svc.client("GET", &format!("/v1/approvals/{id}"), None)
            .json()["status"],
        "pending"
    );
}

/// The `cookie` header value of a console session (the login form, with its CSRF nonce).
fn login(svc: &Service, token: &str) -> String {
    let form = svc.request("GET", "/login", &[], b"");
    let page = form.text();
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).unwrap() + marker.len();
    let nonce = &page[start..start + page[start..].find('"').unwrap()];
    let login_cookie = form
        .headers_named("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("approval_login="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let r = svc.request(
        "POST",
        "/login",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", &login_cookie),
        ],
        format!("token={token}&csrf={nonce}").as_bytes(),
    );
    assert_eq!(r.status, 303);
    r.headers_named("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("approval_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

fn page(svc: &Service, path: &str, cookie: &str) -> Reply {
    svc.request("GET", path, &[("cookie", cookie)], b"")
}

#[test]
fn the_console_lists_reviews_with_masked_excerpts_and_resolves_them() {
    let dir = TempDir::new();
    let svc = Service::start(&dir.db(), &default_flags());
    let id = create(&svc, &escalation());
    let ops = login(&svc, OPS);
    // Home: the open review with its reason, request id, caller and masked excerpt.
    let home = page(&svc, "/", &ops).text();
    assert!(home.contains(&format!("href=\"/reviews/{id}\"")), "{home}");
    let row = &home[home.find(&format!("/reviews/{id}")).unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    for want in [
        "schema_violation",
        "flagged_answer",
        "req-42",
        "alice",
        "[EMAIL]",
    ] {
        assert!(row.contains(want), "{want} in {row}");
    }
    assert!(!home.contains("bob@example.com"));
    // Escaped, never raw HTML.
    assert!(row.contains("&lt;b&gt;not json&lt;/b&gt;"), "{row}");
    // Detail: masked for ops, unmasked for the PII role.
    let detail = page(&svc, &format!("/reviews/{id}"), &ops).text();
    assert!(detail.contains("Excerpt (masked)"), "{detail}");
    assert!(detail.contains("user: mail [EMAIL] the report"), "{detail}");
    assert!(!detail.contains("bob@example.com"));
    let pia = login(&svc, PII);
    let detail_pii = page(&svc, &format!("/reviews/{id}"), &pia).text();
    assert!(detail_pii.contains("bob@example.com"), "{detail_pii}");
    // Resolve through the form: the CSRF token is required.
    let path = format!("/reviews/{id}/resolve");
    let r = svc.request(
        "POST",
        &path,
        &[
            ("cookie", &ops),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        b"note=done",
    );
    assert_eq!(r.status, 403);
    let marker = "name=\"csrf\" value=\"";
    let start = detail.find(marker).unwrap() + marker.len();
    let csrf = &detail[start..start + detail[start..].find('"').unwrap()];
    let r = svc.request(
        "POST",
        &path,
        &[
            ("cookie", &ops),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        format!("note=phoned+back&csrf={csrf}").as_bytes(),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let after = page(&svc, &format!("/reviews/{id}"), &ops).text();
    assert!(
        after.contains("phoned back") && after.contains("resolved"),
        "{after}"
    );
    assert!(!after.contains("Mark resolved"));
    // Listed as resolved, gone from the home page's open reviews.
    let list = page(&svc, "/reviews", &ops).text();
    let resolved = &list[list.find("<h2>Resolved</h2>").unwrap()..];
    assert!(resolved.contains(&format!("/reviews/{id}")));
    let home = page(&svc, "/", &ops).text();
    assert!(home.contains("No open reviews."), "{home}");
    // Signed out: to the login page.
    let r = svc.request("GET", "/reviews", &[], b"");
    assert_eq!(r.status, 303);
}
