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
use crate::redact::{JsonState, Redactor, Stats, TextKind, Vault};
use guard_core::holdback::StreamScanner;
use guard_core::segment::{JsonPath, Segment, Step};
use guard_core::stream::{Channel, ChannelKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Reusable buffers of one rewrite pass.
#[derive(Debug, Default)]
pub struct Buffers {
    hits: Vec<Hit>,
    out: String,
}

/// Everything one direction of an exchange rewrites with.
pub struct Pass<'a> {
    pub engine: &'a Engine,
    pub scratch: &'a mut Scratch,
    pub bufs: &'a mut Buffers,
    pub dir: Direction,
    pub vault: &'a mut Vault,
    pub stats: &'a mut Stats,
}

impl Pass<'_> {
    fn redactor(&mut self) -> Redactor<'_> {
        Redactor {
            engine: self.engine,
            dir: self.dir,
            vault: self.vault,
            stats: self.stats,
        }
    }

    /// Rewrite one complete text; `None` when nothing changed.
    pub fn text(&mut self, text: &str, kind: TextKind) -> Option<String> {
        self.engine
            .scan(self.scratch, text, true, &mut self.bufs.hits);
        if self.bufs.hits.is_empty() {
            return None;
        }
        let hits = std::mem::take(&mut self.bufs.hits);
        let mut out = std::mem::take(&mut self.bufs.out);
        out.clear();
        let changed = self.redactor().apply(text, &hits, kind, &mut out);
        let result = changed.then(|| out.clone());
        self.bufs.hits = hits;
        self.bufs.out = out;
        result
    }

    /// Rewrite OpenAI tool-call arguments. A JSON document has its string values (not its
    /// keys) rewritten and is serialised again; anything else is scanned as raw JSON text.
    pub fn json_args(&mut self, text: &str) -> Option<String> {
        let Ok(mut doc) = serde_json::from_str::<Value>(text) else {
            return self.text(text, TextKind::JsonRaw);
        };
        let mut changed = false;
        let mut stack: Vec<&mut Value> = vec![&mut doc];
        while let Some(v) = stack.pop() {
            match v {
                Value::String(s) => {
                    if let Some(new) = self.text(s, TextKind::Plain) {
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

    /// Rewrite every text segment of a body (hashing what was scanned into `hasher`, if any); the
    /// changed ones, by location.
    pub fn segments(
        &mut self,
        segments: &[Segment<'_>],
        mut hasher: Option<&mut Sha256>,
    ) -> Vec<(JsonPath, String)> {
        if self.dir == Direction::Request {
            for seg in segments {
                self.engine
                    .reserve_placeholders(self.scratch, &seg.text, self.vault);
            }
        }
        let mut changes = Vec::new();
        for seg in segments {
            if let Some(h) = hasher.as_deref_mut() {
                h.update(seg.text.as_bytes());
            }
            let new = if is_json_args(seg) {
                self.json_args(&seg.text)
            } else {
                self.text(&seg.text, TextKind::Plain)
            };
            if let Some(text) = new {
                changes.push((seg.path.clone(), text));
            }
        }
        changes
    }
}

/// Whether a segment is OpenAI tool-call arguments (JSON text in a string).
fn is_json_args(seg: &Segment<'_>) -> bool {
    matches!(seg.path.0.last(), Some(Step::Key(k)) if k == "arguments")
}

/// Rewrite one complete text with a fresh pass; `None` when nothing changed.
#[allow(clippy::too_many_arguments)]
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
    Pass {
        engine,
        scratch,
        bufs,
        dir,
        vault,
        stats,
    }
    .text(text, kind)
}

/// Per channel, the last bytes a stream released: context (words like "phone" before a number,
/// a command line before its `-p`) for the text that follows; for raw JSON (tool-call
/// arguments), where the released text left off.
#[derive(Debug, Default)]
pub struct Tails {
    tails: Vec<(ChannelKey, String, JsonState)>,
}

impl Tails {
    fn take(&mut self, key: ChannelKey) -> (String, JsonState) {
        match self.tails.iter().position(|(k, _, _)| *k == key) {
            Some(i) => {
                let (_, text, json) = self.tails.swap_remove(i);
                (text, json)
            }
            None => (String::new(), JsonState::default()),
        }
    }

    /// Keep at least the last `keep` bytes of `text` (from a char boundary) for the channel.
    fn put(&mut self, key: ChannelKey, mut text: String, keep: usize, json: JsonState) {
        if text.len() > keep {
            let mut cut = text.len() - keep;
            while cut > 0 && !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.drain(..cut);
        }
        if self.tails.len() < guard_core::stream::MAX_CHANNELS {
            self.tails.push((key, text, json));
        }
    }
}

/// The hold-back scanner of one stream direction.
pub struct PiiScanner<'a> {
    pub pass: Pass<'a>,
    pub tails: &'a mut Tails,
    /// Largest pending text seen (bytes), for the record and the bound test.
    pub max_pending: usize,
}

impl StreamScanner for PiiScanner<'_> {
    fn scan(&mut self, key: ChannelKey, pending: &mut String, end: bool) -> usize {
        self.max_pending = self.max_pending.max(pending.len());
        let p = &mut self.pass;
        // Scan what was released last (as context only) followed by the pending text.
        let (mut text, mut json) = self.tails.take(key);
        let from = text.len();
        text.push_str(pending);
        let fin = p
            .engine
            .scan_from(p.scratch, &text, from, end, &mut p.bufs.hits)
            .saturating_sub(from);
        let kind = if matches!(key.channel, Channel::ToolArgs { .. }) {
            TextKind::JsonRaw
        } else {
            TextKind::Plain
        };
        let mut hits = std::mem::take(&mut p.bufs.hits);
        for h in &mut hits {
            h.start = h.start.saturating_sub(from);
            h.end = h.end.saturating_sub(from);
        }
        let mut out = std::mem::take(&mut p.bufs.out);
        out.clear();
        let changed = !hits.is_empty()
            && p.redactor()
                .apply_in(pending, fin, &hits, kind, json, &mut out);
        let new_fin = if changed { out.len() } else { fin };
        if changed {
            out.push_str(pending.get(fin..).unwrap_or_default());
            std::mem::swap(pending, &mut out);
        }
        p.bufs.hits = hits;
        p.bufs.out = out;
        if !end {
            // The context for what follows is the original text (as a whole answer's scan
            // sees it), not the rewritten one.
            text.truncate(from.saturating_add(fin));
            if kind == TextKind::JsonRaw {
                json.advance(text.as_bytes().get(from..).unwrap_or_default());
            }
            self.tails.put(key, text, p.engine.context_bytes(), json);
        }
        new_fin
    }
}
