//! pii-redact's streaming path (`stream::PiiScanner` in the core hold-back): a stream split
//! anywhere gives the same text as the whole answer's rewrite (the crate's property test
//! `streams_match_whole_answers`, over arbitrary text here), the output stays valid SSE with
//! its `[DONE]`, and the hold-back stays within its bound or fails with an error.
#![no_main]

use guard_fuzz::pii::{chat_stream, run_stream, stream_text, whole};
use guard_fuzz::Headed;
use libfuzzer_sys::fuzz_target;
use pii_redact::engine::{Scratch, Direction, Engine, Settings};
use pii_redact::redact::{TextKind, Vault};

const MAX_TEXT: usize = 2 * 1024;
const MAX_HOLD: usize = 256;

thread_local! {
    static SCRATCH: std::cell::RefCell<Option<Scratch>> = const { std::cell::RefCell::new(None) };
    static ENGINE: Engine = Engine::compile(
        Settings { max_hold_bytes: MAX_HOLD, ..Settings::default() },
        "",
    )
    .expect("the default settings compile");
}

fuzz_target!(|data: &[u8]| {
    let Some(h) = Headed::split(data) else { return };
    let text = guard_fuzz::text(h.payload, MAX_TEXT);
    let delta = 1 + usize::from(h.ctl[0] >> 4) % 9;
    ENGINE.with(|engine| SCRATCH.with(|cell| {
        let mut cell = cell.borrow_mut();
        let scratch = cell.get_or_insert_with(|| engine.scratch());
        let want = whole(engine, scratch, Direction::Response, &text, TextKind::Plain, &mut Vault::new(64));
        let stream = chat_stream(&text, delta);
        let cuts = guard_fuzz::cuts(stream.len(), u64::from(u16::from_le_bytes([h.ctl[1], h.ctl[2]])), h.ctl[3]);
        match run_stream(engine, scratch, Direction::Response, &stream, &cuts, &mut Vault::new(64)) {
            Ok((out, max_pending)) => {
                assert!(max_pending <= MAX_HOLD + delta * 4, "held {max_pending} bytes");
                assert_eq!(stream_text(&out), want, "stream (delta {delta}) differs from the whole answer");
            }
            Err(e) => assert!(e.contains("exceeds the limit"), "{e}"),
        }
    }));
});
