//! Tool calls in model answers through the shared driver on the recording fake host: a denied
//! call is replaced in whole answers and in streams (the held stream rewritten, never cut), a
//! `defer` answer names its approval, and a retry carrying `x-approval-id` lets the model's call
//! through only through the service's consume with the call's digest.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use approval_gate::digest::approval_digest;
use approval_gate::ApprovalGate;
use guard_host::driver::{Action, GuardStream};
use guard_host::fake::FakeHost;
use guard_host::host::{Dir, Host};
use serde_json::{json, Value};
use std::rc::Rc;

const CONFIG: &str = r#"{
  "identity": {"header": "x-user"},
  "policies": {"default": {
    "rules": [
      {"id": "big-payments", "tools": ["pay"], "when": [{"pointer": "/amount", "op": "gt", "value": 1000}], "outcome": "require_approval"},
      {"id": "no-deletes", "tools": ["delete_*"], "outcome": "deny"}
    ],
    "service": {"cluster": "approvals", "timeout_ms": 1500},
    "mode": "MODE"
  }}
}"#;

fn stream(mode: &str) -> (Rc<FakeHost>, GuardStream<ApprovalGate>) {
    common::gate(&CONFIG.replace("MODE", mode))
}

fn request(streamed: bool) -> Vec<u8> {
    json!({
        "model": "gpt-4o",
        "stream": streamed,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "pay bob@example.com"}
        ],
        "tools": [
            {"type": "function", "function": {"name": "pay", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "delete_account", "parameters": {"type": "object"}}}
        ]
    })
    .to_string()
    .into_bytes()
}

/// Sends the request (headers `extra` added) and the upstream's answer `body`; returns what the
/// response body callback said.
fn exchange(
    host: &FakeHost,
    s: &mut GuardStream<ApprovalGate>,
    streamed: bool,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Action {
    host.set_header(Dir::Request, ":method", Some(b"POST"));
    host.set_header(Dir::Request, ":path", Some(b"/v1/chat/completions"));
    host.set_header(Dir::Request, "content-type", Some(b"application/json"));
    host.set_header(Dir::Request, "x-user", Some(b"alice"));
    host.set_header(Dir::Request, "x-conversation-id", Some(b"conv-1"));
    for (k, v) in extra {
        host.set_header(Dir::Request, k, Some(v.as_bytes()));
    }
    let req = request(streamed);
    s.on_request_headers(host, false);
    host.append_buffer(Dir::Request, &req);
    assert_eq!(s.on_request_body(host, req.len(), true), Action::Continue);
    host.set_header(Dir::Response, ":status", Some(b"200"));
    let ct: &[u8] = if streamed {
        b"text/event-stream"
    } else {
        b"application/json"
    };
    host.set_header(Dir::Response, "content-type", Some(ct));
    assert_eq!(s.on_response_headers(host, false), Action::Pause);
    host.append_buffer(Dir::Response, body);
    s.on_response_body(host, body.len(), true)
}

fn whole(calls: &[(&str, Value)]) -> Vec<u8> {
    let calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, (name, args))| {
            json!({"id": format!("call_{i}"), "type": "function",
                   "function": {"name": name, "arguments": args.to_string()}})
        })
        .collect();
    json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
           "choices": [{"index": 0, "finish_reason": "tool_calls",
                        "message": {"role": "assistant", "content": null, "tool_calls": calls}}]})
    .to_string()
    .into_bytes()
}

fn sse(calls: &[(&str, Value)]) -> Vec<u8> {
    let mut out = String::new();
    let mut chunk = |delta: Value, finish: Value| {
        let v = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        out.push_str(&format!("data: {v}\n\n"));
    };
    chunk(
        json!({"role": "assistant", "content": "Sure."}),
        Value::Null,
    );
    for (i, (name, args)) in calls.iter().enumerate() {
        chunk(
            json!({"tool_calls": [{"index": i, "id": format!("call_{i}"), "type": "function",
                                    "function": {"name": name, "arguments": ""}}]}),
            Value::Null,
        );
        let a = args.to_string();
        let (x, y) = a.split_at(a.len() / 2);
        for part in [x, y] {
            chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": part}}]}),
                Value::Null,
            );
        }
    }
    chunk(json!({}), json!("tool_calls"));
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

