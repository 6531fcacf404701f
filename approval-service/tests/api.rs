//! The JSON API against the real binary (docs/approval-api.md).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::time::{Duration, Instant};

use common::{default_flags, Service, TempDir, CLIENT, DIGEST, OPS, PII};
use serde_json::json;

fn approve(svc: &Service, id: &str, token: &str) -> common::Reply {
    svc.approver(
        token,
        "POST",
        &format!("/v1/approvals/{id}/decision"),
        Some(&json!({"decision": "approve", "reason": "looks fine"})),
    )
}

#[test]
fn create_get_and_healthz() {
    let dir = TempDir::new();
    let svc = Service::start(&dir.db(), &default_flags());
    let r = svc.request("GET", "/healthz", &[], b"");
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    let id = svc.create(json!({}));
    let r = svc.client("GET", &format!("/v1/approvals/{id}"), None);
    assert_eq!(r.status, 200);
    let j = r.json();
    for (k, v) in [
        ("id", json!(id)),
        ("status", json!("pending")),
        ("tool", json!("payments.send")),
        ("arguments", json!({"amount": 1500, "currency": "EUR"})),
        ("digest", json!(DIGEST)),
        ("caller", json!("alice")),
        ("conversation", json!("conv-1")),
        ("rule", json!("big-payments")),
        ("mode", json!("defer")),
        ("request_id", json!("req-1")),
        ("decided_at", json!(null)),
        ("decided_by", json!(null)),
        ("reason", json!(null)),
        ("consumed_at", json!(null)),
    ] {
        assert_eq!(j[k], v, "field {k}");
    }
    assert!(j["expires_at"].as_i64().unwrap() > j["created_at"].as_i64().unwrap());
    assert!(
        j.get("excerpt").is_none(),
        "excerpts are for the console only"
    );
    // An approver may read it too.
    let r = svc.approver(OPS, "GET", &format!("/v1/approvals/{id}"), None);
    assert_eq!(r.status, 200);
    // Unknown ids.
    for path in [
        "/v1/approvals/00ff",
        "/v1/approvals/not-an-id",
        "/v1/approvals/0/wait",
    ] {
        let r = svc.client("GET", path, None);
        assert_eq!((r.status, r.error().as_str()), (404, "not_found"), "{path}");
    }
}

#[test]
fn create_validation() {
    let dir = TempDir::new();
    let svc = Service::start(&dir.db(), &default_flags());
    let base =
        json!({"tool": "t", "arguments": {}, "digest": DIGEST, "mode": "hold", "expires_in_s": 60});
    let cases: &[(&str, serde_json::Value, u16)] = &[
        ("ok", json!({}), 201),
        ("expires 0", json!({"expires_in_s": 0}), 400),
        ("expires 86400", json!({"expires_in_s": 86400}), 201),
        ("expires 86401", json!({"expires_in_s": 86401}), 400),
        (
            "digest upper",
            json!({"digest": DIGEST.to_uppercase()}),
            400,
        ),
        ("digest short", json!({"digest": "abc"}), 400),
        ("mode", json!({"mode": "later"}), 400),
        ("unknown field", json!({"color": "red"}), 400),
        ("empty tool", json!({"tool": ""}), 400),
    ];
    for (name, patch, status) in cases {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = svc.client("POST", "/v1/approvals", Some(&body));
        assert_eq!(r.status, *status, "{name}: {}", r.text());
        if *status == 400 {
            assert_eq!(r.error(), "bad_request", "{name}");
        }
    }
    // Body bound: 256 KiB exactly fits (then fails as JSON), one byte more is refused.
    for (len, status, code) in [
        (256 * 1024, 400, "bad_request"),
        (256 * 1024 + 1, 413, "body_too_large"),
    ] {
        let big = "x".repeat(len);
        let r = svc.request(
            "POST",
            "/v1/approvals",
            &[("x-approval-client-token", CLIENT)],
            big.as_bytes(),
        );
        assert_eq!(
            (r.status, r.error().as_str()),
            (status, code),
            "{len} bytes"
        );
    }
}

