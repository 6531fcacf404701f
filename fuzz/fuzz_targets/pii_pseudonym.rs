//! pii-redact pseudonyms: restore(pseudonymize(x)) == x, for the whole text and for the answer
//! streamed back in any chunking (the crate's property test `pseudonyms_round_trip`, over
//! arbitrary text here). Every type is pseudonymised in requests.
#![no_main]

use guard_fuzz::pii::{chat_stream, run_stream, stream_text, whole};
use guard_fuzz::Headed;
use libfuzzer_sys::fuzz_target;
use pii_redact::engine::{Action, Direction, Engine, Settings};
use pii_redact::redact::{TextKind, Vault};

const MAX_TEXT: usize = 2 * 1024;

thread_local! {
    static ENGINE: Engine = {
        let mut s = Settings { max_hold_bytes: 1024, ..Settings::default() };
        s.default.request = Action::Pseudonymize;
        s.entities.clear();
        Engine::compile(s, "").expect("pseudonymising settings compile")
    };
}

fuzz_target!(|data: &[u8]| {
    let Some(h) = Headed::split(data) else { return };
    let text = guard_fuzz::text(h.payload, MAX_TEXT);
    let delta = 1 + usize::from(h.ctl[0] >> 4) % 9;
    ENGINE.with(|engine| {
        let mut vault = Vault::new(256);
        let masked = whole(engine, Direction::Request, &text, TextKind::Plain, &mut vault);
        if vault.len() >= 256 {
            return; // vault full: values beyond it are redacted, not pseudonymised
        }
        let restored = whole(engine, Direction::Response, &masked, TextKind::Plain, &mut vault);
        assert_eq!(restored, text, "pseudonymised text {masked:?} does not restore");
        let stream = chat_stream(&masked, delta);
        let cuts = guard_fuzz::cuts(stream.len(), u64::from(u16::from_le_bytes([h.ctl[1], h.ctl[2]])), h.ctl[3]);
        if let Ok((out, _)) = run_stream(engine, Direction::Response, &stream, &cuts, &mut vault) {
            assert_eq!(stream_text(&out), text, "streamed answer does not restore");
        }
    });
});
