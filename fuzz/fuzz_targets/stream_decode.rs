//! guard-core `stream::StreamDecoder` + `StreamAssembler` for each API shape.
//!
//! Invariants:
//! - decoding never panics, and a decode error is `Unparsable` or `TooLarge`;
//! - no empty `Delta::Text` (the module's contract);
//! - the deltas of a stream split anywhere equal those of the unsplit stream;
//! - the assembled answer holds exactly the text deltas, per choice and channel, in order;
//! - `is_usage_only_chunk` is only true for OpenAI chat events.
#![no_main]

use guard_core::api::ApiShape;
use guard_core::sse::{SseEvent, SseParser};
use guard_core::stream::{is_usage_only_chunk, Channel, Delta, StreamAssembler, StreamDecoder};
use guard_core::ErrorKind;
use guard_fuzz::{chunks, Headed};
use libfuzzer_sys::fuzz_target;

/// Deltas of every event until the first decode error (and that error's kind).
fn decode(shape: ApiShape, input: &[u8], cuts: &[usize]) -> (Vec<Delta>, Option<ErrorKind>) {
    let mut p = SseParser::new(1 << 20);
    let mut d = StreamDecoder::new(shape);
    let mut deltas = Vec::new();
    let mut events: Vec<SseEvent> = Vec::new();
    for c in chunks(input, cuts) {
        if p.push(c, &mut |e| events.push(e)).is_err() {
            return (deltas, Some(ErrorKind::TooLarge));
        }
        for e in events.drain(..) {
            assert!(shape == ApiShape::OpenAiChat || !is_usage_only_chunk(shape, &e));
            if let Err(err) = d.decode(&e, &mut deltas) {
                return (deltas, Some(err.kind()));
            }
        }
    }
    (deltas, None)
}

fuzz_target!(|data: &[u8]| {
    let Some(h) = Headed::split(data) else { return };
    let shape = h.shape();
    let cuts = h.cuts();
    let (whole, werr) = decode(shape, h.payload, &[]);
    let (split, serr) = decode(shape, h.payload, &cuts);
    assert_eq!(whole, split, "deltas depend on chunking (cuts {cuts:?})");
    assert_eq!(werr, serr);
    if let Some(k) = werr {
        assert!(matches!(k, ErrorKind::Unparsable | ErrorKind::TooLarge), "{k:?}");
    }

    for d in &whole {
        if let Delta::Text { text, .. } = d {
            assert!(!text.is_empty(), "empty text delta");
        }
    }

    // The assembler: text per (choice, channel) is the concatenation of the text deltas.
    let mut asm = StreamAssembler::new(1 << 22);
    let mut applied = 0;
    for d in &whole {
        if asm.apply(d).is_err() {
            break;
        }
        applied += 1;
    }
    let got = asm.into_result();
    let mut want: Vec<(usize, Channel, String)> = Vec::new();
    for d in &whole[..applied] {
        if let Delta::Text { key, text } = d {
            match want.iter_mut().find(|(c, ch, _)| *c == key.choice && *ch == key.channel) {
                Some((_, _, s)) => s.push_str(text),
                None => want.push((key.choice, key.channel, text.clone())),
            }
        }
    }
    for (choice, channel, text) in want {
        let c = &got.choices[choice];
        let have = match channel {
            Channel::Content => c.content.as_str(),
            Channel::Reasoning => c.reasoning.as_str(),
            Channel::Refusal => c.refusal.as_str(),
            Channel::ToolArgs { index } => c
                .tool_calls
                .iter()
                .find(|t| t.index == index)
                .map(|t| t.arguments.as_str())
                .unwrap_or_default(),
        };
        assert_eq!(have, text, "assembled {channel:?} of choice {choice}");
    }
    if whole[..applied].iter().any(|d| matches!(d, Delta::Done)) {
        assert!(got.done);
    }
});
