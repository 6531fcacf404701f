//! MCP `tools/call` gating through the shared driver on the recording fake host: allow, deny,
//! hold (long polls until a decision, an expiry or a service failure) and defer (a retry naming
//! its approval passes only through the service's consume with the call's digest).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use approval_gate::digest::approval_digest;
use approval_gate::ApprovalGate;
use guard_core::config::FilterConfig;
use guard_host::driver::{Action, GuardFilter, GuardStream};
use guard_host::fake::FakeHost;
use guard_host::host::{Dir, Host};
use serde_json::{json, Value};
use std::rc::Rc;

const CONFIG: &str = r#"{
  "identity": {"header": "x-user"},
  "policies": {"default": {
    "rules": [
      {"id": "big-payments", "tools": ["pay*"], "when": [{"pointer": "/amount", "op": "gt", "value": 1000}], "outcome": "require_approval"},
      {"id": "no-deletes", "tools": ["delete_*"], "outcome": "deny"}
    ],
    "service": {"cluster": "approvals", "timeout_ms": 1500},
    "hold_max_ms": 60000,
    "MODE": "hold"
  }}
}"#;

fn config(mode: &str, extra: &str) -> String {
    CONFIG.replace(r#""MODE": "hold""#, &format!(r#""mode": "{mode}"{extra}"#))
}

fn stream(cfg: &str) -> (Rc<FakeHost>, GuardStream<ApprovalGate>) {
    common::gate(cfg)
}

fn rpc(tool: &str, args: Value, meta: Option<Value>) -> Vec<u8> {
    let mut params = json!({"name": tool, "arguments": args});
    if let Some(m) = meta {
        params["_meta"] = m;
    }
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params})
        .to_string()
        .into_bytes()
}

/// Send the request; returns what the body callback said.
fn send(host: &FakeHost, s: &mut GuardStream<ApprovalGate>, body: &[u8]) -> Action {
    host.set_header(Dir::Request, ":method", Some(b"POST"));
    host.set_header(Dir::Request, ":path", Some(b"/mcp"));
    host.set_header(Dir::Request, "content-type", Some(b"application/json"));
    host.set_header(Dir::Request, "x-user", Some(b"alice"));
    host.set_header(Dir::Request, "mcp-session-id", Some(b"sess-1"));
    assert_eq!(s.on_request_headers(host, false), Action::Pause);
    host.append_buffer(Dir::Request, body);
    s.on_request_body(host, body.len(), true)
}

/// The n-th call-out (1-based): method, path, body.
fn callout(host: &FakeHost, n: usize) -> (String, String, Value) {
    let c = host
        .state
        .borrow()
        .callouts
        .get(n - 1)
        .cloned()
        .expect("call-out made");
    assert_eq!(c.cluster, "approvals");
    let h = |k: &str| {
        c.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let body = serde_json::from_slice(&c.body).unwrap_or(Value::Null);
    (h(":method"), h(":path"), body)
}

fn answer(
    host: &FakeHost,
    s: &mut GuardStream<ApprovalGate>,
    token: u32,
    status: Option<u16>,
    body: Value,
) {
    let b = body.to_string().into_bytes();
    host.set_call_response(status, &b);
    s.on_callout_response(host, token, b.len());
}

fn refusal(host: &FakeHost) -> Value {
    let r = host.local_reply().expect("refused");
    assert_eq!(r.status, 200, "JSON-RPC errors travel in a 200");
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (
            v["jsonrpc"].clone(),
            v["id"].clone(),
            v["error"]["code"].clone()
        ),
        (json!("2.0"), json!(7), json!(-32001)),
        "{v}"
    );
    v
}

fn resumed(host: &FakeHost) -> bool {
    host.state.borrow().resumed == vec![Dir::Request]
}

#[test]
fn allowed_and_denied_calls_need_no_person() {
    let (host, mut s) = stream(&config("hold", ""));
    assert_eq!(
        send(&host, &mut s, &rpc("pay", json!({"amount": 10}), None)),
        Action::Continue
    );
    assert!(host.state.borrow().callouts.is_empty() && host.local_reply().is_none());

    let (host, mut s) = stream(&config("hold", ""));
    send(&host, &mut s, &rpc("delete_user", json!({"id": 1}), None));
    assert_eq!(refusal(&host)["error"]["data"]["reason"], "tool_denied");

    // Other JSON-RPC methods and non-JSON bodies pass untouched.
    let (host, mut s) = stream(&config("hold", ""));
    assert_eq!(
        send(
            &host,
            &mut s,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#
        ),
        Action::Continue
    );
    let (host, mut s) = stream(&config("hold", ""));
    assert_eq!(send(&host, &mut s, b"not json"), Action::Continue);
    // A batch holding a tool call is refused.
    let (host, mut s) = stream(&config("hold", ""));
    send(
        &host,
        &mut s,
        br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay"}}]"#,
    );
    assert!(host.local_reply().is_some());
}

