//! Carrying out actions on hits: redact, mask, keyed hash, numbered placeholders (with the
//! per-request [`Vault`] that restores them), block, allow.

use crate::engine::{Action, Direction, Engine, Hit};
use crate::patterns::{self, Ty};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One pseudonymised value.
#[derive(Debug, Clone)]
struct Entry {
    ty: Ty,
    num: u32,
    canonical: String,
    original: String,
    /// Issued for a request value (restored in the answer), not for a value the model wrote.
    restorable: bool,
}

/// The placeholders of one exchange: `<EMAIL_1>` ↔ the value. The same value (after
/// canonicalisation: case of e-mail addresses, separators in numbers) gets the same placeholder;
/// two values never share one; numbers that the request already contains literally are skipped.
#[derive(Debug, Clone, Default)]
pub struct Vault {
    entries: Vec<Entry>,
    /// Placeholder numbers in use per type (issued or seen literally).
    used: BTreeMap<Ty, Vec<u32>>,
    max_entries: usize,
}

impl Vault {
    pub fn new(max_entries: usize) -> Self {
        Vault {
            entries: Vec::new(),
            used: BTreeMap::new(),
            max_entries,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether an answer may contain placeholders to restore.
    pub fn has_restorable(&self) -> bool {
        self.entries.iter().any(|e| e.restorable)
    }

    /// A placeholder-looking token already in the text: its number is never issued.
    pub fn reserve(&mut self, ty: Ty, num: u32) {
        let used = self.used.entry(ty).or_default();
        if !used.contains(&num) {
            used.push(num);
        }
    }

    /// The placeholder number of a value (existing or new); `None` when the vault is full.
    pub fn number(&mut self, ty: Ty, original: &str, restorable: bool) -> Option<u32> {
        let canonical = canonical(ty, original);
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.ty == ty && e.canonical == canonical && e.restorable == restorable)
        {
            return Some(e.num);
        }
        if self.entries.len() >= self.max_entries {
            return None;
        }
        let used = self.used.entry(ty).or_default();
        let mut num = 1u32;
        while used.contains(&num) {
            num = num.checked_add(1)?;
        }
        used.push(num);
        self.entries.push(Entry {
            ty,
            num,
            canonical,
            original: original.to_string(),
            restorable,
        });
        Some(num)
    }

    /// The original value of a placeholder issued for a request.
    pub fn original(&self, ty: Ty, num: u32) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.ty == ty && e.num == num && e.restorable)
            .map(|e| e.original.as_str())
    }
}

/// The form under which two spellings of one value are the same value: e-mail addresses
/// without case, numbers without separators. A phone number keeps its `+`: `+20 7946 0958`
/// (country code 20) and `20 7946 0958` (a national number) are different numbers.
pub fn canonical(ty: Ty, value: &str) -> String {
    match ty {
        patterns::EMAIL => value.to_lowercase(),
        patterns::PHONE => value
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '+')
            .map(|c| c.to_ascii_uppercase())
            .collect(),
        patterns::CREDIT_CARD | patterns::IBAN | patterns::US_SSN => value
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_uppercase())
            .collect(),
        patterns::IP_ADDRESS => value.to_ascii_lowercase(),
        _ => value.to_string(),
    }
}

/// What one direction of an exchange found and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Entities found, by type and the action applied (or, in dry run, the action that would be).
    pub found: BTreeMap<(Ty, Action), u32>,
    /// Types whose action is `block`.
    pub blocked: Vec<Ty>,
    /// Placeholders restored to their values.
    pub restored: u32,
    /// Pseudonyms that could not be issued (vault full): redacted instead.
    pub vault_full: u32,
}

impl Stats {
    pub fn total(&self) -> u32 {
        self.found.values().fold(0u32, |a, b| a.saturating_add(*b))
    }

    pub fn merge(&mut self, other: &Stats) {
        for (k, v) in &other.found {
            let slot = self.found.entry(*k).or_insert(0);
            *slot = slot.saturating_add(*v);
        }
        for t in &other.blocked {
            if !self.blocked.contains(t) {
                self.blocked.push(*t);
            }
        }
        self.restored = self.restored.saturating_add(other.restored);
        self.vault_full = self.vault_full.saturating_add(other.vault_full);
    }

    /// Counts by type name (for records: never the values).
    pub fn by_type(&self, engine: &Engine) -> BTreeMap<String, u32> {
        let mut m = BTreeMap::new();
        for ((ty, _), n) in &self.found {
            let slot = m.entry(engine.type_name(*ty).to_string()).or_insert(0u32);
            *slot = slot.saturating_add(*n);
        }
        m
    }
}

/// How the text being rewritten is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// A decoded string.
    Plain,
    /// The raw text of a JSON document (streamed tool-call arguments): replacements keep every
    /// escape sequence whole and restored values are JSON-escaped; an entity that is a whole
    /// JSON number becomes a JSON string (`4111111111111111` → `"[CREDIT_CARD]"`), one that is
    /// part of a number (after a sign, in a fraction or before an exponent: a quantity, not an
    /// identifier) is left alone.
    JsonRaw,
}

