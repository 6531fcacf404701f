//! SSE stream details: the OpenAI usage-chunk rule, `n` choices, chunk size and delay.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use demo_upstream::Options;
use serde_json::{json, Value};

fn chat_body(text: &str, stream_options: Option<Value>, n: Option<u64>) -> Value {
    let mut body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": text}],
        "stream": true,
    });
    if let Some(o) = stream_options {
        body["stream_options"] = o;
    }
    if let Some(n) = n {
        body["n"] = json!(n);
    }
    body
}

#[tokio::test]
async fn usage_chunk_only_when_asked() {
    let upstream = start(Options::default()).await;
    let addr = upstream.addr();
    // (name, stream_options, usage chunk expected)
    let cases = [
        ("absent", None, false),
        ("false", Some(json!({"include_usage": false})), false),
        ("empty", Some(json!({})), false),
        ("true", Some(json!({"include_usage": true})), true),
    ];
    for (name, opts, want) in cases {
        for text in ["hello there", "[[tool_calls:2]]"] {
            let resp = post_json(
                addr,
                Proto::H2,
                "/v1/chat/completions",
                &[],
                &chat_body(text, opts.clone(), None),
            )
            .await;
            assert_eq!(resp.status, 200);
            let events = sse_events(&resp.text());
            let (done, chunks) = events.split_last().unwrap();
            assert_eq!(done.data, "[DONE]", "{name}");
            let chunks: Vec<Value> = chunks.iter().map(Event::json).collect();
            let usage_chunks: Vec<&Value> = chunks
                .iter()
                .filter(|c| c["choices"].as_array().unwrap().is_empty())
                .collect();
            if want {
                assert_eq!(usage_chunks.len(), 1, "{name}");
                let last = chunks.last().unwrap();
                assert!(
                    last["choices"].as_array().unwrap().is_empty(),
                    "{name}: usage chunk is last before [DONE]"
                );
                let u = &last["usage"];
                assert!(u["prompt_tokens"].as_u64().unwrap() >= 1);
                assert_eq!(
                    u["total_tokens"].as_u64().unwrap(),
                    u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
                );
                for c in &chunks[..chunks.len() - 1] {
                    assert!(
                        c.get("usage").unwrap().is_null(),
                        "{name}: other chunks carry usage: null"
                    );
                }
            } else {
                assert!(usage_chunks.is_empty(), "{name}");
                for c in &chunks {
                    assert!(c.get("usage").is_none(), "{name}: no usage field at all");
                }
            }
            // The finish chunk has an empty delta and a finish reason.
            let finish = chunks
                .iter()
                .rev()
                .find(|c| !c["choices"].as_array().unwrap().is_empty())
                .unwrap();
            assert_eq!(finish["choices"][0]["delta"], json!({}));
            assert!(finish["choices"][0]["finish_reason"].is_string());
        }
    }
    upstream.shutdown().await;
}

#[tokio::test]
async fn n_choices_are_interleaved() {
    let upstream = start(Options::default()).await;
    let addr = upstream.addr();
    let body = chat_body(
        "one two three four",
        Some(json!({"include_usage": true})),
        Some(3),
    );
    let resp = post_json(addr, Proto::H1, "/v1/chat/completions", &[], &body).await;
    let events = sse_events(&resp.text());
    let mut texts = vec![String::new(); 3];
    let mut order = Vec::new();
    let mut usage = None;
    for e in &events[..events.len() - 1] {
        let c = e.json();
        let choices = c["choices"].as_array().unwrap();
        if choices.is_empty() {
            usage = Some(c["usage"].clone());
            continue;
        }
        assert_eq!(choices.len(), 1);
        let i = choices[0]["index"].as_u64().unwrap() as usize;
        order.push(i);
        if let Some(t) = choices[0]["delta"]["content"].as_str() {
            texts[i].push_str(t);
        }
    }
    for t in &texts {
        assert_eq!(t, "You said: one two three four");
    }
    assert_eq!(&order[..6], &[0, 1, 2, 0, 1, 2], "round-robin interleaving");
    let usage = usage.unwrap();
    assert_eq!(usage["prompt_tokens"], 4);
    assert_eq!(usage["completion_tokens"], 6 * 3);

    // Non-streamed n: three choices.
    let mut body = body;
    body["stream"] = json!(false);
    let resp = post_json(addr, Proto::H1, "/v1/chat/completions", &[], &body).await;
    let v = resp.json();
    assert_eq!(v["choices"].as_array().unwrap().len(), 3);
    assert_eq!(v["choices"][2]["index"], 2);
    // Out-of-range n is a 400.
    let mut body = chat_body("x", None, Some(0));
    body["stream"] = json!(false);
    let resp = post_json(addr, Proto::H1, "/v1/chat/completions", &[], &body).await;
    assert_eq!(resp.status, 400);
    upstream.shutdown().await;
}