#[test]
fn a_held_call_waits_for_the_decision() {
    for (decision, want_reason) in [
        ("approved", None),
        ("denied", Some("approval_denied")),
        ("expired", Some("approval_expired")),
    ] {
        let (host, mut s) = stream(&config("hold", ""));
        let args = json!({"amount": 1500, "currency": "EUR"});
        assert_eq!(
            send(&host, &mut s, &rpc("pay", args.clone(), None)),
            Action::Pause
        );
        let (m, p, b) = callout(&host, 1);
        assert_eq!((m.as_str(), p.as_str()), ("POST", "/v1/approvals"));
        assert_eq!(
            b["digest"],
            approval_digest("pay", &args, "alice", "sess-1")
        );
        assert_eq!(
            (
                b["tool"].clone(),
                b["caller"].clone(),
                b["rule"].clone(),
                b["mode"].clone()
            ),
            (
                json!("pay"),
                json!("alice"),
                json!("big-payments"),
                json!("hold")
            )
        );
        answer(
            &host,
            &mut s,
            1,
            Some(201),
            json!({"id": "ap1", "status": "pending"}),
        );
        let (m, p, _) = callout(&host, 2);
        assert_eq!(
            (m.as_str(), p.as_str()),
            ("GET", "/v1/approvals/ap1/wait?timeout_ms=30000")
        );
        // Still pending after one long poll: poll again.
        host.advance(30_000_000_000);
        answer(
            &host,
            &mut s,
            2,
            Some(200),
            json!({"id": "ap1", "status": "pending"}),
        );
        let (_, p, _) = callout(&host, 3);
        assert_eq!(p, "/v1/approvals/ap1/wait?timeout_ms=30000");
        answer(
            &host,
            &mut s,
            3,
            Some(200),
            json!({"id": "ap1", "status": decision, "reason": "too much"}),
        );
        match want_reason {
            None => assert!(resumed(&host) && host.local_reply().is_none(), "{decision}"),
            Some(r) => {
                let v = refusal(&host);
                assert_eq!(v["error"]["data"]["reason"], r, "{v}");
                assert_eq!(v["error"]["data"]["approval_id"], "ap1", "{v}");
            }
        }
    }
}

