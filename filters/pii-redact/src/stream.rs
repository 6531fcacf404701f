//! Whole texts and streams through the engine.
//!
//! - [`rewrite`]: one complete string (a message, a tool result, an answer).
//! - [`rewrite_json_args`]: OpenAI tool-call arguments (a JSON document in a string): every
//!   string value is scanned decoded and rewritten inside its JSON string; keys are left alone.
//! - [`PiiScanner`]: a [`StreamScanner`] for the core hold-back. Each call scans the channel's
//!   pending text, rewrites the part that is final and returns its length; the rest (text where
//!   an entity or a placeholder may still be forming) stays pending. So no byte reaches the
//!   client before it has been checked.

use crate::engine::{Direction, Engine, Hit, Scratch};
use crate::redact::{Redactor, Stats, TextKind, Vault};
use guard_core::holdback::StreamScanner;
use guard_core::stream::{Channel, ChannelKey};
use serde_json::Value;

/// Reusable buffers of one rewrite pass.
#[derive(Debug, Default)]
pub struct Buffers {
    hits: Vec<Hit>,
    out: String,
}

/// Rewrite one complete text; `None` when nothing changed.
pub fn rewrite(
    engine: &Engine,
    scratch: &mut Scratch,
    bufs: &mut Buffers,
    dir: Direction,
    text: &str,
    kind: TextKind,
    vault: &mut Vault,
    stats: &mut Stats,
) -> Option<String> {
    engine.scan(scratch, text, true, &mut bufs.hits);
    if bufs.hits.is_empty() {
        return None;
    }
    bufs.out.clear();
    let mut r = Redactor {
        engine,
        dir,
        vault,
        stats,
    };
    if r.apply(text, &bufs.hits, kind, &mut bufs.out) {
        Some(bufs.out.clone())
    } else {
        None
    }
}

/// Rewrite OpenAI tool-call arguments. A JSON document has its string values (not its keys)
/// rewritten and is serialised again; anything else is scanned as raw JSON text.
pub fn rewrite_json_args(
    engine: &Engine,
    scratch: &mut Scratch,
    bufs: &mut Buffers,
    dir: Direction,
    text: &str,
    vault: &mut Vault,
    stats: &mut Stats,
) -> Option<String> {
    let Ok(mut doc) = serde_json::from_str::<Value>(text) else {
        return rewrite(
            engine,
            scratch,
            bufs,
            dir,
            text,
            TextKind::JsonRaw,
            vault,
            stats,
        );
    };
    let mut changed = false;
    let mut stack: Vec<&mut Value> = vec![&mut doc];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) => {
                if let Some(new) =
                    rewrite(engine, scratch, bufs, dir, s, TextKind::Plain, vault, stats)
                {
                    *s = new;
                    changed = true;
                }
            }
            Value::Array(a) => stack.extend(a.iter_mut().rev()),
            Value::Object(m) => stack.extend(m.values_mut().rev()),
            _ => {}
        }
    }
    if changed {
        serde_json::to_string(&doc).ok()
    } else {
        None
    }
}

/// The hold-back scanner of one stream direction.
pub struct PiiScanner<'a> {
    pub engine: &'a Engine,
    pub scratch: &'a mut Scratch,
    pub bufs: &'a mut Buffers,
    pub dir: Direction,
    pub vault: &'a mut Vault,
    pub stats: &'a mut Stats,
    /// Largest pending text seen (bytes), for the record and the bound test.
    pub max_pending: usize,
}

impl StreamScanner for PiiScanner<'_> {
    fn scan(&mut self, key: ChannelKey, pending: &mut String, end: bool) -> usize {
        self.max_pending = self.max_pending.max(pending.len());
        let fin = self
            .engine
            .scan(self.scratch, pending, end, &mut self.bufs.hits);
        if self.bufs.hits.is_empty() {
            return fin;
        }
        let kind = if matches!(key.channel, Channel::ToolArgs { .. }) {
            TextKind::JsonRaw
        } else {
            TextKind::Plain
        };
        let mut r = Redactor {
            engine: self.engine,
            dir: self.dir,
            vault: self.vault,
            stats: self.stats,
        };
        self.bufs.out.clear();
        let head = pending.get(..fin).unwrap_or_default();
        if !r.apply(head, &self.bufs.hits, kind, &mut self.bufs.out) {
            return fin;
        }
        let new_fin = self.bufs.out.len();
        self.bufs
            .out
            .push_str(pending.get(fin..).unwrap_or_default());
        std::mem::swap(pending, &mut self.bufs.out);
        new_fin
    }
}
