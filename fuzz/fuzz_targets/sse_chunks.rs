//! guard-core `sse::SseParser` under any chunking.
//!
//! Invariants (the module's contract):
//! - the events (type, data, last id) of a chunked parse equal those of the unsplit parse;
//! - the raw bytes handed out (events' `raw`, `take_skipped_raw`, `take_pending_raw`, in
//!   order) are exactly the input, however it was chunked;
//! - the event-size bound fails the same way whole and chunked (inputs without CR: a CRLF split
//!   across chunks moves its LF to the next event's `raw`, one byte of slack);
//! - the lenient `flush_unterminated` dispatches the same tail event whole and chunked, and its
//!   `raw` is a suffix of the input.
#![no_main]

use guard_core::sse::{SseEvent, SseParser};
use guard_fuzz::{chunks, Headed};
use libfuzzer_sys::fuzz_target;

type Key = (Option<String>, String, Option<String>);

fn key(e: &SseEvent) -> Key {
    (e.event.clone(), e.data.clone(), e.id.clone())
}

struct Run {
    events: Vec<Key>,
    /// Every byte handed out, in order.
    out: Vec<u8>,
    error: bool,
}

fn run(input: &[u8], cuts: &[usize], max: usize, take_skipped: bool, lenient: bool) -> Run {
    let mut p = SseParser::new(max);
    let mut events = Vec::new();
    let mut out = Vec::new();
    let mut error = false;
    for c in chunks(input, cuts) {
        let mut got = Vec::new();
        if p.push(c, &mut |e| got.push(e)).is_err() {
            error = true;
        }
        for e in got {
            out.extend_from_slice(&e.raw);
            events.push(key(&e));
        }
        if error {
            break;
        }
        if take_skipped {
            p.take_skipped_raw(&mut out);
        }
    }
    if !error {
        let mut got = Vec::new();
        let res = if lenient {
            p.flush_unterminated(&mut |e| got.push(e))
        } else {
            p.finish(&mut |e| got.push(e))
        };
        error = res.is_err();
        for e in got {
            assert!(input.ends_with(&e.raw), "flushed raw is not the input's tail");
            out.extend_from_slice(&e.raw);
            events.push(key(&e));
        }
        out.extend_from_slice(&p.take_pending_raw());
    }
    Run { events, out, error }
}

fuzz_target!(|data: &[u8]| {
    let Some(h) = Headed::split(data) else { return };
    let input = h.payload;
    // Event bound: tight (exercises TooLarge) or roomy.
    let max = match h.ctl[0] >> 6 {
        0 => usize::from(h.ctl[0] & 0x3F) * 4,
        1 => 256,
        _ => 1 << 20,
    };
    let take_skipped = h.flag(2);
    let lenient = h.flag(3);
    let cuts = h.cuts();

    let whole = run(input, &[], max, false, lenient);
    let split = run(input, &cuts, max, take_skipped, lenient);

    if !whole.error {
        assert_eq!(whole.out, input, "whole parse lost or added bytes");
    }
    if !split.error {
        assert_eq!(split.out, input, "chunked parse lost or added bytes (cuts {cuts:?})");
    }
    if !whole.error && !split.error {
        assert_eq!(whole.events, split.events, "events differ (cuts {cuts:?})");
    } else if !take_skipped && !input.contains(&b'\r') {
        assert_eq!(whole.error, split.error, "size bound depends on chunking (cuts {cuts:?})");
        // Up to the failure, the same events.
        let n = whole.events.len().min(split.events.len());
        assert_eq!(whole.events[..n], split.events[..n]);
    }
});
