//! pii-redact `engine::Engine` (shipped default policy) on arbitrary text: the scan and the
//! whole-text rewrite in both directions.
//!
//! Invariants (the engine's contract):
//! - `scan` hits are in order, without overlaps, non-empty, on char boundaries; a complete scan
//!   is final to the end; an incomplete one returns a char boundary that every hit ends at or
//!   before;
//! - the rewrite of a complete text never panics; rewritten tool-call arguments stay valid JSON
//!   (a JSON document rewritten as raw JSON text, or value by value).
#![no_main]

use guard_fuzz::pii::whole;
use guard_fuzz::Headed;
use libfuzzer_sys::fuzz_target;
use pii_redact::engine::{Direction, Engine, Scratch};
use std::cell::RefCell;
use pii_redact::redact::{Stats, TextKind, Vault};
use pii_redact::stream::{Buffers, Pass};

const MAX_TEXT: usize = 16 * 1024;

thread_local! {
    static ENGINE: Engine = Engine::default_policy().expect("the shipped policy compiles");
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let Some(h) = Headed::split(data) else { return };
    let text = guard_fuzz::text(h.payload, MAX_TEXT);
    ENGINE.with(|engine| SCRATCH.with(|cell| {
        let mut cell = cell.borrow_mut();
        let scratch = cell.get_or_insert_with(|| engine.scratch());
        let mut hits = Vec::new();
        for complete in [true, false] {
            let fin = engine.scan(scratch, &text, complete, &mut hits);
            assert!(fin <= text.len() && text.is_char_boundary(fin));
            if complete {
                assert_eq!(fin, text.len());
            }
            let mut last = 0;
            for hit in &hits {
                assert!(hit.start < hit.end, "empty hit {hit:?}");
                assert!(hit.start >= last, "hits overlap or are out of order");
                assert!(hit.end <= fin, "hit {hit:?} past the final offset {fin}");
                assert!(text.is_char_boundary(hit.start) && text.is_char_boundary(hit.end));
                assert!(engine.type_info(hit.ty).is_some());
                last = hit.end;
            }
        }
        // A scan from an offset: hits lie after it.
        let mut from = usize::from(h.ctl[1]).min(text.len());
        while !text.is_char_boundary(from) {
            from -= 1;
        }
        engine.scan_from(scratch, &text, from, true, &mut hits);
        assert!(hits.iter().all(|x| x.start >= from), "scan_from found a hit before its start");

        let dir = if h.flag(2) { Direction::Response } else { Direction::Request };
        let mut vault = Vault::new(64);
        let _ = whole(engine, scratch, dir, &text, TextKind::Plain, &mut vault);

        // Tool-call arguments stay JSON.
        if serde_json::from_str::<serde_json::Value>(&text).is_ok() {
            let raw = whole(engine, scratch, dir, &text, TextKind::JsonRaw, &mut vault);
            assert!(
                serde_json::from_str::<serde_json::Value>(&raw).is_ok(),
                "raw JSON rewrite broke the document: {raw:?}"
            );
            let mut bufs = Buffers::default();
            let mut stats = Stats::default();
            let args = Pass {
                engine,
                scratch,
                bufs: &mut bufs,
                dir,
                vault: &mut vault,
                stats: &mut stats,
            }
            .json_args(&text);
            if let Some(a) = args {
                assert!(serde_json::from_str::<serde_json::Value>(&a).is_ok(), "{a:?}");
            }
        }
    }));
});
