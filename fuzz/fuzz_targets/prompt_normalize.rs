//! prompt-guard `normalize::Normalizer` on arbitrary text.
//!
//! Invariants (the crate's property tests, over any input here):
//! - every view byte maps back to a valid, char-aligned, non-empty range of the input, and the
//!   map is monotonic for the forward views; any range (mid-character, empty, out of range)
//!   maps to a valid range;
//! - the Reversed view is the Base view reversed by characters; Base has no leading, trailing
//!   or doubled spaces;
//! - a normaliser reused after another input gives the same views as a fresh one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prompt_guard::normalize::{Normalizer, View, ViewKind};

/// Longest text normalised per run.
const MAX_TEXT: usize = 8 * 1024;

fn check_maps(input: &str, views: &[View]) {
    for v in views {
        let len = v.text.len();
        let mut last = 0usize;
        for (i, c) in v.text.char_indices() {
            let (s, e) = v.original_range(i, i + c.len_utf8());
            assert!(s < e && e <= input.len(), "{:?} byte {i}: {s}..{e}", v.kind);
            assert!(input.is_char_boundary(s) && input.is_char_boundary(e));
            if v.kind != ViewKind::Reversed {
                assert!(s >= last, "{:?} not monotonic at {i}", v.kind);
                last = s;
            }
        }
        for i in (0..=len + 2).step_by(1 + len / 512) {
            for (a, b) in [(i, i + 1), (i, i), (i, len + 5), (i + 1, i)] {
                let (s, e) = v.original_range(a, b);
                assert!(s <= e && e <= input.len(), "{:?} ({a},{b}): {s}..{e}", v.kind);
                assert!(input.is_char_boundary(s) && input.is_char_boundary(e));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() > guard_fuzz::MAX_INPUT {
        return;
    }
    let text = guard_fuzz::text(data, MAX_TEXT);
    // A second input for the reuse check: the text's second half.
    let mut mid = text.len() / 2;
    while !text.is_char_boundary(mid) {
        mid -= 1;
    }
    let other = &text[mid..];

    let mut fresh = Normalizer::new();
    let mut views = Vec::new();
    fresh.views(&text, &mut views);
    assert_eq!(views[0].kind, ViewKind::Base);
    check_maps(&text, &views);
    let base = &views[0].text;
    let rev = views.iter().find(|v| v.kind == ViewKind::Reversed).expect("no reversed view");
    assert_eq!(rev.text.chars().rev().collect::<String>(), *base);
    assert!(!base.starts_with(' ') && !base.ends_with(' ') && !base.contains("  "), "{base:?}");
    let mut only_base = String::new();
    fresh.base(&text, &mut only_base);
    assert_eq!(&only_base, base, "base() differs from the Base view");

    // Reuse: the normaliser and the views of `text`, then `other`.
    fresh.views(other, &mut views);
    let mut again = Vec::new();
    Normalizer::new().views(other, &mut again);
    assert_eq!(views.len(), again.len());
    for (x, y) in views.iter().zip(&again) {
        assert_eq!((x.kind, &x.text), (y.kind, &y.text));
        for i in (0..=x.text.len()).step_by(1 + x.text.len() / 256) {
            assert_eq!(x.original_range(i, i + 1), y.original_range(i, i + 1));
        }
    }
});
