//! guard-core `body::RequestBody`: parse, segments, tool calls, tools, `set_text`, `to_bytes`.
//!
//! Invariants (the module's contract):
//! - every segment's path resolves to a JSON string equal to its text, every tool call's path
//!   to its arguments;
//! - `to_bytes` of a parsed body parses again to the same JSON;
//! - rewriting every segment with `set_text` succeeds, and the rewritten bytes parse again with
//!   the same segments (source and path) holding exactly the new texts;
//! - the lenient walk over any JSON value (after `json_mut`) never panics.
#![no_main]

use guard_core::body::{RequestBody, ToolArgs};
use guard_core::segment::JsonPath;
use guard_fuzz::Headed;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The replacement text of a segment, in the style the header picks.
fn replacement(style: u8, text: &str, i: usize) -> String {
    match style % 4 {
        0 => format!("[REDACTED_{i}]"),
        1 => text.to_uppercase() + "x",
        2 => format!("\"\\\u{0}\u{2028}</script>{text}"),
        _ => format!("{text}{text}é"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(h) = Headed::split(data) else { return };
    let shape = h.shape();
    let Ok(mut req) = RequestBody::parse(shape, h.payload) else {
        // Any JSON value still gets the lenient walk.
        if let Ok(v) = serde_json::from_slice::<Value>(h.payload) {
            if let Ok(mut req) = RequestBody::from_value(shape, serde_json::json!({})) {
                *req.json_mut() = v;
                let _ = (req.segments(), req.tool_calls(), req.tools(), req.response_schema());
            }
        }
        return;
    };
    let json = req.json().clone();
    let segs = req.segments();
    for s in &segs {
        assert_eq!(
            s.path.get(&json).and_then(Value::as_str),
            Some(s.text.as_ref()),
            "segment path {} does not hold its text",
            s.path
        );
    }
    for c in req.tool_calls() {
        match c.arguments {
            ToolArgs::Text(t) => assert_eq!(c.path.get(&json).and_then(Value::as_str), Some(t)),
            ToolArgs::Json(v) if !v.is_null() => assert_eq!(c.path.get(&json), Some(v)),
            ToolArgs::Json(_) => {}
        }
    }
    let _ = (req.tools(), req.response_schema(), req.model(), req.is_stream());

    let again = RequestBody::parse(shape, &req.to_bytes()).expect("to_bytes does not parse");
    assert_eq!(again.json(), &json, "to_bytes changed the body");

    // Rewrite every segment.
    let plan: Vec<(JsonPath, String, _)> = segs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.path.clone(), replacement(h.ctl[1], &s.text, i), s.source))
        .collect();
    drop(segs);
    for (path, text, _) in &plan {
        req.set_text(path, text).expect("set_text on a segment path failed");
    }
    let bytes = req.to_bytes();
    let re = RequestBody::parse(shape, &bytes).expect("rewritten body does not parse");
    let got: Vec<_> = re
        .segments()
        .iter()
        .map(|s| (s.path.clone(), s.text.to_string(), s.source))
        .collect();
    assert_eq!(got, plan, "rewritten body has other segments");
});