#[test]
fn a_hold_ends_at_its_bound_and_the_service_failure_policy_applies() {
    let (host, mut s) = stream(&config("hold", ""));
    send(&host, &mut s, &rpc("pay", json!({"amount": 5000}), None));
    answer(&host, &mut s, 1, Some(201), json!({"id": "ap2"}));
    host.advance(50_000_000_000);
    answer(&host, &mut s, 2, Some(200), json!({"status": "pending"}));
    // 10 s left: the next poll is shorter; past the bound the call is refused.
    assert_eq!(
        callout(&host, 3).1,
        "/v1/approvals/ap2/wait?timeout_ms=10000"
    );
    host.advance(10_000_000_000);
    answer(&host, &mut s, 3, Some(200), json!({"status": "pending"}));
    assert_eq!(
        refusal(&host)["error"]["data"]["reason"],
        "approval_expired"
    );

    for (extra, want_resumed) in [("", false), (r#", "on_service_failure": "allow""#, true)] {
        for status in [None, Some(503)] {
            let (host, mut s) = stream(&config("hold", extra));
            send(&host, &mut s, &rpc("pay", json!({"amount": 5000}), None));
            answer(&host, &mut s, 1, status, json!({}));
            assert_eq!(resumed(&host), want_resumed, "{extra} {status:?}");
            if !want_resumed {
                assert_eq!(
                    refusal(&host)["error"]["data"]["reason"],
                    "approval_unavailable"
                );
            }
        }
    }
    // Envoy refusing the call-out at once (unknown cluster): the same failure policy.
    let (host, mut s) = stream(&config("hold", ""));
    host.state.borrow_mut().refuse_callouts = true;
    send(&host, &mut s, &rpc("pay", json!({"amount": 5000}), None));
    assert_eq!(
        refusal(&host)["error"]["data"]["reason"],
        "approval_unavailable"
    );
}

#[test]
fn a_deferred_call_passes_once_with_its_approved_digest() {
    let (host, mut s) = stream(&config("defer", ""));
    let args = json!({"amount": 2500, "to": "DE89"});
    send(&host, &mut s, &rpc("pay", args.clone(), None));
    assert_eq!(callout(&host, 1).2["mode"], "defer");
    answer(
        &host,
        &mut s,
        1,
        Some(201),
        json!({"id": "ap3", "status": "pending"}),
    );
    let v = refusal(&host);
    assert_eq!(
        (
            v["error"]["data"]["reason"].clone(),
            v["error"]["data"]["approval_id"].clone()
        ),
        (json!("approval_required"), json!("ap3"))
    );

    // The retry names the approval; the service consumes it against this call's digest.
    for (args, status, body, want) in [
        (args.clone(), Some(200), json!({"status": "consumed"}), None),
        (
            json!({"amount": 9999, "to": "DE89"}),
            Some(409),
            json!({"error": "digest_mismatch"}),
            Some("approval_mismatch"),
        ),
        (
            args.clone(),
            Some(409),
            json!({"error": "already_used"}),
            Some("approval_used"),
        ),
        (
            args.clone(),
            Some(409),
            json!({"error": "not_approved"}),
            Some("approval_not_granted"),
        ),
    ] {
        let (host, mut s) = stream(&config("defer", ""));
        send(
            &host,
            &mut s,
            &rpc("pay", args.clone(), Some(json!({"approval_id": "ap3"}))),
        );
        let (m, p, b) = callout(&host, 1);
        assert_eq!(
            (m.as_str(), p.as_str()),
            ("POST", "/v1/approvals/ap3/consume")
        );
        assert_eq!(
            b["digest"],
            approval_digest("pay", &args, "alice", "sess-1")
        );
        answer(&host, &mut s, 1, status, body);
        match want {
            None => assert!(resumed(&host)),
            Some(r) => assert_eq!(refusal(&host)["error"]["data"]["reason"], r),
        }
    }
    // An approval id that could name another path is not used.
    let (host, mut s) = stream(&config("defer", ""));
    send(
        &host,
        &mut s,
        &rpc(
            "pay",
            json!({"amount": 2500}),
            Some(json!({"approval_id": "../x"})),
        ),
    );
    assert_eq!(callout(&host, 1).1, "/v1/approvals");
}

#[test]
fn configs_that_cannot_work_are_refused() {
    for (cfg, want) in [
        (
            r#"{"policies":{"default":{"rules":[{"id":"a","outcome":"require_approval"}]}}}"#,
            "/policies/default/service",
        ),
        (
            r#"{"policies":{"default":{"hold_max_ms":5}}}"#,
            "/policies/default/hold_max_ms",
        ),
        (
            r#"{"policies":{"default":{"on_service_failure":"require_approval"}}}"#,
            "on_service_failure",
        ),
        (
            r#"{"policies":{"default":{"mode":"later"}}}"#,
            "/policies/default/mode",
        ),
    ] {
        let err = FilterConfig::parse::<<ApprovalGate as GuardFilter>::Settings, _>(
            cfg.as_bytes(),
            ApprovalGate::DEFAULT_FAILURE,
            ApprovalGate::compile,
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(err.contains(want), "{cfg}: {err}");
    }
}

/// A body that starts like JSON but is not strict JSON could still be a tools/call to an MCP
/// server with a lenient parser: a `name` given twice (serde_json keeps the last, a first-wins
/// parser runs the other), trailing data after the message, a truncated body. The failure
/// policy decides (fail_closed: refused, never forwarded); a body that is not JSON at all
/// (an upload) is none of this filter's business and passes.
#[test]
fn a_tools_call_that_is_not_strict_json_is_refused() {
    let cases: [&[u8]; 4] = [
        br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"pay","name":"weather","arguments":{"amount":5000}}}"#,
        br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"weather","arguments":{}}} {"x":1}"#,
        br#"  {"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"pay""#,
        br#"[{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"pay","arguments":{"amount":5000},"arguments":{}}}]"#,
    ];
    for body in cases {
        let (host, mut s) = stream(&config("hold", ""));
        assert_eq!(
            send(&host, &mut s, body),
            Action::Pause,
            "{}",
            String::from_utf8_lossy(body)
        );
        let r = host.local_reply().expect("refused");
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
        assert!(String::from_utf8_lossy(&r.body).contains("unparsable_body"));
        assert!(host.state.borrow().callouts.is_empty());
    }
    let (host, mut s) = stream(&config("hold", ""));
    assert_eq!(
        send(
            &host,
            &mut s,
            b"--b\r\ncontent-disposition: form-data\r\n\r\nx\r\n--b--\r\n"
        ),
        Action::Continue
    );
    assert!(host.local_reply().is_none());
}