/// Where a piece of raw JSON text starts: inside a string or not, and the byte before it. A
/// stream of tool-call arguments carries it from one released piece to the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonState {
    in_string: bool,
    escaped: bool,
    /// The byte before (0: none).
    last: u8,
}

impl JsonState {
    /// The state after `bytes` more.
    pub fn advance(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
            } else if b == b'"' {
                self.in_string = true;
            }
            self.last = b;
        }
    }
}

/// An entity outside any JSON string, in raw JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bare {
    /// A whole JSON number: replaced by a JSON string.
    Number,
    /// Part of a JSON number (sign, fraction, exponent): left alone.
    PartOfNumber,
    /// No JSON number at all (text that is no JSON): replaced as in plain text.
    Text,
}

fn bare(value: &[u8], before: u8, after: Option<u8>) -> Bare {
    let dots = value.iter().filter(|&&b| b == b'.').count();
    if dots > 1 || !value.iter().all(|&b| b.is_ascii_digit() || b == b'.') {
        return Bare::Text;
    }
    let number_byte = |b: u8| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E');
    if dots == 1 || number_byte(before) || after.is_some_and(number_byte) {
        Bare::PartOfNumber
    } else {
        Bare::Number
    }
}

/// Rewrites hits in one direction.
pub struct Redactor<'a> {
    pub engine: &'a Engine,
    pub dir: Direction,
    pub vault: &'a mut Vault,
    pub stats: &'a mut Stats,
}

impl Redactor<'_> {
    /// Append `text` with `hits` (sorted, non-overlapping, from [`Engine::scan`] on `text`)
    /// carried out to `out`. Returns whether anything changed.
    pub fn apply(&mut self, text: &str, hits: &[Hit], kind: TextKind, out: &mut String) -> bool {
        self.apply_in(text, text.len(), hits, kind, JsonState::default(), out)
    }

    /// [`Redactor::apply`] to `text[..upto]` (every hit ends there or before; `text[upto..]`
    /// only shows what follows), raw JSON text starting in state `json`.
    pub fn apply_in(
        &mut self,
        text: &str,
        upto: usize,
        hits: &[Hit],
        kind: TextKind,
        mut json: JsonState,
        out: &mut String,
    ) -> bool {
        let dry = self.engine.settings.dry_run;
        let bytes = text.as_bytes();
        let mut last = 0usize;
        let mut walked = 0usize;
        let mut changed = false;
        for h in hits {
            let mut start = h.start;
            let mut quote = false;
            if kind == TextKind::JsonRaw && h.start >= walked {
                json.advance(bytes.get(walked..h.start).unwrap_or_default());
                walked = h.start;
                if json.in_string {
                    start = json_safe_start(text, start, h.end);
                } else if h.placeholder.is_none() {
                    let value = bytes.get(h.start..h.end).unwrap_or_default();
                    match bare(value, json.last, bytes.get(h.end).copied()) {
                        Bare::Number => quote = true,
                        Bare::PartOfNumber => continue,
                        Bare::Text => {}
                    }
                }
            }
            if start < last || h.end <= start || h.end > upto {
                continue;
            }
            let (Some(before), Some(value)) = (text.get(last..start), text.get(start..h.end))
            else {
                continue;
            };
            if let Some(num) = h.placeholder {
                match self.dir {
                    Direction::Request => self.vault.reserve(h.ty, num),
                    Direction::Response => {
                        if let Some(orig) = self.vault.original(h.ty, num) {
                            self.stats.restored = self.stats.restored.saturating_add(1);
                            if !dry {
                                out.push_str(before);
                                match kind {
                                    TextKind::Plain => out.push_str(orig),
                                    TextKind::JsonRaw => push_json_escaped(orig, out),
                                }
                                last = h.end;
                                changed = true;
                            }
                        }
                    }
                }
                continue;
            }
            if self.dir == Direction::Response && !self.engine.settings.responses {
                // Answers are not scanned: only placeholders are restored.
                continue;
            }
            let Some(info) = self.engine.type_info(h.ty) else {
                continue;
            };
            let action = info.action(self.dir);
            let slot = self.stats.found.entry((h.ty, action)).or_insert(0);
            *slot = slot.saturating_add(1);
            if action == Action::Block && !self.stats.blocked.contains(&h.ty) {
                self.stats.blocked.push(h.ty);
            }
            if dry || action == Action::Allow {
                continue;
            }
            out.push_str(before);
            if quote {
                out.push('"');
            }
            let name = info.name.as_str();
            match action {
                Action::Redact | Action::Block | Action::Allow => {
                    let _ = write!(out, "[{name}]");
                }
                Action::Mask => mask(value, h.ty, info.mask_keep, out),
                Action::Hash => match self.engine.hash_key() {
                    Some(key) => {
                        let _ = write!(
                            out,
                            "[{name}:{}]",
                            keyed_hash(key, name, &canonical(h.ty, value))
                        );
                    }
                    None => {
                        let _ = write!(out, "[{name}]");
                    }
                },
                Action::Pseudonymize => {
                    let restorable = self.dir == Direction::Request;
                    match self.vault.number(h.ty, value, restorable) {
                        Some(n) => {
                            let _ = write!(out, "<{name}_{n}>");
                        }
                        None => {
                            self.stats.vault_full = self.stats.vault_full.saturating_add(1);
                            let _ = write!(out, "[{name}]");
                        }
                    }
                }
            }
            if quote {
                out.push('"');
            }
            last = h.end;
            changed = true;
        }
        out.push_str(text.get(last..upto).unwrap_or_default());
        changed
    }
}

