//! Conversation excerpts: bounded, then masked with pii-redact's engine.
//!
//! The filter sends the real text (`excerpt_raw`); the service never trusts a client to have
//! masked anything, so it derives the masked excerpt itself with the engine of pii-redact's
//! shipped default policy (`envoy/policies/pii-redact.json`). Every detected entity becomes
//! `[TYPE]` (`[EMAIL]`, `[CREDIT_CARD]`, ...), whatever the policy's per-type action; placeholders
//! already in the text (`<EMAIL_1>`) are kept.
//!
//! An excerpt longer than [`MAX_EXCERPT`] bytes keeps its end (the most recent messages): it is
//! cut on a char boundary, never inside a detected entity, and starts with [`ELLIPSIS`]; the
//! result, raw and masked alike, is at most [`MAX_EXCERPT`] bytes before masking.
//!
//! ```text
//! let masker = Masker::new()?;
//! let e = masker.excerpt("mail bob@example.com");
//! assert_eq!(e.masked, "mail [EMAIL]");
//! assert_eq!(e.raw, "mail bob@example.com");
//! ```

use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

use pii_redact::engine::{Engine, Hit, Scratch};

/// Most bytes of a stored excerpt (raw; the ellipsis of a cut one included).
pub const MAX_EXCERPT: usize = 8 * 1024;
/// Starts an excerpt whose beginning was cut off.
pub const ELLIPSIS: &str = "…";
/// Text scanned before the cut of a long excerpt, so that an entity crossing the cut is seen
/// whole (the longest entity, a PEM private key, spans at most 16 KiB).
const LOOKBEHIND: usize = 16 * 1024 + 64;

/// A bounded excerpt and its masked form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excerpt {
    pub raw: String,
    pub masked: String,
}

/// The compiled PII policy and its scan scratch, shared by every request.
pub struct Masker {
    engine: Engine,
    /// (scratch, hits): reused across requests; a scan of ≤ 24 KiB holds the lock briefly.
    scratch: Mutex<(Scratch, Vec<Hit>)>,
}

impl Masker {
    /// The masker of pii-redact's shipped default policy.
    pub fn new() -> anyhow::Result<Masker> {
        let engine = Engine::default_policy()
            .map_err(|e| anyhow::anyhow!("the default pii-redact policy does not compile: {e}"))?;
        let scratch = Mutex::new((engine.scratch(), Vec::new()));
        Ok(Masker { engine, scratch })
    }

    /// `text` bounded to [`MAX_EXCERPT`] bytes, and masked.
    pub fn excerpt(&self, text: &str) -> Excerpt {
        let (cut, truncated) = match text.len().checked_sub(MAX_EXCERPT) {
            None | Some(0) => (0, false),
            Some(over) => (
                ceil_boundary(text, over.saturating_add(ELLIPSIS.len())),
                true,
            ),
        };
        let start = floor_boundary(text, cut.saturating_sub(LOOKBEHIND));
        let region = text.get(start..).unwrap_or_default();
        let mut guard = self.scratch.lock().unwrap_or_else(PoisonError::into_inner);
        let (scratch, hits) = &mut *guard;
        self.engine.scan(scratch, region, true, hits);
        // Never keep the tail of an entity that starts before the cut: cut after it.
        let mut keep = cut.saturating_sub(start);
        if let Some(h) = hits.iter().find(|h| h.start < keep && keep < h.end) {
            keep = h.end;
        }
        let kept = region.get(keep..).unwrap_or_default();
        let prefix = if truncated { ELLIPSIS } else { "" };
        let mut masked = String::with_capacity(prefix.len() + kept.len());
        masked.push_str(prefix);
        let mut last = keep;
        for h in hits.iter().filter(|h| h.start >= keep) {
            if h.placeholder.is_some() {
                continue;
            }
            let Some(before) = region.get(last..h.start) else {
                continue;
            };
            masked.push_str(before);
            let _ = write!(masked, "[{}]", self.engine.type_name(h.ty));
            last = h.end;
        }
        masked.push_str(region.get(last..).unwrap_or_default());
        Excerpt {
            raw: format!("{prefix}{kept}"),
            masked,
        }
    }
}

/// The largest char boundary at or before `i`.
fn floor_boundary(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The smallest char boundary at or after `i`.
fn ceil_boundary(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while i < text.len() && !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn masks_every_entity_as_its_type() {
        let m = Masker::new().unwrap();
        let cases: &[(&str, &str, &str)] = &[
            ("empty", "", ""),
            ("nothing", "pay the invoice", "pay the invoice"),
            (
                "email and card",
                "mail bob@example.com, card 4111 1111 1111 1111.",
                "mail [EMAIL], card [CREDIT_CARD].",
            ),
            (
                "phone",
                "call me at +1 415 555 0100 today",
                "call me at [PHONE] today",
            ),
            (
                "placeholders stay",
                "pay <EMAIL_1> and [PHONE]",
                "pay <EMAIL_1> and [PHONE]",
            ),
        ];
        for (name, input, want) in cases {
            let e = m.excerpt(input);
            assert_eq!(e.masked, *want, "{name}");
            assert_eq!(e.raw, *input, "{name}");
        }
    }

    #[test]
    fn long_excerpts_keep_their_end() {
        let m = Masker::new().unwrap();
        // Exactly fits: unchanged.
        let fits = "a".repeat(MAX_EXCERPT);
        assert_eq!(m.excerpt(&fits).raw, fits);
        // One over: cut from the start, ellipsis first, bounded.
        let over = format!("b{fits}");
        let e = m.excerpt(&over);
        assert!(e.raw.starts_with(ELLIPSIS), "{}", &e.raw[..8]);
        assert_eq!(e.raw.len(), MAX_EXCERPT);
        assert_eq!(e.masked, e.raw);
        // Multi-byte chars: cut on a char boundary.
        let wide = "é".repeat(MAX_EXCERPT);
        let e = m.excerpt(&wide);
        assert!(e.raw.len() <= MAX_EXCERPT);
        assert!(e.raw.starts_with(ELLIPSIS) && e.raw.ends_with('é'));
    }

    #[test]
    fn the_cut_never_splits_an_entity() {
        let m = Masker::new().unwrap();
        let card = "4111 1111 1111 1111";
        let tail = format!(" {}", "x".repeat(MAX_EXCERPT - ELLIPSIS.len() - 7));
        // The cut falls inside the card number: the card is dropped whole.
        let text = format!("pay with {card}{tail}");
        let e = m.excerpt(&text);
        assert!(!e.raw.contains("1111"), "partial card kept");
        assert_eq!(e.raw, format!("{ELLIPSIS}{tail}"));
        assert_eq!(e.masked, e.raw);
        // A card after the cut is masked.
        let text = format!("{}card {card}", "y".repeat(MAX_EXCERPT));
        let e = m.excerpt(&text);
        assert!(e.raw.ends_with(card));
        assert!(e.masked.ends_with("card [CREDIT_CARD]"), "{}", e.masked);
    }
}
