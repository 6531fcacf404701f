//! The web console against the real binary: login, escaping, excerpt masking and bounds, CSRF.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{default_flags, Reply, Service, TempDir, CLIENT, OPS, PII};
use serde_json::json;

/// The value of `name="NAME" value="..."` in a page.
fn hidden(page: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker)? + marker.len();
    let end = page[start..].find('"')?;
    Some(page[start..start + end].to_owned())
}

/// `name=value` of a set-cookie header named `name`.
fn set_cookie(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers_named("set-cookie")
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// Signs in through the form; returns the `cookie` header value.
fn login(svc: &Service, token: &str) -> String {
    let form = svc.request("GET", "/login", &[], b"");
    assert_eq!(form.status, 200);
    let nonce = hidden(&form.text(), "csrf").unwrap();
    let login_cookie = set_cookie(&form, "approval_login").unwrap();
    let login_cookie = login_cookie.split(';').next().unwrap();
    let body = format!("token={token}&csrf={nonce}");
    let r = svc.request(
        "POST",
        "/login",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", login_cookie),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/"));
    let session = set_cookie(&r, "approval_session").unwrap();
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Strict"), "{session}");
    session.split(';').next().unwrap().to_owned()
}

fn get(svc: &Service, path: &str, cookie: &str) -> Reply {
    svc.request("GET", path, &[("cookie", cookie)], b"")
}

fn post_form(svc: &Service, path: &str, cookie: &str, body: &str) -> Reply {
    svc.request(
        "POST",
        path,
        &[
            ("cookie", cookie),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        body.as_bytes(),
    )
}

#[test]
fn login_sets_a_session_cookie() {
    let dir = TempDir::new();
    let svc = Service::start(&dir.db(), &default_flags());
    // Not signed in: to the login page.
    let r = svc.request("GET", "/", &[], b"");
    assert_eq!((r.status, r.header("location")), (303, Some("/login")));
    // The login form carries a CSRF token; without it (or with another) no session.
    let form = svc.request("GET", "/login", &[], b"");
    let nonce = hidden(&form.text(), "csrf").unwrap();
    let r = svc.request(
        "POST",
        "/login",
        &[],
        format!("token={OPS}&csrf={nonce}").as_bytes(),
    );
    assert_eq!(r.status, 403);
    assert!(set_cookie(&r, "approval_session").is_none());
    // Wrong token.
    let cookie = set_cookie(&form, "approval_login").unwrap();
    let cookie = cookie.split(';').next().unwrap();
    let r = post_form(
        &svc,
        "/login",
        cookie,
        &format!("token=nope-nope-nope&csrf={nonce}"),
    );
    assert_eq!(r.status, 401);
    assert!(set_cookie(&r, "approval_session").is_none());

    let session = login(&svc, OPS);
    let r = get(&svc, "/", &session);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("signed in as <b>ops</b>"), "{}", r.text());
    let r = get(&svc, "/history", &session);
    assert_eq!(r.status, 200);
    // A forged session id is nobody.
    let r = get(&svc, "/", "approval_session=00112233");
    assert_eq!(r.status, 303);

    // Sign out: needs the CSRF token too.
    let page = get(&svc, "/logout", &session);
    let csrf = hidden(&page.text(), "csrf").unwrap();
    assert_eq!(post_form(&svc, "/logout", &session, "").status, 403);
    let r = post_form(&svc, "/logout", &session, &format!("csrf={csrf}"));
    assert_eq!((r.status, r.header("location")), (303, Some("/login")));
    assert_eq!(get(&svc, "/", &session).status, 303);
}