/// The call-outs made: (path, body).
fn callouts(host: &FakeHost) -> Vec<(String, Value)> {
    host.state
        .borrow()
        .callouts
        .iter()
        .map(|c| {
            let path = c
                .headers
                .iter()
                .find(|(k, _)| k == ":path")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            (path, serde_json::from_slice(&c.body).unwrap_or(Value::Null))
        })
        .collect()
}

fn reply(host: &FakeHost, s: &mut GuardStream<ApprovalGate>, n: usize, status: u16, body: Value) {
    let b = body.to_string().into_bytes();
    host.set_call_response(Some(status), &b);
    s.on_callout_response(host, u32::try_from(n).unwrap(), b.len());
}

/// Content and tool-call names of choice 0 of a streamed answer.
fn streamed(body: &[u8]) -> (String, Vec<String>, String) {
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let (mut content, mut names, mut finish) = (String::new(), Vec::new(), String::new());
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        let c = &v["choices"][0];
        content.push_str(c["delta"]["content"].as_str().unwrap_or(""));
        for t in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
            if let Some(n) = t["function"]["name"].as_str() {
                names.push(n.to_owned());
            }
        }
        if let Some(f) = c["finish_reason"].as_str() {
            finish = f.to_owned();
        }
    }
    (content, names, finish)
}

#[test]
fn a_denied_call_is_replaced_in_a_stream_and_the_others_stay() {
    let (host, mut s) = stream("hold");
    let body = sse(&[
        ("get_weather", json!({"city": "Oslo"})),
        ("delete_account", json!({"user": "bob"})),
    ]);
    assert_eq!(exchange(&host, &mut s, true, &[], &body), Action::Continue);
    assert!(host.local_reply().is_none());
    let (content, names, finish) = streamed(&host.buffer(Dir::Response));
    assert_eq!(names, vec!["get_weather"]);
    assert_eq!(
        content,
        "Sure.\n\nThe tool call `delete_account` was not run: the policy does not allow it."
    );
    assert_eq!(finish, "tool_calls", "a call is left");
    assert!(
        callouts(&host).is_empty(),
        "no person is asked for a denied call"
    );
}

#[test]
fn a_deferred_call_in_an_answer_names_its_approval_and_a_retry_consumes_it() {
    let pay = json!({"amount": 1500});
    for streamed_answer in [false, true] {
        let body = if streamed_answer {
            sse(&[("pay", pay.clone())])
        } else {
            whole(&[("pay", pay.clone())])
        };
        // First request: an approval is created in defer mode and the call replaced at once.
        let (host, mut s) = stream("defer");
        assert_eq!(
            exchange(&host, &mut s, streamed_answer, &[], &body),
            Action::Pause
        );
        let calls = callouts(&host);
        assert_eq!(calls.len(), 1);
        let (path, create) = &calls[0];
        assert_eq!(path, "/v1/approvals");
        let digest = approval_digest("pay", &pay, "alice", "conv-1");
        assert_eq!(
            (&create["mode"], &create["digest"], &create["tool"]),
            (&json!("defer"), &json!(digest), &json!("pay"))
        );
        // The excerpt: the conversation without the system prompt, real values.
        assert_eq!(create["excerpt_raw"], "user: pay bob@example.com");
        reply(
            &host,
            &mut s,
            1,
            201,
            json!({"id": "ap-1", "status": "pending"}),
        );
        let out = host.buffer(Dir::Response);
        let want = "The tool call `pay` was not run: it waits for a person's approval (approval id ap-1); once approved, send the same request again with the header `x-approval-id: ap-1`.";
        if streamed_answer {
            let (content, names, finish) = streamed(&out);
            assert_eq!(content, format!("Sure.\n\n{want}"));
            assert!(names.is_empty());
            assert_eq!(finish, "stop");
        } else {
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["choices"][0]["message"]["content"], want, "{v}");
            assert!(v["choices"][0]["message"].get("tool_calls").is_none());
        }
        assert_eq!(
            host.metric("guard.approval_gate.outcome.approval_required.tool_calls"),
            1
        );

        // The retry carries the id: consumed with the digest of the call the model made now.
        for (status, error, passes) in [
            (200, None, true),
            (409, Some("digest_mismatch"), false),
            (410, Some("already_used"), false),
        ] {
            let (host, mut s) = stream("defer");
            assert_eq!(
                exchange(
                    &host,
                    &mut s,
                    streamed_answer,
                    &[("x-approval-id", "ap-1")],
                    &body
                ),
                Action::Pause
            );
            let calls = callouts(&host);
            assert_eq!(calls.len(), 1);
            assert_eq!(
                (&calls[0].0, &calls[0].1),
                (
                    &"/v1/approvals/ap-1/consume".to_owned(),
                    &json!({"digest": digest})
                )
            );
            let answer = match error {
                Some(e) => json!({"error": e}),
                None => json!({"id": "ap-1", "status": "approved"}),
            };
            reply(&host, &mut s, 1, status, answer);
            let out = host.buffer(Dir::Response);
            if passes {
                assert_eq!(out, body, "an approved call passes unchanged");
            } else {
                let text = String::from_utf8(out).unwrap();
                assert!(
                    text.contains("the approval does not cover this tool call"),
                    "{text}"
                );
            }
        }
    }
}