#[test]
fn client_token_is_enforced() {
    let dir = TempDir::new();
    let svc = Service::start(&dir.db(), &default_flags());
    let id = svc.create(json!({}));
    let body =
        json!({"tool": "t", "arguments": {}, "digest": DIGEST, "mode": "hold", "expires_in_s": 60})
            .to_string();
    for token in [None, Some("wrong"), Some(OPS)] {
        let headers: Vec<(&str, &str)> = token
            .map(|t| vec![("x-approval-client-token", t)])
            .unwrap_or_default();
        for (method, path, body) in [
            ("POST", "/v1/approvals".to_owned(), body.as_str()),
            ("GET", format!("/v1/approvals/{id}"), ""),
            ("GET", format!("/v1/approvals/{id}/wait?timeout_ms=0"), ""),
            (
                "POST",
                format!("/v1/approvals/{id}/consume"),
                "{\"digest\":\"x\"}",
            ),
        ] {
            let r = svc.request(method, &path, &headers, body.as_bytes());
            assert_eq!(
                (r.status, r.error().as_str()),
                (401, "unauthorized"),
                "{method} {path} with {token:?}"
            );
        }
    }
    // Without --client-token the filter endpoints are open.
    let open_dir = TempDir::new();
    let open = Service::start(&open_dir.db(), &[]);
    let r = open.request("POST", "/v1/approvals", &[], body.as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn decide_auth_and_single_use() {
    let dir = TempDir::new();
    let svc = Service::start(&dir.db(), &default_flags());
    let id = svc.create(json!({}));
    let path = format!("/v1/approvals/{id}/decision");
    let body = json!({"decision": "approve", "reason": "ok"}).to_string();
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong-token-xyz")],
        vec![("x-approval-client-token", CLIENT)],
        // Identity headers count only with --trust-identity-headers.
        vec![("x-approver", "mallory"), ("x-approver-roles", "approver")],
    ] {
        let r = svc.request("POST", &path, &headers, body.as_bytes());
        assert_eq!(
            (r.status, r.error().as_str()),
            (401, "unauthorized"),
            "{headers:?}"
        );
    }
    let r = svc.approver(OPS, "POST", &path, Some(&json!({"decision": "maybe"})));
    assert_eq!(r.status, 400);
    // Not JSON by content type (what a cross-site form could send): refused.
    let auth = format!("Bearer {OPS}");
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend(ct.map(|c| ("content-type", c)));
        let r = svc.request("POST", &path, &headers, body.as_bytes());
        assert_eq!(
            (r.status, r.error().as_str()),
            (415, "unsupported_media_type"),
            "{ct:?}"
        );
    }
    let r = approve(&svc, &id, OPS);
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["status"], "approved");
    assert_eq!(j["decided_by"], "ops");
    assert_eq!(j["reason"], "looks fine");
    assert!(j["decided_at"].as_i64().unwrap() > 0);
    // Single use, whoever tries and whatever they decide.
    let r = svc.approver(PII, "POST", &path, Some(&json!({"decision": "deny"})));
    assert_eq!((r.status, r.error().as_str()), (409, "already_decided"));
    let r = svc.client("GET", &format!("/v1/approvals/{id}"), None);
    assert_eq!(r.json()["status"], "approved");

    let id2 = svc.create(json!({}));
    let r = svc.approver(
        PII,
        "POST",
        &format!("/v1/approvals/{id2}/decision"),
        Some(&json!({"decision": "deny", "reason": "no"})),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        (r.json()["status"].clone(), r.json()["decided_by"].clone()),
        (json!("denied"), json!("pia"))
    );
}

#[test]
fn trusted_identity_headers() {
    let dir = TempDir::new();
    let mut flags = default_flags();
    flags.push("--trust-identity-headers".to_owned());
    let svc = Service::start(&dir.db(), &flags);
    let id = svc.create(json!({}));
    let r = svc.request(
        "POST",
        &format!("/v1/approvals/{id}/decision"),
        &[
            ("x-approver", "carol"),
            ("x-approver-roles", "approver"),
            ("content-type", "application/json"),
        ],
        br#"{"decision":"approve"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["decided_by"], "carol");
}

#[test]
fn wait_returns_when_decided_and_after_timeout() {
    let dir = TempDir::new();
    let svc = Service::start(&dir.db(), &default_flags());
    let id = svc.create(json!({}));

    // Still pending: answers after the timeout with the pending record.
    let t = Instant::now();
    let r = svc.client(
        "GET",
        &format!("/v1/approvals/{id}/wait?timeout_ms=300"),
        None,
    );
    let took = t.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "pending");
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // Bounds.
    let r = svc.client(
        "GET",
        &format!("/v1/approvals/{id}/wait?timeout_ms=120001"),
        None,
    );
    assert_eq!(r.status, 400);
    let r = svc.client(
        "GET",
        &format!("/v1/approvals/{id}/wait?timeout_ms=abc"),
        None,
    );
    assert_eq!(r.status, 400);

    // Decided from another thread while waiting: answers promptly.
    let addr = svc.addr.clone();
    let wid = id.clone();
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        let r = common::request(
            &addr,
            "GET",
            &format!("/v1/approvals/{wid}/wait?timeout_ms=20000"),
            &[("x-approval-client-token", CLIENT)],
            b"",
        );
        (r, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(approve(&svc, &id, OPS).status, 200);
    let (r, took) = waiter.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "approved");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "woken by the decision, not the 1 s re-check"
    );

    // Already decided: answers at once.
    let t = Instant::now();
    let r = svc.client("GET", &format!("/v1/approvals/{id}/wait"), None);
    assert_eq!(r.json()["status"], "approved");
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn expiry() {
    let dir = TempDir::new();
    let svc = Service::start(&dir.db(), &default_flags());
    let id = svc.create(json!({"expires_in_s": 1}));
    let waited = svc.create(json!({"expires_in_s": 1}));
    // A wait notices the expiry by itself.
    let t = Instant::now();
    let r = svc.client(
        "GET",
        &format!("/v1/approvals/{waited}/wait?timeout_ms=5000"),
        None,
    );
    assert_eq!(r.json()["status"], "expired");
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
    let r = svc.client("GET", &format!("/v1/approvals/{id}"), None);
    assert_eq!(r.json()["status"], "expired");
    let r = approve(&svc, &id, OPS);
    assert_eq!((r.status, r.error().as_str()), (410, "expired"));
    let r = svc.client(
        "POST",
        &format!("/v1/approvals/{id}/consume"),
        Some(&json!({"digest": DIGEST})),
    );
    assert_eq!((r.status, r.error().as_str()), (409, "expired"));
    // Stored as expired: still so after a restart.
    svc.stop();
    let svc = Service::start(&dir.db(), &default_flags());
    let r = svc.client("GET", &format!("/v1/approvals/{id}"), None);
    assert_eq!(r.json()["status"], "expired");
}

