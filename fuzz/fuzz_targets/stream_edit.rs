//! guard-core `stream_edit::remove_streamed_tool_calls` on arbitrary streams of each shape.
//!
//! Invariants (the module's contract):
//! - no calls: the body comes back unchanged;
//! - a failure is `TooLarge`, `Unparsable` or `BadLocation` (a call not in the stream), never a
//!   panic;
//! - on success the client decodes the edited stream, exactly the other calls remain (id, name,
//!   arguments, per choice, in order) and the choice's text carries the message.
#![no_main]

use guard_core::stream::AssembledToolCall;
use guard_core::stream_edit::remove_streamed_tool_calls;
use guard_core::ErrorKind;
use guard_fuzz::{assemble_bytes, Headed};
use libfuzzer_sys::fuzz_target;

const MESSAGE: &str = "The tool call was refused by policy.";

type CallRow = (Option<String>, Option<String>, String);

fn row(c: &AssembledToolCall) -> CallRow {
    (c.id.clone(), c.name.clone(), c.arguments.clone())
}

fuzz_target!(|data: &[u8]| {
    let Some(h) = Headed::split(data) else { return };
    let shape = h.shape();
    let body = h.payload;
    let max = if h.flag(2) { 512 } else { 1 << 20 };

    let unchanged = remove_streamed_tool_calls(shape, body, max, &[], MESSAGE);
    assert_eq!(unchanged.as_deref().ok(), Some(body), "no calls changed the body");

    let Some(before) = assemble_bytes(shape, body) else {
        // Undecodable streams: still never a panic.
        let _ = remove_streamed_tool_calls(shape, body, max, &[(0, 0)], MESSAGE);
        return;
    };
    let mask = u16::from_le_bytes([h.ctl[1], h.ctl[2]]);
    let mut calls = Vec::new();
    let mut bit = 0;
    for (ci, choice) in before.choices.iter().enumerate() {
        for tc in &choice.tool_calls {
            if mask & (1 << (bit % 16)) != 0 {
                calls.push((ci, tc.index));
            }
            bit += 1;
        }
    }
    let bogus = h.flag(3);
    if bogus {
        calls.push((usize::from(h.ctl[3] & 3), usize::from(h.ctl[3] >> 2)));
    }
    if calls.is_empty() {
        return;
    }
    let out = match remove_streamed_tool_calls(shape, body, max, &calls, MESSAGE) {
        Ok(out) => out,
        Err(e) => {
            assert!(
                matches!(e.kind(), ErrorKind::TooLarge | ErrorKind::Unparsable | ErrorKind::BadLocation),
                "{e}"
            );
            return;
        }
    };
    let after = assemble_bytes(shape, &out).expect("edited stream does not decode");
    for (ci, choice) in before.choices.iter().enumerate() {
        let want: Vec<CallRow> = choice
            .tool_calls
            .iter()
            .filter(|tc| !calls.contains(&(ci, tc.index)))
            .map(row)
            .collect();
        let got: Vec<CallRow> = after
            .choices
            .get(ci)
            .map(|c| c.tool_calls.iter().map(row).collect())
            .unwrap_or_default();
        assert_eq!(got, want, "choice {ci}: other calls than the removed ones left");
        if calls.iter().any(|(c, _)| *c == ci) {
            let text = after.choices.get(ci).map(|c| c.content.as_str()).unwrap_or_default();
            assert!(text.contains(MESSAGE), "choice {ci} lacks the message");
        }
    }
});
