//! pii-redact pseudonyms: restore(pseudonymize(x)) == x, for the whole text and for the answer
//! streamed back in any chunking (the crate's property test `pseudonyms_round_trip`, over
//! arbitrary text here). Every type is pseudonymised in requests; as in the filter, the
//! placeholders a request already holds are reserved before it is rewritten, and answers are
//! only restored (not scanned for new entities).
#![no_main]

use guard_fuzz::pii::{chat_stream, run_stream, stream_text, whole};
use guard_fuzz::Headed;
use libfuzzer_sys::fuzz_target;
use pii_redact::engine::{Scratch, Action, Direction, Engine, Settings};
use pii_redact::redact::{TextKind, Vault};

const MAX_TEXT: usize = 2 * 1024;

thread_local! {
    static SCRATCH: std::cell::RefCell<Option<Scratch>> = const { std::cell::RefCell::new(None) };
    static ENGINE: Engine = {
        // Answers only restore (`responses: false`): with answer scanning on, a placeholder
        // shorter than its value can bring a context word near a number that the request's
        // scan did not take for an entity, and the answer's own redaction would then change
        // text the round trip is about.
        let mut s = Settings { max_hold_bytes: 1024, responses: false, ..Settings::default() };
        s.default.request = Action::Pseudonymize;
        s.entities.clear();
        Engine::compile(s, "").expect("pseudonymising settings compile")
    };
}

fuzz_target!(|data: &[u8]| {
    let Some(h) = Headed::split(data) else { return };
    let text = guard_fuzz::text(h.payload, MAX_TEXT);
    let delta = 1 + usize::from(h.ctl[0] >> 4) % 9;
    ENGINE.with(|engine| SCRATCH.with(|cell| {
        let mut cell = cell.borrow_mut();
        let scratch = cell.get_or_insert_with(|| engine.scratch());
        let mut vault = Vault::new(256);
        // As the filter does for a request: placeholders the caller typed are never issued.
        engine.reserve_placeholders(scratch, &text, &mut vault);
        let masked = whole(engine, scratch, Direction::Request, &text, TextKind::Plain, &mut vault);
        if vault.len() >= 256 {
            return; // vault full: values beyond it are redacted, not pseudonymised
        }
        let restored = whole(engine, scratch, Direction::Response, &masked, TextKind::Plain, &mut vault);
        assert_eq!(restored, text, "pseudonymised text {masked:?} does not restore");
        let stream = chat_stream(&masked, delta);
        let cuts = guard_fuzz::cuts(stream.len(), u64::from(u16::from_le_bytes([h.ctl[1], h.ctl[2]])), h.ctl[3]);
        if let Ok((out, _)) = run_stream(engine, scratch, Direction::Response, &stream, &cuts, &mut vault) {
            assert_eq!(stream_text(&out), text, "streamed answer does not restore");
        }
    }));
});