#[test]
fn consume() {
    let dir = TempDir::new();
    let svc = Service::start(&dir.db(), &default_flags());
    let id = svc.create(json!({}));
    let path = format!("/v1/approvals/{id}/consume");
    let wrong = "f".repeat(64);
    let r = svc.client("POST", &path, Some(&json!({"digest": DIGEST})));
    assert_eq!((r.status, r.error().as_str()), (409, "not_approved"));
    assert_eq!(approve(&svc, &id, OPS).status, 200);
    let r = svc.client("POST", &path, Some(&json!({"digest": wrong})));
    assert_eq!((r.status, r.error().as_str()), (409, "digest_mismatch"));
    let r = svc.client("POST", &path, Some(&json!({"digest": DIGEST})));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "consumed");
    assert!(r.json()["consumed_at"].as_i64().unwrap() > 0);
    let r = svc.client("POST", &path, Some(&json!({"digest": DIGEST})));
    assert_eq!((r.status, r.error().as_str()), (409, "already_used"));

    // Denied: not approved.
    let denied = svc.create(json!({}));
    let r = svc.approver(
        OPS,
        "POST",
        &format!("/v1/approvals/{denied}/decision"),
        Some(&json!({"decision": "deny"})),
    );
    assert_eq!(r.status, 200);
    let r = svc.client(
        "POST",
        &format!("/v1/approvals/{denied}/consume"),
        Some(&json!({"digest": DIGEST})),
    );
    assert_eq!((r.status, r.error().as_str()), (409, "not_approved"));

    // Concurrent consumes: exactly one succeeds.
    let id = svc.create(json!({}));
    assert_eq!(approve(&svc, &id, OPS).status, 200);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let addr = svc.addr.clone();
            let path = format!("/v1/approvals/{id}/consume");
            std::thread::spawn(move || {
                common::request(
                    &addr,
                    "POST",
                    &path,
                    &[("x-approval-client-token", CLIENT)],
                    json!({"digest": DIGEST}).to_string().as_bytes(),
                )
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        7,
        "{statuses:?}"
    );
}

#[test]
fn restart_loses_nothing() {
    let dir = TempDir::new();
    let svc = Service::start(&dir.db(), &default_flags());
    let pending = svc.create(json!({}));
    let decided = svc.create(json!({}));
    assert_eq!(approve(&svc, &decided, OPS).status, 200);
    svc.stop();
    let svc = Service::start(&dir.db(), &default_flags());
    let r = svc.client("GET", &format!("/v1/approvals/{pending}"), None);
    assert_eq!(r.json()["status"], "pending");
    let r = svc.client("GET", &format!("/v1/approvals/{decided}"), None);
    assert_eq!(
        (r.json()["status"].clone(), r.json()["decided_by"].clone()),
        (json!("approved"), json!("ops"))
    );
    let r = approve(&svc, &pending, PII);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["decided_by"], "pia");
}

#[test]
fn bad_usage_exits_2() {
    let dir = TempDir::new();
    let db = dir.db();
    let db = db.to_str().unwrap();
    let cases: &[&[&str]] = &[
        &[],
        &["--db"],
        &["--db", db, "--addr", "nonsense"],
        &["--db", db, "--approver-token", "ops:approver"],
        &["--db", db, "--approver-token", "ops:approver:short"],
        &["--db", db, "--bogus"],
    ];
    for args in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_approval-service"))
            .args(*args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("usage:"), "{args:?}: {err}");
    }
}
