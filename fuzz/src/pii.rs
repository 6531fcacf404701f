//! pii-redact helpers shared by its targets (as in `filters/pii-redact/tests/properties.rs`).

use guard_core::api::ApiShape;
use guard_core::holdback::{StreamRewriter, StreamScanner};
use guard_core::sse::SseParser;
use pii_redact::engine::{Direction, Engine, Scratch};
use pii_redact::redact::{Stats, TextKind, Vault};
use pii_redact::stream::{Buffers, Pass, PiiScanner, Tails};
use serde_json::{json, Value};

/// One complete text through a pass (unchanged text when nothing was found). `scratch` is
/// reused across runs, as the filters reuse it across requests.
pub fn whole(
    engine: &Engine,
    scratch: &mut Scratch,
    dir: Direction,
    text: &str,
    kind: TextKind,
    vault: &mut Vault,
) -> String {
    let mut bufs = Buffers::default();
    let mut stats = Stats::default();
    Pass { engine, scratch, bufs: &mut bufs, dir, vault, stats: &mut stats }
        .text(text, kind)
        .unwrap_or_else(|| text.to_string())
}

/// An OpenAI chat stream of `text` in deltas of `delta` chars.
pub fn chat_stream(text: &str, delta: usize) -> Vec<u8> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    for piece in chars.chunks(delta.max(1)) {
        let s: String = piece.iter().collect();
        let ev = json!({"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":s},"finish_reason":null}]});
        out.push_str(&format!("data: {ev}\n\n"));
    }
    let end = json!({"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]});
    out.push_str(&format!("data: {end}\n\ndata: [DONE]\n\n"));
    out.into_bytes()
}

/// A stream through the rewriter with a PII scanner in `dir`, its bytes split at `cuts`:
/// (output, largest pending text), or the rewriter's error.
pub fn run_stream(
    engine: &Engine,
    scratch: &mut Scratch,
    dir: Direction,
    input: &[u8],
    cuts: &[usize],
    vault: &mut Vault,
) -> Result<(Vec<u8>, usize), String> {
    let mut bufs = Buffers::default();
    let mut stats = Stats::default();
    let mut tails = Tails::default();
    let mut scanner = PiiScanner {
        pass: Pass { engine, scratch, bufs: &mut bufs, dir, vault, stats: &mut stats },
        tails: &mut tails,
        max_pending: 0,
    };
    let mut rw = StreamRewriter::new(ApiShape::OpenAiChat, 1 << 20, engine.settings.max_hold_bytes);
    let mut out = Vec::new();
    for chunk in crate::chunks(input, cuts) {
        let mut scanners: [&mut dyn StreamScanner; 1] = [&mut scanner];
        rw.push(chunk, &mut scanners, &mut out).map_err(|e| e.to_string())?;
    }
    let mut scanners: [&mut dyn StreamScanner; 1] = [&mut scanner];
    rw.finish(&mut scanners, &mut out).map_err(|e| e.to_string())?;
    Ok((out, scanner.max_pending))
}

/// The text content of a chat stream; panics when the stream is not valid SSE of JSON events
/// ending in `[DONE]` (that is part of the property).
pub fn stream_text(bytes: &[u8]) -> String {
    let mut p = SseParser::new(1 << 24);
    let mut events = Vec::new();
    p.push(bytes, &mut |e| events.push(e)).expect("output is not SSE");
    assert!(p.take_pending_raw().is_empty(), "output ends in an unterminated event");
    let mut text = String::new();
    let mut done = false;
    for e in events {
        assert!(!done, "event after [DONE]");
        if e.data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(&e.data).expect("event is not JSON");
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    assert!(done, "stream lost its [DONE]");
    text
}
