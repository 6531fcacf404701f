//! guard-core `holdback::HoldBack` with a pipeline of scanners whose answers the fuzzer picks
//! (any value, char boundaries or not, past the end or not).
//!
//! Invariants (the module's contract):
//! - scanners that do not rewrite lose and duplicate nothing: per channel, the released text
//!   is a prefix of the pushed text and, once the channel ends, all of it;
//! - `held(key)` is what was pushed and not yet released, never over the bound without an
//!   error (`TooLarge`), and a channel is open from its first non-empty push until its end;
//! - an upper-casing stage sees and passes text in order: the released text is the
//!   upper-cased pushed text.
#![no_main]

use guard_core::holdback::{HoldBack, StreamScanner};
use guard_core::stream::{Channel, ChannelKey};
use guard_core::ErrorKind;
use libfuzzer_sys::fuzz_target;

/// Returns fuzzer-chosen lengths (clamped by HoldBack); may upper-case its pending text.
struct Scripted<'a> {
    answers: &'a [u8],
    at: usize,
    upper: bool,
}

impl StreamScanner for Scripted<'_> {
    fn scan(&mut self, _: ChannelKey, pending: &mut String, end: bool) -> usize {
        if self.upper {
            *pending = pending.to_uppercase();
        }
        let a = self.answers.get(self.at % self.answers.len().max(1)).copied().unwrap_or(0);
        self.at += 1;
        if end {
            return pending.len();
        }
        match a >> 6 {
            0 => pending.len(),
            1 => 0,
            2 => usize::from(a & 63),
            _ => pending.len().saturating_sub(usize::from(a & 63)),
        }
    }
}

fn key(b: u8) -> ChannelKey {
    let channel = match (b >> 2) & 3 {
        0 => Channel::Content,
        1 => Channel::Reasoning,
        2 => Channel::Refusal,
        _ => Channel::ToolArgs { index: usize::from(b >> 4) },
    };
    ChannelKey::new(usize::from(b & 3), channel)
}

#[derive(Default, Clone)]
struct Ledger {
    key: Option<ChannelKey>,
    pushed: String,
    released: String,
}

fuzz_target!(|data: &[u8]| {
    if data.len() > guard_fuzz::MAX_INPUT || data.len() < 3 {
        return;
    }
    let max_hold = usize::from(data[0]) * 4;
    let nscanners = usize::from(data[1] % 4);
    let upper = data[1] & 4 != 0;
    let (answers, ops) = data[2..].split_at(data[2..].len() / 4);
    let mut scanners: Vec<Scripted<'_>> = (0..nscanners)
        .map(|i| Scripted { answers, at: i * 7, upper: upper && i == 0 })
        .collect();
    let mut hb = HoldBack::new(max_hold);
    let mut ledgers: Vec<Ledger> = Vec::new();
    let mut released = String::new();
    let mut i = 0;
    while i + 2 <= ops.len() {
        let (a, n) = (ops[i], usize::from(ops[i + 1] % 24));
        i += 2;
        let raw = &ops[i..(i + n).min(ops.len())];
        i += raw.len();
        let text = String::from_utf8_lossy(raw);
        let k = key(a);
        let end = a & 0x80 != 0;
        let mut refs: Vec<&mut dyn StreamScanner> =
            scanners.iter_mut().map(|s| s as &mut dyn StreamScanner).collect();
        let res = hb.push(k, &text, end, &mut refs, &mut released);
        let pos = match ledgers.iter().position(|l| l.key == Some(k)) {
            Some(p) => p,
            None => {
                ledgers.push(Ledger { key: Some(k), ..Ledger::default() });
                ledgers.len() - 1
            }
        };
        let l = &mut ledgers[pos];
        l.pushed.push_str(&text);
        l.released.push_str(&released);
        let want = if upper && nscanners > 0 { l.pushed.to_uppercase() } else { l.pushed.clone() };
        match res {
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::TooLarge);
                return;
            }
            Ok(()) => {}
        }
        if upper && nscanners > 0 {
            // Upper-casing may change lengths: compare once the channel is flushed.
            if end {
                assert_eq!(l.released, want, "upper-cased channel {k:?}");
            }
        } else {
            assert!(want.starts_with(&l.released), "released text is not a prefix of pushed");
            assert_eq!(hb.held(k), want.len() - l.released.len(), "held bytes of {k:?}");
            assert!(hb.held(k) <= max_hold, "held over the bound without an error");
            if end {
                assert_eq!(l.released, want, "channel {k:?} ended with text missing");
            }
        }
        if end {
            assert_eq!(hb.held(k), 0);
            assert!(!hb.open_channels().contains(&k));
            l.pushed.clear();
            l.released.clear();
        } else if !l.pushed.is_empty() {
            assert!(hb.open_channels().contains(&k), "channel with text is not open");
        }
        let pending = hb.channels_with_pending();
        assert!(pending.windows(2).all(|w| w[0] < w[1]));
        assert!(pending.iter().all(|c| hb.held(*c) > 0));
    }
});