#[test]
fn invalid_approval_ids_are_ignored() {
    let (host, mut s) = stream("defer");
    let body = whole(&[("pay", json!({"amount": 1500}))]);
    exchange(
        &host,
        &mut s,
        false,
        &[("x-approval-id", "../x, ?a")],
        &body,
    );
    let calls = callouts(&host);
    assert_eq!(calls[0].0, "/v1/approvals", "no consume of a malformed id");
}

#[test]
fn a_denied_call_is_replaced_in_an_anthropic_stream() {
    let (host, mut s) = stream("hold");
    let ev = |t: &str, v: Value| format!("event: {t}\ndata: {v}\n\n");
    let mut body = String::new();
    body += &ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [], "usage": {"input_tokens": 5, "output_tokens": 0}}}),
    );
    body += &ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "delete_account", "input": {}}}),
    );
    body += &ev(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"user\":\"bob\"}"}}),
    );
    body += &ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    body += &ev(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
    );
    body += &ev("message_stop", json!({"type": "message_stop"}));
    host.set_header(Dir::Request, ":path", Some(b"/v1/messages"));
    let req = json!({"model": "claude", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "delete bob"}],
        "tools": [{"name": "delete_account", "input_schema": {"type": "object"}}]})
    .to_string();
    host.set_header(Dir::Request, ":method", Some(b"POST"));
    host.set_header(Dir::Request, "content-type", Some(b"application/json"));
    s.on_request_headers(&*host, false);
    host.append_buffer(Dir::Request, req.as_bytes());
    assert_eq!(s.on_request_body(&*host, req.len(), true), Action::Continue);
    host.set_header(Dir::Response, ":status", Some(b"200"));
    host.set_header(Dir::Response, "content-type", Some(b"text/event-stream"));
    assert_eq!(s.on_response_headers(&*host, false), Action::Pause);
    host.append_buffer(Dir::Response, body.as_bytes());
    assert_eq!(
        s.on_response_body(&*host, body.len(), true),
        Action::Continue
    );
    let out = String::from_utf8(host.buffer(Dir::Response)).unwrap();
    assert!(!out.contains("tool_use\",\"id"), "{out}");
    assert!(!out.contains("input_json_delta"), "{out}");
    assert!(
        out.contains("The tool call `delete_account` was not run: the policy does not allow it."),
        "{out}"
    );
    assert!(out.contains("\"stop_reason\":\"end_turn\""), "{out}");
    assert!(
        out.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        "{out}"
    );
}
