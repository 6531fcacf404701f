//! prompt-guard `engine::Engine` under the shipped default policy
//! (`envoy/policies/prompt-guard.json`) on arbitrary text from every source, and its answer
//! policy (`exfil`) on arbitrary answers.
//!
//! Invariants:
//! - scores are finite and in 0..=1, the verdict is the one the thresholds give, a source out
//!   of scope is skipped;
//! - the scan does not depend on the scratch's history (reused = fresh), and `explain` gives
//!   the same scan (its documented contract);
//! - a neutralised answer holds no exfiltration link any more (rewriting it again finds none);
//! - the streaming exfil scanner, the answer split anywhere, releases exactly the whole-text
//!   rewrite.
#![no_main]

use guard_core::holdback::{HoldBack, StreamScanner};
use guard_core::segment::Source;
use guard_core::stream::{Channel, ChannelKey};
use guard_fuzz::{chunks, Headed};
use libfuzzer_sys::fuzz_target;
use prompt_guard::engine::{Engine, Scratch, Verdict};
use prompt_guard::exfil::ExfilScanner;

/// Longest text scanned per run.
const MAX_TEXT: usize = 16 * 1024;

const SOURCES: [Source; 8] = [
    Source::User,
    Source::ToolResult,
    Source::Document,
    Source::System,
    Source::Developer,
    Source::Assistant,
    Source::Reasoning,
    Source::ToolCall,
];

thread_local! {
    static ENGINE: Engine = Engine::default_policy().expect("the shipped policy compiles");
    static WARM: std::cell::RefCell<Option<Scratch>> = const { std::cell::RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let Some(h) = Headed::split(data) else { return };
    let text = guard_fuzz::text(h.payload, MAX_TEXT);
    let source = SOURCES[usize::from(h.ctl[0]) % SOURCES.len()];
    ENGINE.with(|engine| {
        let mut fresh = engine.scratch();
        let scan = engine.scan(&mut fresh, &text, source);
        let (scanned, flag_at, block_at) = engine.source_policy(source);
        assert_eq!(scan.skipped, !scanned);
        for s in [scan.score, scan.rule_score, scan.model_score] {
            assert!(s.is_finite() && (0.0..=1.0).contains(&s), "score {s} out of range");
        }
        let want = if scan.skipped || scan.score < flag_at {
            Verdict::Allow
        } else if scan.score < block_at {
            Verdict::Flag
        } else {
            Verdict::Block
        };
        assert_eq!(scan.verdict, want, "verdict disagrees with the thresholds");

        // A scratch that scanned other inputs before gives the same scan.
        WARM.with(|w| {
            let mut w = w.borrow_mut();
            let warm = w.get_or_insert_with(|| engine.scratch());
            let again = engine.scan(warm, &text, source);
            assert_eq!(again, scan, "scan depends on the scratch's history");
        });
        if h.flag(3) {
            let explained = engine.explain(&mut fresh, &text, source);
            assert_eq!(explained.scan, scan, "explain gives another scan");
        }

        // The answer policy.
        let policy = engine.exfil();
        let mut out = String::new();
        let found = policy.rewrite(&text, &mut out);
        if found == 0 {
            assert_eq!(out, text);
        }
        let mut twice = String::new();
        assert_eq!(policy.rewrite(&out, &mut twice), 0, "a neutralised answer still has a link: {out:?}");

        let key = ChannelKey::new(0, Channel::Content);
        let mut scanner = ExfilScanner::new(policy);
        let mut hb = HoldBack::new(1 << 20);
        let mut released = String::new();
        let mut streamed = String::new();
        let cuts = h.cuts();
        let pieces: Vec<&[u8]> = chunks(text.as_bytes(), &cuts).collect();
        let mut at = 0;
        for p in pieces {
            // Cut at char boundaries only (the stream carries strings).
            let end = at + p.len();
            if !text.is_char_boundary(end) {
                continue;
            }
            let piece = &text[at..end];
            at = end;
            let mut s: [&mut dyn StreamScanner; 1] = [&mut scanner];
            hb.push(key, piece, false, &mut s, &mut released).expect("hold-back bound");
            streamed.push_str(&released);
        }
        let mut s: [&mut dyn StreamScanner; 1] = [&mut scanner];
        hb.push(key, &text[at..], true, &mut s, &mut released).expect("hold-back bound");
        streamed.push_str(&released);
        assert_eq!(streamed, out, "streamed answer differs from the whole rewrite (cuts {cuts:?})");
    });
});