#[test]
fn pages_escape_values_and_mask_the_excerpt() {
    let dir = TempDir::new();
    let svc = Service::start(&dir.db(), &default_flags());
    let id = svc.create(json!({
        "tool": "<b>tool</b>",
        "caller": "<img src=x onerror=alert(1)>",
        "arguments": {"note": "<script>alert(1)</script>", "amount": 1500},
        "excerpt": "mail [EMAIL] about \"it\"",
        "excerpt_raw": "mail bob@example.com about \"it\"",
        "rule": "r&d",
    }));
    let ops = login(&svc, OPS);
    let pia = login(&svc, PII);

    let r = get(&svc, &format!("/approvals/{id}"), &ops);
    assert_eq!(r.status, 200);
    let page = r.text();
    for raw in ["<script>", "<b>tool</b>", "<img", "r&d"] {
        assert!(!page.contains(raw), "unescaped {raw:?} in {page}");
    }
    // Pretty-printed and escaped arguments.
    assert!(
        page.contains("  &quot;note&quot;: &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;"),
        "{page}"
    );
    assert!(page.contains("&lt;b&gt;tool&lt;/b&gt;"));
    assert!(page.contains("r&amp;d"));
    assert!(page.contains("mail [EMAIL] about &quot;it&quot;"));
    assert!(!page.contains("bob@example.com"), "ops must not see PII");
    assert!(page.contains("left)"), "time left shown: {page}");
    assert!(page.contains("value=\"approve\"") && page.contains("name=\"reason\""));

    let page = get(&svc, &format!("/approvals/{id}"), &pia).text();
    assert!(
        page.contains("mail bob@example.com about &quot;it&quot;"),
        "{page}"
    );

    // Listed on the home page, escaped.
    let home = get(&svc, "/", &ops).text();
    assert!(home.contains(&format!("/approvals/{id}")));
    assert!(home.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(!home.contains("<img"));

    // Bearer tokens work for the console too (no CSRF needed: browsers do not send them).
    let r = svc.request(
        "GET",
        &format!("/approvals/{id}"),
        &[("authorization", &format!("Bearer {PII}"))],
        b"",
    );
    assert!(r.text().contains("bob@example.com"));
    let r = get(&svc, "/approvals/ffff", &ops);
    assert_eq!(r.status, 404);
}

/// The excerpt part of a detail page: its heading and its text.
fn excerpt_of(page: &str) -> String {
    let start = page.find("<h2>Conversation excerpt").unwrap();
    let end = page[start..].find("</pre>").unwrap();
    page[start..start + end].to_owned()
}

#[test]
fn the_service_masks_excerpts_itself() {
    let dir = TempDir::new();
    let svc = Service::start(&dir.db(), &default_flags());
    let values = ["bob@example.com", "4111 1111 1111 1111", "+1 415 555 0100"];
    let raw = format!(
        "mail {} the receipt, pay with {} and call {} if it fails",
        values[0], values[1], values[2]
    );
    let masked = "mail [EMAIL] the receipt, pay with [CREDIT_CARD] and call [PHONE] if it fails";
    // The filter sends only the real text.
    let only_raw = svc.create(json!({"excerpt_raw": raw, "excerpt": null}));
    // A client-sent masked excerpt is ignored when the raw one is given.
    let both = svc.create(json!({"excerpt_raw": raw, "excerpt": "trust me"}));
    // A client-sent unmasked excerpt is masked too (and there is no raw one to show).
    let unmasked = svc.create(json!({"excerpt": raw}));
    let ops = login(&svc, OPS);
    let pia = login(&svc, PII);

    for id in [&only_raw, &both, &unmasked] {
        let page = get(&svc, &format!("/approvals/{id}"), &ops).text();
        let excerpt = excerpt_of(&page);
        assert!(excerpt.contains("(masked)"), "{excerpt}");
        assert!(excerpt.contains(masked), "{excerpt}");
        for v in values {
            assert!(!page.contains(v), "ops sees {v:?}: {excerpt}");
        }
        assert!(!page.contains("trust me"));
    }
    for id in [&only_raw, &both] {
        let excerpt = excerpt_of(&get(&svc, &format!("/approvals/{id}"), &pia).text());
        assert!(
            excerpt.contains("(unmasked: your role may see PII)"),
            "{excerpt}"
        );
        assert!(excerpt.contains(&raw), "{excerpt}");
    }
    // The API's JSON has no excerpt at all.
    let r = svc.client("GET", &format!("/v1/approvals/{only_raw}"), None);
    assert_eq!(r.status, 200);
    let j = r.json();
    assert!(
        j.get("excerpt").is_none() && j.get("excerpt_raw").is_none(),
        "{j}"
    );
    for v in values {
        assert!(!r.text().contains(v), "{v:?} in {j}");
    }
    // Without a raw excerpt even a PII role sees the masked one, labelled so.
    let excerpt = excerpt_of(&get(&svc, &format!("/approvals/{unmasked}"), &pia).text());
    assert!(excerpt.contains("(masked)"), "{excerpt}");
    assert!(excerpt.contains(masked), "{excerpt}");
    for v in values {
        assert!(!excerpt.contains(v), "{excerpt}");
    }
}

#[test]
fn long_excerpts_keep_their_last_8_kib() {
    let dir = TempDir::new();
    let svc = Service::start(&dir.db(), &default_flags());
    let raw = format!(
        "{}card 4111 1111 1111 1111 in the last message",
        "old message. ".repeat(4000)
    );
    let id = svc.create(json!({"excerpt_raw": raw}));
    let pia = login(&svc, PII);
    let ops = login(&svc, OPS);
    let excerpt = excerpt_of(&get(&svc, &format!("/approvals/{id}"), &pia).text());
    let text = &excerpt[excerpt.find("<pre>").unwrap() + 5..];
    assert!(text.starts_with('…'), "{}", &text[..20]);
    assert!(text.len() <= 8 * 1024, "{}", text.len());
    assert!(text.ends_with("card 4111 1111 1111 1111 in the last message"));
    let excerpt = excerpt_of(&get(&svc, &format!("/approvals/{id}"), &ops).text());
    assert!(excerpt.ends_with("card [CREDIT_CARD] in the last message"));
}

#[test]
fn decide_form_needs_the_csrf_token() {
    let dir = TempDir::new();
    let svc = Service::start(&dir.db(), &default_flags());
    let id = svc.create(json!({}));
    let ops = login(&svc, OPS);
    let pia = login(&svc, PII);
    let path = format!("/approvals/{id}/decision");
    let csrf = hidden(&get(&svc, &format!("/approvals/{id}"), &ops).text(), "csrf").unwrap();
    let pia_csrf = hidden(&get(&svc, &format!("/approvals/{id}"), &pia).text(), "csrf").unwrap();
    assert_ne!(csrf, pia_csrf, "tokens are per session");

    for body in [
        "decision=approve&reason=x".to_owned(),
        "decision=approve&reason=x&csrf=".to_owned(),
        format!("decision=approve&reason=x&csrf={pia_csrf}"),
    ] {
        let r = post_form(&svc, &path, &ops, &body);
        assert_eq!(r.status, 403, "{body}");
    }
    // Not signed in at all.
    let r = post_form(
        &svc,
        &path,
        "approval_session=forged",
        &format!("decision=approve&csrf={csrf}"),
    );
    assert_eq!(r.status, 401);
    let r = svc.client("GET", &format!("/v1/approvals/{id}"), None);
    assert_eq!(
        r.json()["status"],
        "pending",
        "nothing decided without a valid token"
    );

    let r = post_form(
        &svc,
        &path,
        &ops,
        &format!("decision=approve&reason=fine+by+me%21&csrf={csrf}"),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let r = svc.client("GET", &format!("/v1/approvals/{id}"), None);
    let j = r.json();
    assert_eq!(j["status"], "approved");
    assert_eq!(j["decided_by"], "ops");
    assert_eq!(j["reason"], "fine by me!");

    // Single use: the second decision gets a 409 page.
    let r = post_form(
        &svc,
        &path,
        &pia,
        &format!("decision=deny&reason=no&csrf={pia_csrf}"),
    );
    assert_eq!(r.status, 409);
    assert!(r.text().contains("Already decided"));

    // The audit trail names who created, who decided and why.
    let history = get(&svc, "/history", &ops).text();
    for want in ["created", "approved", "fine by me!", "alice", "<b>ops</b>"] {
        assert!(history.contains(want), "{want:?} missing in {history}");
    }
}

#[test]
fn identity_headers_get_a_csrf_token_too() {
    let dir = TempDir::new();
    let mut flags = default_flags();
    flags.push("--trust-identity-headers".to_owned());
    let svc = Service::start(&dir.db(), &flags);
    let id = svc.create(json!({}));
    let who = [
        ("x-approver", "carol"),
        ("x-approver-roles", "approver+pii"),
    ];
    let page = svc
        .request("GET", &format!("/approvals/{id}"), &who, b"")
        .text();
    let csrf = hidden(&page, "csrf").unwrap();
    let path = format!("/approvals/{id}/decision");
    let r = svc.request("POST", &path, &who, b"decision=deny&reason=nope");
    assert_eq!(r.status, 403);
    let r = svc.request(
        "POST",
        &path,
        &who,
        format!("decision=deny&reason=nope&csrf={csrf}").as_bytes(),
    );
    assert_eq!(r.status, 303);
    let r = svc.request(
        "GET",
        &format!("/v1/approvals/{id}"),
        &[("x-approval-client-token", CLIENT)],
        b"",
    );
    assert_eq!(
        (r.json()["status"].clone(), r.json()["decided_by"].clone()),
        (json!("denied"), json!("carol"))
    );
}
