//! Streamed answers through schema-guard's `buffer` mode when only tool calls are checked (no
//! structured output): text streams on at once, and `max_buffer_bytes` bounds only what is held
//! from the first tool call on, not the size of a chunk Envoy hands over.
//!
//! Regression (bad-input e2e suite, `tests/tests/bad_input.rs`): a client that stopped reading a
//! long stream made Envoy pass the back-pressured answer on in chunks over 1 MiB, and schema-guard
//! counted the chunk against its hold limit and cut a plain text answer with `body_too_large`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use guard_host::driver::{Action, GuardFilter, GuardStream};
use guard_host::fake::FakeHost;
use guard_host::host::{Dir, Host};
use guard_host::metrics::Metrics;
use schema_guard::filter::{parse_config, SchemaGuard};
use serde_json::json;
use std::rc::Rc;

const LIMIT: usize = 4096;

fn stream() -> (Rc<FakeHost>, GuardStream<SchemaGuard>) {
    let host = Rc::new(FakeHost::new());
    let cfg = parse_config(
        format!(r#"{{"policies":{{"default":{{"max_buffer_bytes":{LIMIT}}}}}}}"#).as_bytes(),
    )
    .unwrap();
    let metrics = Rc::new(Metrics::new(host.clone() as Rc<dyn Host>));
    let shared = Rc::new(SchemaGuard::init_shared(&metrics, &cfg));
    (host, GuardStream::new(Rc::new(cfg), shared, metrics))
}

/// A streamed chat request (a tool declared, so tool calls are checked), answered 200 with SSE.
fn start(host: &FakeHost, s: &mut GuardStream<SchemaGuard>) {
    host.set_header(Dir::Request, ":method", Some(b"POST"));
    host.set_header(Dir::Request, ":path", Some(b"/v1/chat/completions"));
    host.set_header(Dir::Request, "content-type", Some(b"application/json"));
    let req = json!({"model": "m", "stream": true,
        "messages": [{"role": "user", "content": "write a long story"}],
        "tools": [{"type": "function", "function": {"name": "pay", "parameters": {"type": "object"}}}]})
    .to_string();
    assert_eq!(s.on_request_headers(host, false), Action::Pause);
    host.set_buffer(Dir::Request, req.as_bytes());
    assert_eq!(s.on_request_body(host, req.len(), true), Action::Continue);
    host.set_header(Dir::Response, ":status", Some(b"200"));
    host.set_header(Dir::Response, "content-type", Some(b"text/event-stream"));
    assert_eq!(s.on_response_headers(host, false), Action::Continue);
}

fn text_event(i: usize) -> String {
    let v = json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
        "choices": [{"index": 0, "delta": {"content": format!("word{i} ")}, "finish_reason": null}]});
    format!("data: {v}\n\n")
}

fn tool_event(args: &str) -> String {
    let v = json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
        "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "pay", "arguments": args}}]}, "finish_reason": null}]});
    format!("data: {v}\n\n")
}

/// Deliver `chunk` as one body callback; returns what goes to the client.
fn deliver(host: &FakeHost, s: &mut GuardStream<SchemaGuard>, chunk: &[u8], eos: bool) -> Vec<u8> {
    host.set_buffer(Dir::Response, chunk);
    assert_eq!(s.on_response_body(host, chunk.len(), eos), Action::Continue);
    host.buffer(Dir::Response)
}

#[test]
fn a_text_chunk_larger_than_the_hold_limit_streams_on() {
    let (host, mut s) = stream();
    start(&host, &mut s);
    let big: String = (0..200).map(text_event).collect();
    assert!(big.len() > 4 * LIMIT);
    assert_eq!(
        deliver(&host, &mut s, big.as_bytes(), false),
        big.as_bytes()
    );
    let end = "data: [DONE]\n\n";
    let out = deliver(&host, &mut s, end.as_bytes(), true);
    assert_eq!(out, end.as_bytes());
    let rec = String::from_utf8(host.get_property(&["guard_schema_guard"]).unwrap()).unwrap();
    assert!(!rec.contains("body_too_large"), "{rec}");
}

#[test]
fn what_is_held_after_a_tool_call_still_has_the_limit() {
    let (host, mut s) = stream();
    start(&host, &mut s);
    let text = text_event(0);
    assert_eq!(
        deliver(&host, &mut s, text.as_bytes(), false),
        text.as_bytes()
    );
    // A tool call starts: from here on the stream is held, and more than the limit is refused.
    let held: String = tool_event("{\"amount\":")
        + &(0..100)
            .map(|_| tool_event_args("1111111111"))
            .collect::<String>();
    assert!(held.len() > LIMIT);
    let out = String::from_utf8(deliver(&host, &mut s, held.as_bytes(), false)).unwrap();
    assert!(out.contains("body_too_large"), "{out}");
    assert!(!out.contains("\"pay\""), "held events leaked: {out}");
}

fn tool_event_args(args: &str) -> String {
    let v = json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
        "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": args}}]}, "finish_reason": null}]});
    format!("data: {v}\n\n")
}