/// HMAC-SHA256 of type and value, first 8 bytes in hex.
pub fn keyed_hash(key: &[u8], type_name: &str, canonical: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(type_name.as_bytes());
    mac.update(&[0]);
    mac.update(canonical.as_bytes());
    guard_core::config::hex_prefix(&mac.finalize().into_bytes(), 8)
}

/// Star all but the last `keep` letters and digits; separators stay. E-mail addresses keep
/// their first character and the domain.
fn mask(value: &str, ty: Ty, keep: usize, out: &mut String) {
    if ty == patterns::EMAIL {
        if let Some((local, domain)) = value.split_once('@') {
            let mut chars = local.chars();
            if let Some(f) = chars.next() {
                out.push(f);
            }
            out.extend(chars.map(|_| '*'));
            out.push('@');
            out.push_str(domain);
            return;
        }
    }
    let total = value.chars().filter(|c| c.is_alphanumeric()).count();
    let hide = total.saturating_sub(keep);
    let mut seen = 0usize;
    for c in value.chars() {
        if c.is_alphanumeric() {
            seen += 1;
            out.push(if seen <= hide { '*' } else { c });
        } else {
            out.push(c);
        }
    }
}

/// In raw JSON text, a hit must not start inside an escape sequence (`\n`, `\u0040`).
fn json_safe_start(text: &str, start: usize, end: usize) -> usize {
    let b = text.as_bytes();
    let mut n = 0usize;
    let mut i = start;
    while i > 0 && b.get(i - 1) == Some(&b'\\') {
        n += 1;
        i -= 1;
    }
    if n % 2 == 0 {
        return start;
    }
    let skip = if b.get(start) == Some(&b'u') { 5 } else { 1 };
    start.saturating_add(skip).min(end)
}

fn push_json_escaped(s: &str, out: &mut String) {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    out.push_str(
        quoted
            .get(1..quoted.len().saturating_sub(1))
            .unwrap_or_default(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_separators() {
        let mut out = String::new();
        mask("4111 1111 1111 1234", patterns::CREDIT_CARD, 4, &mut out);
        assert_eq!(out, "**** **** **** 1234");
        out.clear();
        mask("jane.doe@example.com", patterns::EMAIL, 4, &mut out);
        assert_eq!(out, "j*******@example.com");
    }

    #[test]
    fn vault_numbers_never_collide() {
        let mut v = Vault::new(8);
        v.reserve(patterns::EMAIL, 1);
        assert_eq!(v.number(patterns::EMAIL, "a@x.io", true), Some(2));
        assert_eq!(v.number(patterns::EMAIL, "A@X.io", true), Some(2));
        assert_eq!(v.number(patterns::EMAIL, "b@x.io", true), Some(3));
        assert_eq!(v.number(patterns::PHONE, "+1 415 555 0100", true), Some(1));
        assert_eq!(v.number(patterns::PHONE, "+1-415-555-0100", true), Some(1));
        // A `+` is part of the number, not a separator.
        assert_eq!(v.number(patterns::PHONE, "1 415 555 0100", true), Some(2));
        assert_eq!(v.original(patterns::EMAIL, 2), Some("a@x.io"));
        assert_eq!(v.original(patterns::EMAIL, 1), None);
        // Answer-side pseudonyms are never restored.
        assert_eq!(v.number(patterns::EMAIL, "c@x.io", false), Some(4));
        assert_eq!(v.original(patterns::EMAIL, 4), None);
        let mut full = Vault::new(1);
        assert!(full.number(patterns::EMAIL, "a@x.io", true).is_some());
        assert_eq!(full.number(patterns::EMAIL, "b@x.io", true), None);
    }

    #[test]
    fn keyed_hash_depends_on_key_and_type() {
        let a = keyed_hash(b"0123456789abcdef", "EMAIL", "a@x.io");
        assert_eq!(a.len(), 16);
        assert_eq!(a, keyed_hash(b"0123456789abcdef", "EMAIL", "a@x.io"));
        assert_ne!(a, keyed_hash(b"0123456789abcdeX", "EMAIL", "a@x.io"));
        assert_ne!(a, keyed_hash(b"0123456789abcdef", "PHONE", "a@x.io"));
    }

    #[test]
    fn json_escapes_stay_whole() {
        assert_eq!(json_safe_start(r"a\njohn", 2, 7), 3);
        assert_eq!(json_safe_start(r"a\\john", 3, 7), 3);
        assert_eq!(json_safe_start(r"\u0040x", 1, 7), 6);
    }
}
