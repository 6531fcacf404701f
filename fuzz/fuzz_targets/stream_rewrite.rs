//! guard-core `holdback::StreamRewriter` (the hold-back's public stream API) for each shape.
//!
//! Invariants (the module's contract):
//! - with scanners that hold and alter nothing (none, or one that releases everything) the
//!   output is byte-identical to the input, whatever the chunking (OpenAI chat and Anthropic;
//!   an OpenAI Responses stream whose `*.done` events disagree with its deltas gets them
//!   restated, so there the client's assembled answer must be unchanged instead);
//! - with a scanner that holds everything until its channel ends, no text is lost or
//!   duplicated: per choice, the client assembles the same text (as a multiset of characters
//!   over content, reasoning, refusal and arguments: a malformed Anthropic stream that reuses a
//!   block index for another block type reads a late flushed delta in the new block's channel),
//!   the same finish reasons, end and error, and the output decodes;
//! - a failure is `TooLarge` or `Unparsable`, never a panic.
#![no_main]

use guard_core::api::ApiShape;
use guard_core::holdback::{StreamRewriter, StreamScanner};
use guard_core::stream::Assembled;
use guard_core::ErrorKind;
use guard_fuzz::{assemble_bytes, chunks, Headed, HoldAll, Pass};
use libfuzzer_sys::fuzz_target;

fn rewrite(
    shape: ApiShape,
    input: &[u8],
    cuts: &[usize],
    scanners: &mut [&mut dyn StreamScanner],
    max_hold: usize,
) -> Result<Vec<u8>, ErrorKind> {
    let mut rw = StreamRewriter::new(shape, 1 << 20, max_hold);
    let mut out = Vec::new();
    for c in chunks(input, cuts) {
        rw.push(c, scanners, &mut out).map_err(|e| e.kind())?;
    }
    rw.finish(scanners, &mut out).map_err(|e| e.kind())?;
    Ok(out)
}

/// What must survive holding: per choice the sorted characters of all its text and its finish
/// reason; whether the stream ended; its error.
type Kept = (Vec<(Vec<char>, Option<String>)>, bool, Option<String>);

fn kept(a: Assembled) -> Kept {
    let choices = a
        .choices
        .into_iter()
        .map(|c| {
            let mut chars: Vec<char> = c.content.chars().collect();
            chars.extend(c.reasoning.chars());
            chars.extend(c.refusal.chars());
            for t in &c.tool_calls {
                chars.extend(t.arguments.chars());
            }
            chars.sort_unstable();
            (chars, c.finish_reason)
        })
        .collect();
    (choices, a.done, a.error)
}

fn check_err(e: ErrorKind) {
    assert!(matches!(e, ErrorKind::TooLarge | ErrorKind::Unparsable), "{e:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some(h) = Headed::split(data) else { return };
    let shape = h.shape();
    let input = h.payload;
    let cuts = h.cuts();

    // Identity.
    let none = rewrite(shape, input, &[], &mut [], 0);
    let pass = rewrite(shape, input, &cuts, &mut [&mut Pass], 1 << 16);
    match (&none, &pass) {
        (Ok(a), Ok(b)) => {
            if shape == ApiShape::OpenAiResponses {
                assert_eq!(assemble_bytes(shape, a), assemble_bytes(shape, input));
                assert_eq!(assemble_bytes(shape, b), assemble_bytes(shape, input));
            } else {
                assert!(a == input, "no scanners changed the stream");
                assert!(b == input, "a pass-through scanner changed the stream (cuts {cuts:?})");
            }
        }
        (Err(a), Err(b)) => {
            check_err(*a);
            check_err(*b);
        }
        _ => panic!("identity rewrite: whole {none:?} vs chunked {pass:?} (cuts {cuts:?})"),
    }

    // Hold everything until the channel ends: the same answer.
    match rewrite(shape, input, &cuts, &mut [&mut HoldAll], 1 << 20) {
        Ok(out) => {
            let want = assemble_bytes(shape, input).map(kept);
            if want.is_some() {
                let got = assemble_bytes(shape, &out).map(kept);
                assert_eq!(got, want, "held stream assembles differently (cuts {cuts:?})");
            }
        }
        Err(e) => check_err(e),
    }
});
