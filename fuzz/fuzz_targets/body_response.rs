//! guard-core `body::ResponseBody`: parse, segments, `set_text`, `to_bytes`, and
//! `remove_tool_calls`.
//!
//! Invariants (the module's contract):
//! - segment and tool-call paths resolve to their text / arguments; `to_bytes` parses again;
//! - rewriting every segment parses again with the same segments holding the new texts;
//! - `remove_tool_calls` of calls the body reports (each located by any path inside the call,
//!   so one call may be named twice): when it succeeds, the body parses again, exactly the other
//!   calls remain (same choice, id, name, arguments, in order), and the message is in the
//!   answer's text.
#![no_main]

use guard_core::body::{ResponseBody, ToolArgs, ToolCall};
use guard_core::segment::{JsonPath, Step};
use guard_fuzz::Headed;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const MESSAGE: &str = "The tool call was removed by policy.";

type CallRow = (Option<usize>, Option<String>, String, String);

fn row(c: &ToolCall<'_>) -> CallRow {
    let args = match c.arguments {
        ToolArgs::Text(t) => t.to_string(),
        ToolArgs::Json(v) => v.to_string(),
    };
    (c.choice, c.id.map(str::to_string), c.name.to_string(), args)
}

fuzz_target!(|data: &[u8]| {
    let Some(h) = Headed::split(data) else { return };
    let shape = h.shape();
    let Ok(resp) = ResponseBody::parse(shape, h.payload) else { return };
    let json = resp.json().clone();
    let segs = resp.segments();
    for s in &segs {
        assert_eq!(s.path.get(&json).and_then(Value::as_str), Some(s.text.as_ref()));
    }
    let calls = resp.tool_calls();
    for c in &calls {
        match c.arguments {
            ToolArgs::Text(t) => assert_eq!(c.path.get(&json).and_then(Value::as_str), Some(t)),
            ToolArgs::Json(v) if !v.is_null() => assert_eq!(c.path.get(&json), Some(v)),
            ToolArgs::Json(_) => {}
        }
    }
    let _ = (resp.usage(), resp.is_error(), resp.model());
    let again = ResponseBody::parse(shape, &resp.to_bytes()).expect("to_bytes does not parse");
    assert_eq!(again.json(), &json);

    // Rewrite every segment.
    let plan: Vec<(JsonPath, String)> = segs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.path.clone(), format!("<{}:{i}>\"\\", s.text.len())))
        .collect();
    let mut edited = resp.clone();
    for (p, t) in &plan {
        edited.set_text(p, t).expect("set_text on a segment path failed");
    }
    let re = ResponseBody::parse(shape, &edited.to_bytes()).expect("rewritten body does not parse");
    let got: Vec<(JsonPath, String)> =
        re.segments().iter().map(|s| (s.path.clone(), s.text.to_string())).collect();
    assert_eq!(got, plan);

    // Remove the calls the header's mask picks; a call may be named twice (by its arguments and
    // by the call itself).
    if calls.is_empty() {
        return;
    }
    let mask = u16::from_le_bytes([h.ctl[2], h.ctl[3]]);
    let twice = h.ctl[1];
    let mut locs: Vec<(Vec<Step>, usize)> = Vec::new();
    let mut removed = vec![false; calls.len()];
    for (i, c) in calls.iter().enumerate() {
        if mask & (1 << (i % 16)) == 0 {
            continue;
        }
        removed[i] = true;
        locs.push((c.path.0.clone(), c.choice.unwrap_or(0)));
        if twice & (1 << (i % 8)) != 0 {
            // The call's own location: the path up to its array index.
            let cut = c.path.0.iter().rposition(|s| {
                matches!(s, Step::Key(k) if k == "tool_calls" || k == "content" || k == "output")
            });
            if let Some(cut) = cut {
                let mut p = c.path.0.clone();
                p.truncate(cut + 2);
                locs.push((p, c.choice.unwrap_or(0)));
            }
        }
    }
    if locs.is_empty() {
        return;
    }
    // Any order: reversed, or dealt (every other one moved to the end, so two names of one
    // call need not be neighbours).
    if twice & 0x80 != 0 {
        locs.reverse();
    }
    if twice & 0x40 != 0 {
        let (even, odd): (Vec<_>, Vec<_>) = locs.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        locs = even.into_iter().chain(odd).map(|(_, l)| l).collect();
    }
    let want: Vec<CallRow> = calls
        .iter()
        .zip(&removed)
        .filter(|(_, r)| !**r)
        .map(|(c, _)| row(c))
        .collect();
    let refs: Vec<(&[Step], usize)> = locs.iter().map(|(p, c)| (p.as_slice(), *c)).collect();
    let mut out = resp.clone();
    if !out.remove_tool_calls(&refs, MESSAGE) {
        return;
    }
    let bytes = out.to_bytes();
    let re = ResponseBody::parse(shape, &bytes).expect("body after remove_tool_calls does not parse");
    let left: Vec<CallRow> = re.tool_calls().iter().map(row).collect();
    assert_eq!(left, want, "other calls than the removed ones left");
    assert!(
        re.segments().iter().any(|s| s.text.contains(MESSAGE)),
        "the removal message is not in the answer"
    );
});
