//! pii-redact pseudonyms: restore(pseudonymize(x)) == x, for the whole text and for the answer
//! streamed back in any chunking (the crate's property test `pseudonyms_round_trip`, over
//! arbitrary text here). Every type is pseudonymised in requests; as in the filter, the
//! placeholders a request already holds are reserved before it is rewritten, and answers are
//! only restored (not scanned for new entities).
//!
//! One documented exception (docs/pii-redact.md, "Placeholders"): two spellings of one value
//! share a placeholder and both come back as the first. Which spellings are one value is
//! decided here on its own ([`spelling`]: e-mail and IP case, the separators of a number), not
//! with the crate's `canonical`, so a value the crate merges wrongly still fails the round trip.
#![no_main]

use guard_fuzz::pii::{chat_stream, run_stream, stream_text, whole};
use guard_fuzz::Headed;
use libfuzzer_sys::fuzz_target;
use pii_redact::engine::{Scratch, Action, Direction, Engine, Hit, Settings};
use pii_redact::patterns::{self, Ty};
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
        let want = first_spellings(engine, scratch, &text);
        let restored = whole(engine, scratch, Direction::Response, &masked, TextKind::Plain, &mut vault);
        assert_eq!(restored, want, "pseudonymised text {masked:?} does not restore");
        let stream = chat_stream(&masked, delta);
        let cuts = guard_fuzz::cuts(stream.len(), u64::from(u16::from_le_bytes([h.ctl[1], h.ctl[2]])), h.ctl[3]);
        if let Ok((out, _)) = run_stream(engine, scratch, Direction::Response, &stream, &cuts, &mut vault) {
            assert_eq!(stream_text(&out), want, "streamed answer does not restore");
        }
    }));
});

/// `text` with every entity written as the first spelling of its value in `text` (`text`
/// itself when each value is always written alike): what the answer restores to.
fn first_spellings(engine: &Engine, scratch: &mut Scratch, text: &str) -> String {
    let mut hits: Vec<Hit> = Vec::new();
    engine.scan(scratch, text, true, &mut hits);
    let mut seen: Vec<(Ty, String, &str)> = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for h in hits.iter().filter(|h| h.placeholder.is_none()) {
        let value = &text[h.start..h.end];
        let key = spelling(h.ty, value);
        let first = match seen.iter().find(|(ty, k, _)| *ty == h.ty && *k == key) {
            Some((_, _, first)) => *first,
            None => {
                seen.push((h.ty, key, value));
                value
            }
        };
        out.push_str(&text[last..h.start]);
        out.push_str(first);
        last = h.end;
    }
    out.push_str(&text[last..]);
    out
}

/// What two spellings of one value have in common, as docs/pii-redact.md allows: the case of
/// an e-mail or IP address; for phone, card, IBAN and SSN numbers the case of their letters and
/// their separators (space `-` `.` `/` `(` `)`; a phone number's `+` is not one).
fn spelling(ty: Ty, value: &str) -> String {
    match ty {
        patterns::EMAIL => value.to_lowercase(),
        patterns::IP_ADDRESS => value.to_ascii_lowercase(),
        patterns::PHONE | patterns::CREDIT_CARD | patterns::IBAN | patterns::US_SSN => value
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '/' | '(' | ')'))
            .map(|c| c.to_ascii_lowercase())
            .collect(),
        _ => value.to_string(),
    }
}