#[tokio::test]
async fn text_deltas_are_small() {
    let upstream = start(Options::default()).await;
    let addr = upstream.addr();
    let text = "[[text:The quick brown fox jumps over the lazy dog, twice: ÄÖÜ ✓✓]]";
    for api in APIS {
        let resp = post_json(addr, Proto::H1, api.path(), &[], &api.request(text, true)).await;
        let mut deltas = Vec::new();
        for e in sse_events(&resp.text()) {
            if e.data == "[DONE]" {
                continue;
            }
            let v = e.json();
            let d = match api {
                Api::Chat => v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned),
                Api::Responses => (v["type"] == "response.output_text.delta")
                    .then(|| v["delta"].as_str().unwrap().to_owned()),
                Api::Messages => (v["type"] == "content_block_delta")
                    .then(|| v["delta"]["text"].as_str().unwrap().to_owned()),
            };
            if let Some(d) = d.filter(|d| !d.is_empty()) {
                deltas.push(d);
            }
        }
        assert!(deltas.len() >= 8, "{api:?}: several deltas");
        for d in &deltas {
            assert!((1..=8).contains(&d.chars().count()), "{api:?}: {d:?}");
        }
    }
    upstream.shutdown().await;
}

#[tokio::test]
async fn chunk_size_is_honoured() {
    let upstream = start(Options::default()).await;
    let addr = upstream.addr();
    // (name, extra headers, max frame size)
    let cases: Vec<(&str, Headers, usize)> = vec![
        ("default 16", vec![], 16),
        ("header 7", vec![("x-demo-chunk-size", "7")], 7),
        ("header 1", vec![("x-demo-chunk-size", "1")], 1),
    ];
    for (name, headers, max) in cases {
        for proto in PROTOS {
            for api in APIS {
                let resp = post_json(
                    addr,
                    proto,
                    api.path(),
                    &headers,
                    &api.request("[[pii]]", true),
                )
                .await;
                assert_eq!(resp.status, 200);
                let body_len = resp.body().len();
                assert!(
                    resp.frames.iter().all(|f| f.len() <= max),
                    "{name} {proto:?} {api:?}"
                );
                // Every chunk arrives as its own frame (client-side coalescing is not expected
                // for hyper's decoders, but allow a little slack).
                assert!(resp.frames.len() * max >= body_len, "{name}");
                assert!(
                    resp.frames.len() >= body_len / max / 2,
                    "{name} {proto:?} {api:?}: {} frames for {body_len} bytes",
                    resp.frames.len()
                );
                // The PII answer is split across frames: the e-mail address is not in any one frame.
                assert!(resp
                    .frames
                    .iter()
                    .all(|f| !f.windows(20).any(|w| w == b"jane.doe@example.com")));
                extract_sse(api, &resp.text());
            }
        }
    }
    // Whole-stream chunk (0) and a server-wide option.
    let resp = post_json(
        addr,
        Proto::H1,
        "/v1/messages",
        &[("x-demo-chunk-size", "0")],
        &Api::Messages.request("hi", true),
    )
    .await;
    assert_eq!(resp.frames.len(), 1);
    upstream.shutdown().await;

    let upstream = start(Options {
        chunk_size: 5,
        chunk_delay: Duration::ZERO,
    })
    .await;
    let resp = post_json(
        upstream.addr(),
        Proto::H2,
        "/v1/responses",
        &[],
        &Api::Responses.request("hi", true),
    )
    .await;
    assert!(resp.frames.iter().all(|f| f.len() <= 5));
    assert!(resp.frames.len() >= resp.body().len() / 10);
    upstream.shutdown().await;
}

#[tokio::test]
async fn chunk_delay_is_honoured() {
    let upstream = start(Options::default()).await;
    let addr = upstream.addr();
    for proto in PROTOS {
        let started = Instant::now();
        let resp = post_json(
            addr,
            proto,
            "/v1/chat/completions",
            &[
                ("x-demo-chunk-size", "200"),
                ("x-demo-chunk-delay-ms", "20"),
            ],
            &Api::Chat.request("hello", true),
        )
        .await;
        let pieces = resp.body().len().div_ceil(200);
        assert!(pieces >= 3);
        let min = Duration::from_millis(20 * (pieces as u64 - 1));
        assert!(
            started.elapsed() >= min,
            "{proto:?}: {:?} < {min:?}",
            started.elapsed()
        );
        assert_eq!(
            resp.frames.len(),
            pieces,
            "{proto:?}: delayed chunks arrive as separate frames"
        );
    }
    // Server-wide delay.
    let upstream2 = start(Options {
        chunk_size: 400,
        chunk_delay: Duration::from_millis(15),
    })
    .await;
    let started = Instant::now();
    let resp = post_json(
        upstream2.addr(),
        Proto::H1,
        "/v1/messages",
        &[],
        &Api::Messages.request("hello", true),
    )
    .await;
    let pieces = resp.body().len().div_ceil(400) as u64;
    assert!(started.elapsed() >= Duration::from_millis(15 * (pieces - 1)));
    upstream2.shutdown().await;
    upstream.shutdown().await;
}
