//! The detection engine: settings, the compiled policy (one multi-pattern regex for every
//! built-in, operator and dictionary pattern plus the placeholder shape, an anchored lazy DFA of
//! the same patterns for streaming, and the context-word automaton) and the scan.
//!
//! [`Engine::scan`] finds entities leftmost-first in one pass: at each candidate the check of its
//! pattern runs (checksum, ranges, digit counts, entropy); when it fails, the other patterns that
//! can start with the same byte are tried at the same position before the search moves on.
//! For a stream (`complete = false`) it also returns how much of the text is final: text from the
//! first position where some pattern could still match once more text arrives is held back.

use crate::patterns::{self, Anchor, Check, PatternDef, Ty};
use crate::validate;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use guard_core::error::{Error, Result};
use regex_automata::hybrid::dfa::{Cache as DfaCache, DFA};
use regex_automata::meta::{Cache, Regex};
use regex_automata::util::captures::Captures;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, PatternID};
use serde::Deserialize;
use std::collections::BTreeMap;

/// What happens to an entity of a type, in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Replace with `[TYPE]`.
    Redact,
    /// Keep the last `mask_keep` characters, star the others (separators stay).
    Mask,
    /// Replace with a keyed pseudonym `[TYPE:hex]` (HMAC-SHA256, key from the VM environment).
    Hash,
    /// Requests: numbered placeholder `<TYPE_n>`, restored to the value in the answer. Answers:
    /// a numbered placeholder that is not restored.
    Pseudonymize,
    /// Refuse the request (4xx) or the answer (502) with reason `pii_detected`.
    Block,
    /// Leave it, count it.
    Allow,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Redact => "redact",
            Action::Mask => "mask",
            Action::Hash => "hash",
            Action::Pseudonymize => "pseudonymize",
            Action::Block => "block",
            Action::Allow => "allow",
        }
    }
}

/// Actions for both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actions {
    pub request: Action,
    pub response: Action,
}

/// Per-type settings (built-in, custom or dictionary type names).
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EntitySettings {
    /// Both directions at once; `request` / `response` override it.
    #[serde(default)]
    pub action: Option<Action>,
    #[serde(default)]
    pub request: Option<Action>,
    #[serde(default)]
    pub response: Option<Action>,
    /// Characters `mask` keeps (default 4).
    #[serde(default)]
    pub mask_keep: Option<usize>,
    /// Score a detection of this type needs (default: the policy's `min_score`).
    #[serde(default)]
    pub min_score: Option<f32>,
}

/// A checksum an operator-defined entity must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Checksum {
    Luhn,
    Mod97,
}

/// An operator-defined entity: a regex, an optional checksum and context words.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomEntity {
    /// Type name: upper case letters, digits and `_`.
    pub name: String,
    /// regex-automata syntax (linear time; no look-around or back-references).
    pub pattern: String,
    #[serde(default)]
    pub checksum: Option<Checksum>,
    /// Words that raise the score when they appear near a match.
    #[serde(default)]
    pub context: Vec<String>,
    /// Only report a match with a context word near it.
    #[serde(default)]
    pub context_required: bool,
    /// Score of a match (default 0.8).
    #[serde(default)]
    pub score: Option<f32>,
}

/// Exact terms (project code names, customer names) of one type.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dictionary {
    pub name: String,
    pub terms: Vec<String>,
    #[serde(default)]
    pub case_sensitive: bool,
}

/// The pii-redact settings of one policy (see `docs/pii-redact.md`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Actions for types without an entry in `entities`.
    #[serde(default = "default_actions")]
    pub default: Actions,
    /// Per-type actions and thresholds, by type name.
    #[serde(default = "default_entities")]
    pub entities: BTreeMap<String, EntitySettings>,
    #[serde(default)]
    pub custom: Vec<CustomEntity>,
    #[serde(default)]
    pub dictionaries: Vec<Dictionary>,
    /// Score a detection needs to count (0..1).
    #[serde(default = "default_min_score")]
    pub min_score: f32,
    /// Bytes around a candidate searched for context words.
    #[serde(default = "default_context_window")]
    pub context_window: usize,
    /// Most bytes a stream holds back per channel while an entity may still be forming.
    #[serde(default = "default_max_hold")]
    pub max_hold_bytes: usize,
    /// Environment variable of the VM holding the HMAC key for `hash` (never in this config).
    #[serde(default = "default_key_env")]
    pub hash_key_env: String,
    /// Most distinct values one request pseudonymises.
    #[serde(default = "default_max_pseudonyms")]
    pub max_pseudonyms: usize,
    /// Scan requests / answers.
    #[serde(default = "yes")]
    pub requests: bool,
    #[serde(default = "yes")]
    pub responses: bool,
    /// Record and count what would happen, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

fn default_actions() -> Actions {
    Actions {
        request: Action::Redact,
        response: Action::Redact,
    }
}
fn default_entities() -> BTreeMap<String, EntitySettings> {
    let pseudo = EntitySettings {
        request: Some(Action::Pseudonymize),
        response: Some(Action::Redact),
        ..EntitySettings::default()
    };
    let mut m = BTreeMap::new();
    for name in [
        "EMAIL",
        "PHONE",
        "CREDIT_CARD",
        "IBAN",
        "US_SSN",
        "IP_ADDRESS",
    ] {
        m.insert(name.to_string(), pseudo.clone());
    }
    m
}
fn default_min_score() -> f32 {
    0.5
}
fn default_context_window() -> usize {
    48
}
fn default_max_hold() -> usize {
    16 * 1024
}
fn default_key_env() -> String {
    "GUARD_PII_HMAC_KEY".to_string()
}
fn default_max_pseudonyms() -> usize {
    4096
}
fn yes() -> bool {
    true
}

impl Default for Settings {
    /// The shipped default policy: every type on; contact and financial data pseudonymised in
    /// requests (restored in answers), secrets redacted; new entities in answers redacted.
    fn default() -> Self {
        Settings {
            default: default_actions(),
            entities: default_entities(),
            custom: Vec::new(),
            dictionaries: Vec::new(),
            min_score: default_min_score(),
            context_window: default_context_window(),
            max_hold_bytes: default_max_hold(),
            hash_key_env: default_key_env(),
            max_pseudonyms: default_max_pseudonyms(),
            requests: true,
            responses: true,
            dry_run: false,
        }
    }
}

/// Which way the text flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }
}

/// A type's compiled settings.
#[derive(Debug, Clone)]
pub struct TypeInfo {
    pub name: String,
    pub request: Action,
    pub response: Action,
    pub mask_keep: usize,
    pub min_score: f32,
}

impl TypeInfo {
    pub fn action(&self, dir: Direction) -> Action {
        match dir {
            Direction::Request => self.request,
            Direction::Response => self.response,
        }
    }
}

/// One finding, byte offsets into the scanned text (end exclusive).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub start: usize,
    pub end: usize,
    pub ty: Ty,
    pub score: f32,
    /// A placeholder `<TYPE_n>` (not an entity): its number.
    pub placeholder: Option<u32>,
    /// Index of the pattern that matched (for the decision path).
    pub pattern: usize,
}

/// Per-scan scratch (regex and DFA caches), created once and reused.
#[derive(Debug, Clone)]
pub struct Scratch {
    cache: Cache,
    caps: Captures,
    dfa: DfaCache,
    custom: Option<Cache>,
    cands: Vec<usize>,
}

/// A compiled pii-redact policy.
#[derive(Debug)]
pub struct Engine {
    pub settings: Settings,
    types: Vec<TypeInfo>,
    patterns: Vec<PatternDef>,
    /// Operator context words per pattern (custom entities), lower case.
    custom_context: Vec<(usize, Vec<String>, bool)>,
    regex: Regex,
    dfa: DFA,
    /// For each pattern, the first bytes it can start with.
    first_bytes: Vec<[bool; 256]>,
    context: Option<AhoCorasick>,
    /// Per context word (automaton pattern id): the type it supports (or a custom pattern).
    context_owner: Vec<ContextOwner>,
    hash_key: Option<Vec<u8>>,
    /// Where matches can start: every literal anchor of every pattern.
    anchors: AhoCorasick,
    anchor_kind: Vec<AnchorKind>,
    /// Operator regexes (unanchored), whose matches are candidates.
    custom: Option<Regex>,
    /// Type names: a text without one holds no placeholder.
    names: AhoCorasick,
}

/// What an anchor literal says about where the candidate starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AnchorKind {
    /// At the literal.
    Start,
    /// At the literal, or at the bracket just before it (`<`, `[`, `{{`, `&lt;`).
    Placeholder,
    /// `@`: at the start of the local part before it.
    Email,
    /// `://`: at the start of the scheme before it.
    Url,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContextOwner {
    Type(Ty),
    Pattern(usize),
}

/// Lazy DFA cache of the pattern set (per VM, in the shared scratch).
const HYBRID_CACHE: usize = 8 << 20;

/// Most patterns of one policy (built-in ones included).
pub const MAX_PATTERNS: usize = 2048;
/// Most dictionary terms of one policy.
pub const MAX_TERMS: usize = 20_000;
/// Most bytes a PEM private key block may span.
const MAX_PEM_BYTES: usize = 16 * 1024;

enum Judged {
    Valid {
        start: usize,
        end: usize,
        score: f32,
    },
    Invalid,
    /// Needs more text (a PEM block whose END line has not arrived).
    Incomplete,
}

/// Whether a context word is near a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Found,
    /// Only a word that ends where the (incomplete) text ends: the next char decides whether it
    /// stands alone (`call` or `callback`).
    Pending,
    Absent,
}

fn type_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && name.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
}

impl Engine {
    /// Compile settings; `path` is the JSON path of the settings for error messages. Reads the
    /// HMAC key from the environment when a type uses `hash`.
    pub fn compile(settings: Settings, path: &str) -> Result<Engine> {
        let err = |field: &str, msg: String| Error::config(format!("{path}/{field}: {msg}"));
        if !(0.0..=1.0).contains(&settings.min_score) || settings.min_score.is_nan() {
            return Err(err(
                "min_score",
                format!("must be between 0 and 1, got {}", settings.min_score),
            ));
        }
        if settings.max_hold_bytes < 64 {
            return Err(err(
                "max_hold_bytes",
                format!("must be at least 64, got {}", settings.max_hold_bytes),
            ));
        }
        let mut types: Vec<TypeInfo> = patterns::BUILTIN
            .iter()
            .map(|n| TypeInfo {
                name: (*n).to_string(),
                request: settings.default.request,
                response: settings.default.response,
                mask_keep: 4,
                min_score: settings.min_score,
            })
            .collect();
        let mut operator: Vec<PatternDef> = Vec::new();
        let mut custom_context = Vec::new();
        let add_type = |types: &mut Vec<TypeInfo>, name: &str, field: String| -> Result<Ty> {
            if !type_name_ok(name) {
                return Err(err(
                    &field,
                    format!("type name {name:?} must be upper case letters, digits and '_'"),
                ));
            }
            if types.iter().any(|t| t.name == name) {
                return Err(err(&field, format!("type {name:?} is defined twice")));
            }
            let id = u16::try_from(types.len())
                .map_err(|_| err(&field, "too many types".to_string()))?;
            types.push(TypeInfo {
                name: name.to_string(),
                request: settings.default.request,
                response: settings.default.response,
                mask_keep: 4,
                min_score: settings.min_score,
            });
            Ok(Ty(id))
        };
        for (i, c) in settings.custom.iter().enumerate() {
            let ty = add_type(&mut types, &c.name, format!("custom/{i}/name"))?;
            if let Err(e) = syntax::parse(&c.pattern) {
                return Err(err(
                    &format!("custom/{i}/pattern"),
                    format!("bad regex {:?}: {e}", c.pattern),
                ));
            }
            let score = c.score.unwrap_or(0.8);
            if !(0.0..=1.0).contains(&score) {
                return Err(err(
                    &format!("custom/{i}/score"),
                    format!("must be between 0 and 1, got {score}"),
                ));
            }
            let check = match c.checksum {
                None => Check::None,
                Some(Checksum::Luhn) => Check::Luhn,
                Some(Checksum::Mod97) => Check::Mod97,
            };
            let score = if c.context_required {
                (settings.min_score - patterns::CONTEXT_BOOST / 2.0).max(0.0)
            } else {
                score
            };
            custom_context.push((
                operator.len(),
                c.context.iter().map(|w| w.to_lowercase()).collect(),
                c.context_required,
            ));
            operator.push(PatternDef {
                ty,
                regex: c.pattern.clone(),
                group: false,
                check,
                score,
                anchor: Anchor::Custom,
            });
        }
        let mut terms = 0usize;
        for (i, d) in settings.dictionaries.iter().enumerate() {
            let ty = add_type(&mut types, &d.name, format!("dictionaries/{i}/name"))?;
            let mut alt = String::new();
            let mut literals = Vec::new();
            for (j, t) in d.terms.iter().enumerate() {
                let t = t.trim();
                if t.is_empty() {
                    return Err(err(
                        &format!("dictionaries/{i}/terms/{j}"),
                        "empty term".to_string(),
                    ));
                }
                terms = terms.saturating_add(1);
                literals.push(t.to_string());
                if !alt.is_empty() {
                    alt.push('|');
                }
                alt.push_str(&regex_syntax::escape(t));
            }
            if terms > MAX_TERMS {
                return Err(err(
                    &format!("dictionaries/{i}/terms"),
                    format!("more than {MAX_TERMS} terms in all"),
                ));
            }
            if alt.is_empty() {
                continue;
            }
            let regex = if d.case_sensitive {
                format!("(?:{alt})")
            } else {
                format!("(?i:{alt})")
            };
            operator.push(PatternDef {
                ty,
                regex,
                group: false,
                check: Check::Term,
                score: 0.9,
                anchor: Anchor::Literals(literals),
            });
        }
        // Per-type settings, after every type exists.
        for (name, es) in &settings.entities {
            let field = format!("entities/{name}");
            let Some(t) = types.iter_mut().find(|t| t.name == *name) else {
                return Err(err(
                    &field,
                    format!(
                        "unknown entity type {name:?} (built-in types: {}; or a custom / dictionary name)",
                        patterns::BUILTIN.join(", ")
                    ),
                ));
            };
            if let Some(a) = es.action {
                t.request = a;
                t.response = a;
            }
            if let Some(a) = es.request {
                t.request = a;
            }
            if let Some(a) = es.response {
                t.response = a;
            }
            if let Some(k) = es.mask_keep {
                if k > 64 {
                    return Err(err(
                        &format!("{field}/mask_keep"),
                        format!("must be at most 64, got {k}"),
                    ));
                }
                t.mask_keep = k;
            }
            if let Some(s) = es.min_score {
                if !(0.0..=1.0).contains(&s) {
                    return Err(err(
                        &format!("{field}/min_score"),
                        format!("must be between 0 and 1, got {s}"),
                    ));
                }
                t.min_score = s;
            }
        }
        let uses_hash = types
            .iter()
            .any(|t| t.request == Action::Hash || t.response == Action::Hash);
        let hash_key = if uses_hash {
            let key = std::env::var(&settings.hash_key_env).unwrap_or_default();
            if key.len() < 16 {
                return Err(err(
                    "hash_key_env",
                    format!(
                        "a type uses `hash`, but the VM environment variable {:?} is not set to a key of at least 16 bytes",
                        settings.hash_key_env
                    ),
                ));
            }
            Some(key.into_bytes())
        } else {
            None
        };

        // Operator patterns first (an operator's term wins at the same position), then the
        // built-in catalogue, then the placeholder shape.
        let mut all = operator;
        all.extend(patterns::builtin_patterns());
        let names: Vec<String> = types.iter().map(|t| t.name.clone()).collect();
        all.push(PatternDef {
            ty: Ty(0),
            regex: patterns::placeholder_regex(&names),
            group: false,
            check: Check::Placeholder,
            score: 1.0,
            anchor: Anchor::Placeholder,
        });
        if all.len() > MAX_PATTERNS {
            return Err(err(
                "custom",
                format!("more than {MAX_PATTERNS} patterns in all"),
            ));
        }
        let sources: Vec<&str> = all.iter().map(|p| p.regex.as_str()).collect();
        let regex = Regex::builder()
            .configure(
                Regex::config()
                    .nfa_size_limit(Some(64 << 20))
                    .hybrid_cache_capacity(HYBRID_CACHE),
            )
            .build_many(&sources)
            .map_err(|e| err("custom", format!("patterns do not compile: {e}")))?;
        let nfa_config =
            || regex_automata::nfa::thompson::Config::new().nfa_size_limit(Some(64 << 20));
        // Every pattern runs on after another one matched (`MatchKind::All`): a position stays
        // alive while any pattern could still match from it (`1.2.168.05.e` is no IP address
        // but may become an e-mail address), not only the one leftmost-first would pick now.
        let dfa = DFA::builder()
            .configure(
                DFA::config()
                    .match_kind(regex_automata::MatchKind::All)
                    .unicode_word_boundary(true)
                    .cache_capacity(2 << 20)
                    .skip_cache_capacity_check(true),
            )
            .thompson(nfa_config())
            .build_many(&sources)
            .map_err(|e| err("custom", format!("patterns do not compile to a DFA: {e}")))?;
        let first_bytes = first_bytes(&sources, all.len())
            .map_err(|e| err("custom", format!("patterns do not compile to a DFA: {e}")))?;

        // Context words: built-in per type, operator per custom pattern.
        let mut words: Vec<String> = Vec::new();
        let mut owners = Vec::new();
        for (i, _) in patterns::BUILTIN.iter().enumerate() {
            let ty = Ty(u16::try_from(i).unwrap_or(0));
            for w in patterns::context_words(ty) {
                words.push((*w).to_string());
                owners.push(ContextOwner::Type(ty));
            }
        }
        for (pid, ws, _) in &custom_context {
            let ws: &Vec<String> = ws;
            for w in ws {
                if !w.trim().is_empty() {
                    words.push(w.trim().to_string());
                    owners.push(ContextOwner::Pattern(*pid));
                }
            }
        }
        // Capitalised forms of non-ASCII words (ASCII case is folded by the automaton).
        let n = words.len();
        for i in 0..n {
            if let (Some(w), Some(o)) = (words.get(i).cloned(), owners.get(i).copied()) {
                if !w.is_ascii() {
                    let mut c = w.chars();
                    if let Some(f) = c.next() {
                        let cap: String = f.to_uppercase().chain(c).collect();
                        if cap != w {
                            words.push(cap);
                            owners.push(o);
                        }
                    }
                }
            }
        }
        let context = if words.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .build(&words)
                    .map_err(|e| err("custom", format!("context words: {e}")))?,
            )
        };
        // Anchors: every literal where a match can start.
        let mut lits: Vec<String> = vec!["@".into(), "://".into()];
        let mut kinds = vec![AnchorKind::Email, AnchorKind::Url];
        let mut custom_sources: Vec<&str> = Vec::new();
        for p in &all {
            match &p.anchor {
                Anchor::Literals(l) => {
                    for x in l {
                        lits.push(x.clone());
                        kinds.push(AnchorKind::Start);
                    }
                }
                Anchor::Placeholder => {
                    for n in &names {
                        lits.push(n.clone());
                        kinds.push(AnchorKind::Placeholder);
                    }
                }
                Anchor::Custom => custom_sources.push(p.regex.as_str()),
                Anchor::Numeric | Anchor::Email | Anchor::Url => {}
            }
        }
        let anchors = AhoCorasickBuilder::new()
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&lits)
            .map_err(|e| err("dictionaries", format!("anchors: {e}")))?;
        let custom = if custom_sources.is_empty() {
            None
        } else {
            Some(
                Regex::builder()
                    .configure(Regex::config().nfa_size_limit(Some(64 << 20)))
                    .build_many(&custom_sources)
                    .map_err(|e| err("custom", format!("patterns do not compile: {e}")))?,
            )
        };
        let names_ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .build(&names)
            .map_err(|e| err("custom", format!("type names: {e}")))?;
        Ok(Engine {
            names: names_ac,
            anchors,
            anchor_kind: kinds,
            custom,
            settings,
            types,
            patterns: all,
            custom_context,
            regex,
            dfa,
            first_bytes,
            context,
            context_owner: owners,
            hash_key,
        })
    }

    /// The shipped default policy.
    pub fn default_policy() -> Result<Engine> {
        Engine::compile(Settings::default(), "")
    }

    pub fn scratch(&self) -> Scratch {
        Scratch {
            cache: self.regex.create_cache(),
            caps: self.regex.create_captures(),
            dfa: self.dfa.create_cache(),
            custom: self.custom.as_ref().map(Regex::create_cache),
            cands: Vec::new(),
        }
    }

    pub fn types(&self) -> &[TypeInfo] {
        &self.types
    }

    pub fn type_info(&self, ty: Ty) -> Option<&TypeInfo> {
        self.types.get(usize::from(ty.0))
    }

    pub fn type_name(&self, ty: Ty) -> &str {
        self.type_info(ty).map_or("UNKNOWN", |t| t.name.as_str())
    }

    pub fn type_by_name(&self, name: &str) -> Option<Ty> {
        self.types
            .iter()
            .position(|t| t.name.eq_ignore_ascii_case(name))
            .and_then(|i| u16::try_from(i).ok())
            .map(Ty)
    }

    pub fn hash_key(&self) -> Option<&[u8]> {
        self.hash_key.as_deref()
    }

    /// How many bytes before a candidate its judgement may read (context words, a command line):
    /// what a stream keeps of the text it released, so that it decides as the whole text does.
    pub fn context_bytes(&self) -> usize {
        self.settings.context_window.max(CLI_LOOKBACK)
    }

    /// Find entities (and placeholders) in `text`. `out` is cleared first, then gets the hits in
    /// order, without overlaps. Returns how many leading bytes are final: `text.len()` when
    /// `complete`, else the start of the first place where a match could still form (a char
    /// boundary; every hit ends at or before it).
    pub fn scan(&self, s: &mut Scratch, text: &str, complete: bool, out: &mut Vec<Hit>) -> usize {
        self.scan_from(s, text, 0, complete, out)
    }

    /// [`Engine::scan`] of `text[from..]`, with `text[..from]` (text already final, e.g. what a
    /// stream released) seen only as context: for context words and word boundaries.
    pub fn scan_from(
        &self,
        s: &mut Scratch,
        text: &str,
        from: usize,
        complete: bool,
        out: &mut Vec<Hit>,
    ) -> usize {
        out.clear();
        let len = text.len();
        let mut pos = floor_boundary(text, from);
        let mut cands = std::mem::take(&mut s.cands);
        self.candidates(s, text, pos, &mut cands);
        let mut alive_checked = 0usize;
        let mut alive_at: Option<usize> = None;
        let mut ci = 0usize;
        // A candidate after a hit (see `resume_after`).
        let mut resume: Option<usize> = None;
        let result = loop {
            // The next candidate at or after `pos` where some pattern matches.
            let mut found = None;
            loop {
                let c = match (resume.take(), cands.get(ci).copied()) {
                    (Some(r), Some(c)) if c < r => {
                        resume = Some(r);
                        ci += 1;
                        c
                    }
                    (Some(r), _) => r,
                    (None, Some(c)) => {
                        ci += 1;
                        c
                    }
                    (None, None) => break,
                };
                if c < pos {
                    continue;
                }
                let input = Input::new(text).span(c..len).anchored(Anchored::Yes);
                if let Some(m) = self.regex.search_with(&mut s.cache, &input) {
                    found = Some(m);
                    break;
                }
            }
            let hold = if complete {
                None
            } else {
                if alive_at.is_some_and(|a| a < pos) {
                    alive_at = None;
                }
                if alive_at.is_none() {
                    let from = pos.max(alive_checked);
                    alive_at = self.first_alive(&mut s.dfa, text, from);
                    alive_checked = alive_at.unwrap_or(len);
                }
                alive_at
            };
            let m = match (found, hold) {
                (None, None) => break len,
                (None, Some(a)) => break a,
                (Some(m), Some(a)) if a <= m.start() => break a,
                (Some(m), _) => m,
            };
            let start = m.start();
            let mut pid = m.pattern().as_usize();
            let mut span = (start, m.end());
            let mut tried = 0usize;
            let mut incomplete = false;
            loop {
                match self.judge(s, text, pid, span, complete) {
                    Judged::Valid {
                        start: es,
                        end: ee,
                        score,
                    } => {
                        if let Some(p) = self.patterns.get(pid) {
                            let placeholder = if p.check == Check::Placeholder {
                                self.placeholder(text, es, ee)
                            } else {
                                None
                            };
                            let ty = match placeholder {
                                Some((ty, _)) => ty,
                                None => p.ty,
                            };
                            let ok = placeholder.is_some()
                                || self.type_info(ty).is_some_and(|t| score >= t.min_score);
                            if ok {
                                out.push(Hit {
                                    start: es,
                                    end: ee,
                                    ty,
                                    score,
                                    placeholder: placeholder.map(|(_, n)| n),
                                    pattern: pid,
                                });
                                pos = ee.max(start.saturating_add(1));
                                let left = resume.filter(|&r| r >= pos);
                                resume = match (left, resume_after(text, pos)) {
                                    (Some(a), Some(b)) => Some(a.min(b)),
                                    (a, b) => a.or(b),
                                };
                                break;
                            }
                        }
                    }
                    Judged::Incomplete => {
                        incomplete = true;
                        break;
                    }
                    Judged::Invalid => {}
                }
                // Try the next pattern that can start here.
                let b = text.as_bytes().get(start).copied().unwrap_or(0);
                let mut next = None;
                while tried < self.patterns.len() {
                    let q = tried;
                    tried += 1;
                    if q == pid || q == m.pattern().as_usize() {
                        continue;
                    }
                    if !self
                        .first_bytes
                        .get(q)
                        .and_then(|set| set.get(usize::from(b)))
                        .copied()
                        .unwrap_or(true)
                    {
                        continue;
                    }
                    let Ok(qid) = PatternID::try_from(q) else {
                        continue;
                    };
                    let input = Input::new(text)
                        .span(start..len)
                        .anchored(Anchored::Pattern(qid));
                    if let Some(mq) = self.regex.search_with(&mut s.cache, &input) {
                        next = Some((q, (mq.start(), mq.end())));
                        break;
                    }
                }
                match next {
                    Some((q, sp)) => {
                        pid = q;
                        span = sp;
                    }
                    None => {
                        pos = next_char(text, start);
                        break;
                    }
                }
            }
            if incomplete {
                break start;
            }
        };
        s.cands = cands;
        result
    }

    /// Every position at or after `from` where a pattern may start, sorted, without
    /// duplicates: anchor literals (one aho-corasick pass), word starts of numbers, IBANs and
    /// IPv6 addresses (one byte loop), operator regex matches.
    fn candidates(&self, s: &mut Scratch, text: &str, from: usize, out: &mut Vec<usize>) {
        out.clear();
        let b = text.as_bytes();
        let Some(hay) = text.get(from..) else {
            return;
        };
        for m in self.anchors.find_overlapping_iter(hay) {
            let at = from.saturating_add(m.start());
            let kind = self
                .anchor_kind
                .get(m.pattern().as_usize())
                .copied()
                .unwrap_or(AnchorKind::Start);
            match kind {
                AnchorKind::Start => out.push(at),
                AnchorKind::Placeholder => {
                    out.push(at);
                    let head = text.get(..at).unwrap_or_default();
                    for p in ["&lt;", "{{", "<", "[", "{"] {
                        if head.ends_with(p) {
                            out.push(at - p.len());
                        }
                    }
                }
                AnchorKind::Email => {
                    if let Some(i) = email_start(text, at) {
                        out.push(i.max(from));
                    }
                }
                AnchorKind::Url => {
                    if let Some(i) = url_start(b, at, from) {
                        out.push(i);
                    }
                }
            }
        }
        // Word starts: numbers (`4111 ...`, `+44 ...`, `(415) ...`), IBANs (`DE89...`), IPv6
        // (`fe80::...`, `::1`).
        let mut prev_word = from > 0 && b.get(from - 1).is_some_and(|c| is_word_byte(*c));
        let mut i = from;
        while i < b.len() {
            let c = b.get(i).copied().unwrap_or(0);
            let word = is_word_byte(c);
            if c == b'+' || c == b'(' {
                out.push(i);
            } else if !prev_word {
                let cand = match c {
                    b'0'..=b'9' => true,
                    b'A'..=b'Z' | b'a'..=b'z' => {
                        b.get(i + 1).is_some_and(u8::is_ascii_alphabetic)
                            && b.get(i + 2).is_some_and(u8::is_ascii_digit)
                            && b.get(i + 3).is_some_and(u8::is_ascii_digit)
                            || hex_then_colon(b, i)
                    }
                    b':' => b.get(i + 1) == Some(&b':'),
                    _ => false,
                };
                if cand {
                    out.push(i);
                }
            }
            prev_word = word;
            i += 1;
        }
        if let (Some(re), Some(cache)) = (&self.custom, s.custom.as_mut()) {
            let mut at = from;
            while at <= text.len() {
                let Some(m) = re.search_with(cache, &Input::new(text).span(at..text.len())) else {
                    break;
                };
                out.push(m.start());
                at = if m.end() > m.start() {
                    m.end()
                } else {
                    next_char(text, m.start())
                };
            }
        }
        out.sort_unstable();
        out.dedup();
    }

    /// The first char boundary `p >= from` from which an anchored match could still extend past
    /// the end of `text` (the DFA is not dead at the end).
    fn first_alive(&self, cache: &mut DfaCache, text: &str, from: usize) -> Option<usize> {
        let mut p = from;
        while p < text.len() {
            if text.is_char_boundary(p) && self.alive(cache, text, p) {
                return Some(p);
            }
            p += 1;
        }
        None
    }

    fn alive(&self, cache: &mut DfaCache, text: &str, p: usize) -> bool {
        let input = Input::new(text).span(p..text.len()).anchored(Anchored::Yes);
        let Ok(mut sid) = self.dfa.start_state_forward(cache, &input) else {
            return true;
        };
        for &b in text.as_bytes().get(p..).unwrap_or_default() {
            match self.dfa.next_state(cache, sid, b) {
                Ok(next) => sid = next,
                Err(_) => return true,
            }
            if sid.is_dead() {
                return false;
            }
            if sid.is_quit() {
                return true;
            }
        }
        !sid.is_dead()
    }

    /// Confirm a candidate of pattern `pid` spanning `span` (the whole match).
    fn judge(
        &self,
        s: &mut Scratch,
        text: &str,
        pid: usize,
        span: (usize, usize),
        complete: bool,
    ) -> Judged {
        let Some(p) = self.patterns.get(pid) else {
            return Judged::Invalid;
        };
        let (mut start, mut end) = span;
        if p.group {
            let Ok(qid) = PatternID::try_from(pid) else {
                return Judged::Invalid;
            };
            let input = Input::new(text)
                .span(span.0..text.len())
                .anchored(Anchored::Pattern(qid));
            self.regex
                .search_captures_with(&mut s.cache, &input, &mut s.caps);
            match s.caps.get_group(1) {
                Some(g) => {
                    start = g.start;
                    end = g.end;
                }
                None => return Judged::Invalid,
            }
        }
        let Some(value) = text.get(start..end) else {
            return Judged::Invalid;
        };
        // A judgement that depends on text not yet seen waits for it, so a stream decides
        // exactly as the whole answer does: the char after the match, and the digit groups
        // that follow a number (a longer run is a tracking number, not a phone or a card).
        if !complete
            && (end >= text.len()
                || (matches!(p.check, Check::Phone | Check::Card | Check::Ssn)
                    && digit_groups_reach_end(text, start)))
        {
            return Judged::Incomplete;
        }
        let before = text.get(..start).and_then(|t| t.chars().next_back());
        let after = text.get(end..).and_then(|t| t.chars().next());
        let mut score = p.score;
        match p.check {
            Check::None => {
                if matches!(p.ty, patterns::API_KEY) && !p.group && !secret_bounds(before, after) {
                    return Judged::Invalid;
                }
            }
            Check::Placeholder => {}
            Check::Term => {
                if before.is_some_and(char::is_alphanumeric)
                    || after.is_some_and(char::is_alphanumeric)
                {
                    return Judged::Invalid;
                }
            }
            Check::Email => {
                let Some((local, domain)) = value.split_once('@') else {
                    return Judged::Invalid;
                };
                if local.ends_with('.') || local.contains("..") || domain.contains("..") {
                    return Judged::Invalid;
                }
                let tld = domain.rsplit('.').next().unwrap_or_default();
                if FILE_EXTENSIONS.contains(&tld.to_ascii_lowercase().as_str()) {
                    return Judged::Invalid;
                }
                if before.is_some_and(|c| c == '.' || c == '/') {
                    // The tail of a path or of a longer address: not a whole address.
                    return Judged::Invalid;
                }
            }
            Check::Phone | Check::Card | Check::Ssn
                if !value.starts_with(['+', '('])
                    && (inside_longer_number(text, start) || in_long_digit_run(text, start)) =>
            {
                return Judged::Invalid;
            }
            Check::Phone => {
                // The longest prefix that is a phone number (a greedy match may have taken a
                // number that follows).
                let found = shrink(value, |v| match validate::phone(v) {
                    validate::Phone::No => None,
                    validate::Phone::Weak => Some(0.35),
                    validate::Phone::Strong => Some(score),
                });
                match found {
                    Some((n, sc)) => {
                        end = start.saturating_add(n);
                        score = sc;
                    }
                    None => return Judged::Invalid,
                }
                if self.card_overlaps(s, text, start, end) {
                    // `12 4111 1111 1111 1111`: the card, not a phone that takes half of it.
                    return Judged::Invalid;
                }
            }
            Check::Card => match shrink(value, |v| {
                (validate::credit_card(v) && card_groups_ok(v)).then_some(score)
            }) {
                Some((n, _)) => end = start.saturating_add(n),
                None => return Judged::Invalid,
            },
            Check::Iban => match iban_end(&value.to_ascii_uppercase()) {
                Some(n) => end = start.saturating_add(n),
                None => return Judged::Invalid,
            },
            Check::Ssn => {
                if !validate::us_ssn(value) {
                    return Judged::Invalid;
                }
                score = if value.contains('-') {
                    0.7
                } else if value.contains(' ') {
                    0.55
                } else {
                    0.3
                };
            }
            Check::Ipv4 => {
                if !validate::ipv4(value) || dotted_neighbour(text, start, end) {
                    return Judged::Invalid;
                }
                let head = text.get(..start).unwrap_or_default();
                let tail: String = head
                    .chars()
                    .rev()
                    .take(12)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<String>()
                    .to_ascii_lowercase();
                if tail.ends_with('v') || tail.contains("version") || tail.contains("build ") {
                    return Judged::Invalid;
                }
            }
            Check::Ipv6 => {
                let colons = value.bytes().filter(|&b| b == b':').count();
                let hex = value.bytes().filter(u8::is_ascii_hexdigit).count();
                if colons < 3
                    || hex < 6
                    || !validate::ipv6(value)
                    || before.is_some_and(|c| c.is_ascii_alphanumeric() || c == ':')
                    || after.is_some_and(|c| c.is_ascii_alphanumeric() || c == ':')
                {
                    return Judged::Invalid;
                }
            }
            Check::GithubToken => {
                if !validate::github_token(value) || !secret_bounds(before, after) {
                    return Judged::Invalid;
                }
            }
            Check::Jwt => {
                if !secret_bounds(before, after) || !jwt_header_ok(value) {
                    return Judged::Invalid;
                }
            }
            Check::Pem => match pem_end(text, end) {
                PemEnd::Found(e) => end = e,
                PemEnd::Missing if complete => {
                    // A truncated key is still key material: up to the end of its body.
                    end = pem_body_end(text, end);
                }
                PemEnd::Missing => return Judged::Incomplete,
            },
            Check::CliPassword => {
                // Only on the command line of a database client: the same line, at most
                // `CLI_LOOKBACK` bytes before the option (a stream keeps that much as context).
                let lo = floor_boundary(text, span.0.saturating_sub(CLI_LOOKBACK));
                let line_start = text
                    .get(lo..span.0)
                    .and_then(|h| h.rfind('\n'))
                    .map_or(lo, |i| lo + i + 1);
                let head = text.get(line_start..span.0).unwrap_or_default();
                if !CLI_CLIENTS.iter().any(|c| head.contains(c)) || !password_ok(value) {
                    return Judged::Invalid;
                }
            }
            Check::Password => {
                let v = trim_sentence_end(value);
                end = start.saturating_add(v.len());
                if !password_ok(v) {
                    return Judged::Invalid;
                }
            }
            Check::Secret => {
                let v = trim_sentence_end(value);
                end = start.saturating_add(v.len());
                if (!p.group && !secret_bounds(before, after)) || !secret_ok(v) {
                    return Judged::Invalid;
                }
            }
            Check::Luhn => {
                if !validate::luhn(value) {
                    return Judged::Invalid;
                }
            }
            Check::Mod97 => {
                if !mod97(value) {
                    return Judged::Invalid;
                }
            }
        }
        if end <= start {
            return Judged::Invalid;
        }
        // Context words raise a score that is short of the threshold.
        let need = self
            .type_info(p.ty)
            .map_or(self.settings.min_score, |t| t.min_score);
        let required = self
            .custom_context
            .iter()
            .any(|(q, _, req)| *q == pid && *req);
        if p.check != Check::Placeholder && (score < need || required) {
            match self.has_context(text, start, end, p.ty, pid, complete) {
                Context::Found => score = (score + patterns::CONTEXT_BOOST).min(1.0),
                // The word at the end may not stand alone once more text comes.
                Context::Pending => return Judged::Incomplete,
                Context::Absent
                    if !complete
                        && text.len() < end.saturating_add(self.settings.context_window / 2) =>
                {
                    // A context word may still come after it.
                    return Judged::Incomplete;
                }
                Context::Absent if required => return Judged::Invalid,
                Context::Absent => {}
            }
        }
        Judged::Valid { start, end, score }
    }

    /// Whether a valid card number starts inside `start..end` (at a digit group) and runs past
    /// `end`.
    fn card_overlaps(&self, s: &mut Scratch, text: &str, start: usize, end: usize) -> bool {
        let b = text.as_bytes();
        for q in start.saturating_add(1)..end {
            let starts_group = b.get(q).is_some_and(u8::is_ascii_digit)
                && b.get(q - 1).is_some_and(|c| !c.is_ascii_digit());
            if !starts_group {
                continue;
            }
            for (pid, p) in self.patterns.iter().enumerate() {
                if p.check != Check::Card || self.type_info(p.ty).is_none() {
                    continue;
                }
                let Ok(qid) = PatternID::try_from(pid) else {
                    continue;
                };
                let input = Input::new(text)
                    .span(q..text.len())
                    .anchored(Anchored::Pattern(qid));
                let Some(m) = self.regex.search_with(&mut s.cache, &input) else {
                    continue;
                };
                let card = text.get(q..m.end()).and_then(|v| {
                    shrink(v, |v| {
                        (validate::credit_card(v) && card_groups_ok(v)).then_some(1.0)
                    })
                });
                if card.is_some_and(|(n, _)| q.saturating_add(n) > end) {
                    return true;
                }
            }
        }
        false
    }

    /// Whether a context word of the type (or of the custom pattern) is near `start..end`.
    /// In an incomplete text, an ASCII word that ends where the text ends is `Pending`: the
    /// whole text may go on with a letter.
    fn has_context(
        &self,
        text: &str,
        start: usize,
        end: usize,
        ty: Ty,
        pid: usize,
        complete: bool,
    ) -> Context {
        let Some(ac) = &self.context else {
            return Context::Absent;
        };
        let w = self.settings.context_window;
        let lo = floor_boundary(text, start.saturating_sub(w));
        let hi = ceil_boundary(text, end.saturating_add(w / 2));
        let Some(window) = text.get(lo..hi) else {
            return Context::Absent;
        };
        // The window stops at the end of the text, not at its width: what follows is unknown.
        let cut_short = !complete && hi == text.len() && end.saturating_add(w / 2) > text.len();
        let mut pending = false;
        for m in ac.find_overlapping_iter(window) {
            let owner = self.context_owner.get(m.pattern().as_usize()).copied();
            let mine = match owner {
                Some(ContextOwner::Type(t)) => t == ty,
                Some(ContextOwner::Pattern(q)) => q == pid,
                None => false,
            };
            if !mine {
                continue;
            }
            // Inside the entity itself does not count.
            let (ms, me) = (lo.saturating_add(m.start()), lo.saturating_add(m.end()));
            if ms >= start && me <= end {
                continue;
            }
            // ASCII words must stand alone ("tel" is not in "hotel"); our own tokens
            // (`[PHONE]`, `<PHONE_1>`, `[PHONE:..]`) are not context.
            let word = window.get(m.start()..m.end()).unwrap_or_default();
            let b = window.get(..m.start()).and_then(|t| t.chars().next_back());
            let a = window.get(m.end()..).and_then(|t| t.chars().next());
            if b.is_some_and(|c| c == '[' || c == '<') {
                continue;
            }
            if word.is_ascii() {
                if b.is_some_and(char::is_alphabetic) || a.is_some_and(char::is_alphabetic) {
                    continue;
                }
                if a.is_none() && cut_short {
                    pending = true;
                    continue;
                }
            }
            return Context::Found;
        }
        if pending {
            Context::Pending
        } else {
            Context::Absent
        }
    }

    /// Placeholder-looking tokens already in a request text: their numbers must never be
    /// issued (call on every segment before rewriting any).
    pub fn reserve_placeholders(
        &self,
        s: &mut Scratch,
        text: &str,
        vault: &mut crate::redact::Vault,
    ) {
        if !self.names.is_match(text) {
            return;
        }
        let mut hits = Vec::new();
        self.scan(s, text, true, &mut hits);
        for h in &hits {
            if let Some(n) = h.placeholder {
                vault.reserve(h.ty, n);
            }
        }
    }

    /// `<TYPE_n>` → (type, n).
    fn placeholder(&self, text: &str, start: usize, end: usize) -> Option<(Ty, u32)> {
        let s = text.get(start..end)?;
        let s = s.trim_end_matches("&gt;").trim_end_matches(['>', ']', '}']);
        let digits_at = s.rfind(|c: char| !c.is_ascii_digit())?.saturating_add(1);
        let num: u32 = s.get(digits_at..)?.parse().ok()?;
        let head = s.get(..digits_at.saturating_sub(1))?;
        let name = head
            .trim_start_matches("&lt;")
            .trim_start_matches(['<', '[', '{']);
        self.type_by_name(name).map(|ty| (ty, num))
    }
}

/// For each pattern, the bytes a match can start with (from a throw-away DFA with a start state
/// per pattern; the scan DFA does without them, which keeps its cache small).
fn first_bytes(
    sources: &[&str],
    n: usize,
) -> std::result::Result<Vec<[bool; 256]>, Box<regex_automata::hybrid::BuildError>> {
    let dfa = DFA::builder()
        .configure(
            DFA::config()
                .starts_for_each_pattern(true)
                .unicode_word_boundary(true)
                .skip_cache_capacity_check(true)
                .cache_capacity(16 << 20),
        )
        .thompson(regex_automata::nfa::thompson::Config::new().nfa_size_limit(Some(64 << 20)))
        .build_many(sources)
        .map_err(Box::new)?;
    let mut cache = dfa.create_cache();
    let mut all = Vec::with_capacity(n);
    for pid in 0..n {
        let mut set = [true; 256];
        if let Ok(p) = PatternID::try_from(pid) {
            let input = Input::new("").anchored(Anchored::Pattern(p));
            if let Ok(start) = dfa.start_state_forward(&mut cache, &input) {
                for (b, slot) in set.iter_mut().enumerate() {
                    let byte = u8::try_from(b).unwrap_or(0);
                    *slot = dfa
                        .next_state(&mut cache, start, byte)
                        .map_or(true, |s| !s.is_dead());
                }
            }
        }
        all.push(set);
    }
    Ok(all)
}

/// How far before a `-a` / `-p` / `--password` option the client's name is looked for (on the
/// same line).
pub const CLI_LOOKBACK: usize = 256;

/// Command-line clients whose `-a` / `-p` / `--password` option takes a password.
const CLI_CLIENTS: &[&str] = &[
    "redis-cli",
    "mysql",
    "mysqladmin",
    "mysqldump",
    "mariadb",
    "sshpass",
    "mongosh",
    "mongo ",
];

const FILE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "js", "mjs", "css", "ts", "tsx",
    "jsx", "py", "rs", "go", "md", "txt", "pdf", "json", "yaml", "yml", "html", "htm", "xml",
    "csv", "zip", "gz", "tar", "wasm", "exe", "dll", "so", "lock", "toml",
];

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// A hex word of 1-4 digits followed by `:` (an IPv6 address may start here).
fn hex_then_colon(b: &[u8], i: usize) -> bool {
    let mut j = i;
    while j < i + 5 {
        match b.get(j) {
            Some(c) if c.is_ascii_hexdigit() => j += 1,
            Some(b':') => return j > i,
            _ => return false,
        }
    }
    false
}

fn next_char(text: &str, at: usize) -> usize {
    let mut n = at.saturating_add(1);
    while n < text.len() && !text.is_char_boundary(n) {
        n += 1;
    }
    n
}

/// Where an e-mail address whose `@` is at `at` may start: back over the local part (at most 64
/// characters), then past leading dots; `None` for an empty local part.
fn email_start(text: &str, at: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut i = at;
    let mut n = 0;
    while n < 64 {
        let Some(c) = text.get(..i).and_then(|h| h.chars().next_back()) else {
            break;
        };
        if !email_local_char(c) {
            break;
        }
        i -= c.len_utf8();
        n += 1;
    }
    while b.get(i) == Some(&b'.') && i < at {
        i += 1;
    }
    (i < at).then_some(i)
}

fn email_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '.' | '_' | '%' | '+' | '-')
        || ('\u{C0}'..='\u{24F}').contains(&c)
}

/// Where a URL scheme whose `://` is at `at` may start (not before `from`): back over at most 21
/// scheme bytes, then to the first letter.
fn url_start(b: &[u8], at: usize, from: usize) -> Option<usize> {
    let mut i = at;
    let mut n = 0;
    while n < 21 && i > from {
        match b.get(i - 1) {
            Some(c) if url_scheme_byte(*c) => {
                i -= 1;
                n += 1;
            }
            _ => break,
        }
    }
    while i < at && !b.get(i).is_some_and(u8::is_ascii_alphabetic) {
        i += 1;
    }
    (i < at).then_some(i)
}

fn url_scheme_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'.' | b'-')
}

/// After a hit ending at `end`: the start of an e-mail address or URL whose local part or
/// scheme runs on from inside the hit. The candidate found from its `@` or `://` lies inside the
/// hit and is passed over; a stream that released the hit starts its candidates at `end`, so
/// the scan goes on from there too (`jane@mail.ex192.168.10.e@exel.cmpa`: two addresses).
/// Looks at most 64 characters ahead.
fn resume_after(text: &str, end: usize) -> Option<usize> {
    let b = text.as_bytes();
    let rest = text.get(end..)?;
    let mut email = None;
    for (k, (i, c)) in rest.char_indices().enumerate() {
        if c == '@' {
            email = (i > 0).then_some(end + i);
            break;
        }
        if k >= 64 || !email_local_char(c) {
            break;
        }
    }
    if let Some(at) = email {
        if email_start(text, at).is_some_and(|s| s < end) {
            return Some(end);
        }
    }
    let mut i = end;
    while i < end + 21 && b.get(i).is_some_and(|c| url_scheme_byte(*c)) {
        i += 1;
    }
    if i > end && b.get(i..).is_some_and(|t| t.starts_with(b"://")) {
        let whole = url_start(b, i, 0);
        let resumed = url_start(b, i, end);
        if whole.is_some_and(|s| s < end) && resumed.is_some() {
            return resumed;
        }
    }
    None
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while i < text.len() && !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// The candidate continues a longer dashed or slashed digit sequence (`597-3255757-...` order
/// ids): a digit and `-` or `/` right before it. (Spaces are not counted: a phone number and a
/// card number written one after the other are two entities.)
fn inside_longer_number(text: &str, start: usize) -> bool {
    let b = text.as_bytes();
    let sep = start.checked_sub(1).and_then(|i| b.get(i));
    let digit = start.checked_sub(2).and_then(|i| b.get(i));
    matches!(sep, Some(b'-' | b'/')) && digit.is_some_and(u8::is_ascii_digit)
}

/// From `start`, digits and spaces run to the end of `text`: more digit groups may follow.
fn digit_groups_reach_end(text: &str, start: usize) -> bool {
    text.as_bytes()
        .get(start..)
        .is_some_and(|t| t.iter().all(|&b| b.is_ascii_digit() || b == b' '))
}

/// The candidate sits in a run of space-separated digit groups of 3 or more digits with more
/// than 19 digits in all (tracking numbers `9400 4514 1849 8086 3169 38`): no phone or card
/// inside it. Short numbers next to it (`12 4111 ...`) are separate quantities, not part of it.
fn in_long_digit_run(text: &str, start: usize) -> bool {
    let b = text.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    // The candidate's own group.
    let mut hi = start;
    while digit(hi) {
        hi += 1;
    }
    let mut total = hi - start;
    // Groups to the left.
    let mut lo = start;
    while lo >= 2 && b.get(lo - 1) == Some(&b' ') && digit(lo - 2) {
        let end = lo - 1;
        let mut s0 = end;
        while s0 > 0 && digit(s0 - 1) {
            s0 -= 1;
        }
        if end - s0 < 3 || (s0 > 0 && b.get(s0 - 1) == Some(&b'+')) {
            break;
        }
        total += end - s0;
        lo = s0;
    }
    if lo > 0 && b.get(lo - 1) == Some(&b'+') {
        return false;
    }
    // Groups to the right.
    while b.get(hi) == Some(&b' ') && digit(hi + 1) {
        let s0 = hi + 1;
        let mut e = s0;
        while digit(e) {
            e += 1;
        }
        if e - s0 < 3 {
            break;
        }
        total += e - s0;
        hi = e;
    }
    total > 19
}

/// Separated card numbers are grouped as printed: 4-4-4-4(-1..3), 4-6-5 or 4-6-4.
fn card_groups_ok(v: &str) -> bool {
    let groups: Vec<usize> = v
        .split([' ', '-'])
        .filter(|g| !g.is_empty())
        .map(str::len)
        .collect();
    match groups.as_slice() {
        [_] | [4, 6, 4] | [4, 6, 5] => true,
        [4, rest @ ..] => match rest.split_last() {
            Some((last, mid)) => mid.iter().all(|&g| g == 4) && (1..=4).contains(last),
            None => false,
        },
        _ => false,
    }
}

/// A prefixed secret must not be glued to a longer token.
fn secret_bounds(before: Option<char>, after: Option<char>) -> bool {
    !before.is_some_and(|c| c.is_ascii_alphanumeric())
        && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Part of a longer dotted run (`1.2.3.4.5`, a version).
fn dotted_neighbour(text: &str, start: usize, end: usize) -> bool {
    let b = text.as_bytes();
    let before = start
        .checked_sub(2)
        .and_then(|i| b.get(i..start))
        .is_some_and(|w| w.first().is_some_and(u8::is_ascii_digit) && w.get(1) == Some(&b'.'));
    let after = b
        .get(end..end.saturating_add(2))
        .is_some_and(|w| w.first() == Some(&b'.') && w.get(1).is_some_and(u8::is_ascii_digit));
    before || after
}

/// The longest prefix of `value` that `check` accepts: the whole value, else prefixes cut
/// before a separator (space, `-`, `.`, `/`), longest first. Returns (length, score).
fn shrink(value: &str, check: impl Fn(&str) -> Option<f32>) -> Option<(usize, f32)> {
    if let Some(sc) = check(value) {
        return Some((value.len(), sc));
    }
    let b = value.as_bytes();
    // Only at a space: a dashed or dotted number (`073-2148537-7822635`) is one token.
    (1..b.len())
        .rev()
        .filter(|&i| b.get(i) == Some(&b' ') && b.get(i - 1).is_some_and(u8::is_ascii_alphanumeric))
        .find_map(|i| value.get(..i).and_then(&check).map(|sc| (i, sc)))
}

/// The longest prefix of an IBAN candidate that validates, cut where a group ends.
fn iban_end(value: &str) -> Option<usize> {
    let bytes = value.as_bytes();
    let mut cuts: Vec<usize> = Vec::new();
    let mut alnum = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        if b.is_ascii_alphanumeric() {
            alnum += 1;
            let next = bytes.get(i.saturating_add(1)).copied();
            if alnum >= 15 && !next.is_some_and(|n| n.is_ascii_alphanumeric()) {
                cuts.push(i.saturating_add(1));
            }
        }
    }
    cuts.into_iter()
        .rev()
        .find(|&n| value.get(..n).is_some_and(validate::iban))
}

enum PemEnd {
    Found(usize),
    Missing,
}

/// End of the `-----END ... PRIVATE KEY-----` line after a BEGIN line that ends at `from`.
fn pem_end(text: &str, from: usize) -> PemEnd {
    let limit = ceil_boundary(text, from.saturating_add(MAX_PEM_BYTES));
    let Some(body) = text.get(from..limit) else {
        return PemEnd::Missing;
    };
    let Some(i) = body.find("-----END ") else {
        return PemEnd::Missing;
    };
    let after = body.get(i.saturating_add(9)..).unwrap_or_default();
    match after.find("-----") {
        Some(j) if j <= 40 => PemEnd::Found(
            from.saturating_add(i)
                .saturating_add(9)
                .saturating_add(j + 5),
        ),
        _ => PemEnd::Missing,
    }
}

/// End of a PEM body without an END line: base64 characters and line breaks (raw or escaped).
fn pem_body_end(text: &str, from: usize) -> usize {
    let b = text.as_bytes();
    let mut i = from;
    let limit = from.saturating_add(MAX_PEM_BYTES).min(b.len());
    while i < limit {
        let c = b.get(i).copied().unwrap_or(0);
        if c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'\n' | b'\r' | b' ') {
            i += 1;
        } else if c == b'\\' && matches!(b.get(i + 1), Some(b'n' | b'r')) {
            i += 2;
        } else {
            break;
        }
    }
    while i > from && matches!(b.get(i - 1), Some(b'\n' | b'\r' | b' ')) {
        i -= 1;
    }
    i
}

fn trim_sentence_end(v: &str) -> &str {
    v.trim_end_matches(['.', ')', ']', '}', ','])
}

/// A password value: not a placeholder, not a plain word.
fn password_ok(v: &str) -> bool {
    if v.chars().count() < 4 || placeholder_like(v) {
        return false;
    }
    let classes = char_classes(v);
    classes >= 2 || (classes == 1 && v.len() >= 12 && validate::entropy(v) >= 3.0)
}

/// A secret value after a key word: long and random enough.
fn secret_ok(v: &str) -> bool {
    if v.len() < 16 || placeholder_like(v) {
        return false;
    }
    let letters = v.bytes().any(|b| b.is_ascii_alphabetic());
    let digits = v.bytes().any(|b| b.is_ascii_digit());
    let e = validate::entropy(v);
    // Words joined by separators (`my-secret-value-here`) are not keys.
    let words = v
        .split(['-', '_', '.', '/'])
        .filter(|w| !w.is_empty())
        .count();
    letters && (digits || e >= 4.0) && e >= 3.2 && words <= (v.len() / 6).max(3)
}

fn char_classes(v: &str) -> usize {
    let lower = v.chars().any(char::is_lowercase);
    let upper = v.chars().any(char::is_uppercase);
    let digit = v.chars().any(|c| c.is_ascii_digit());
    let other = v.chars().any(|c| !c.is_alphanumeric());
    [lower, upper, digit, other].iter().filter(|x| **x).count()
}

fn placeholder_like(v: &str) -> bool {
    let l = v.to_ascii_lowercase();
    let first = v.chars().next();
    let same = first.is_some_and(|f| v.chars().all(|c| c == f));
    same || l.contains("xxxx")
        || l.contains("****")
        || l.contains("...")
        || l.starts_with('<')
        || l.starts_with('[')
        || l.starts_with("${")
        || l.starts_with("{{")
        || l.starts_with('%')
        || l.starts_with('$')
        || l.contains("your_")
        || l.contains("your-")
        || l.contains("example")
        || l.contains("placeholder")
        || l.contains("changeme_")
        || l == "password"
        || l == "required"
}

/// The JWT header decodes to a JSON object with `alg` or `typ`.
fn jwt_header_ok(v: &str) -> bool {
    let head = v.split('.').next().unwrap_or_default();
    let Some(decoded) = base64url_decode(head.get(..head.len().min(512)).unwrap_or(head)) else {
        return false;
    };
    let s = String::from_utf8_lossy(&decoded);
    s.starts_with('{') && (s.contains("\"alg\"") || s.contains("\"typ\""))
}

fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 3);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap_or(0));
        }
    }
    Some(out)
}

/// ISO 7064 MOD 97-10 over the letters and digits of `v` (letters count A=10 .. Z=35).
fn mod97(v: &str) -> bool {
    let mut r: u32 = 0;
    let mut n = 0usize;
    for c in v.bytes() {
        let d = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            b'a'..=b'z' => u32::from(c - b'a') + 10,
            _ => continue,
        };
        n += 1;
        r = if d >= 10 {
            (r * 100 + d) % 97
        } else {
            (r * 10 + d) % 97
        };
    }
    n >= 2 && r == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(e: &Engine, text: &str) -> Vec<(String, String)> {
        let mut s = e.scratch();
        let mut out = Vec::new();
        e.scan(&mut s, text, true, &mut out);
        out.iter()
            .filter(|h| h.placeholder.is_none())
            .map(|h| {
                (
                    e.type_name(h.ty).to_string(),
                    text[h.start..h.end].to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn mod97_checks() {
        // GB82 WEST 1234 5698 7654 32 with the country and check digits moved to the end.
        assert!(mod97("WEST12345698765432GB82"));
        assert!(!mod97("WEST12345698765432GB83"));
        assert!(!mod97("1"));
    }

    #[test]
    fn base64url() {
        assert_eq!(
            base64url_decode("eyJhbGciOiJIUzI1NiJ9").unwrap(),
            br#"{"alg":"HS256"}"#
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            (
                "min score",
                serde_json::json!({"min_score": 2.0}),
                "/p/min_score",
            ),
            (
                "unknown type",
                serde_json::json!({"entities": {"NAME": {"action": "redact"}}}),
                "/p/entities/NAME",
            ),
            (
                "bad custom name",
                serde_json::json!({"custom": [{"name": "x", "pattern": "a"}]}),
                "/p/custom/0/name",
            ),
            (
                "bad regex",
                serde_json::json!({"custom": [{"name": "X", "pattern": "("}]}),
                "/p/custom/0/pattern",
            ),
            (
                "hash without key",
                serde_json::json!({"entities": {"EMAIL": {"action": "hash"}}, "hash_key_env": "GUARD_TEST_NO_SUCH_KEY"}),
                "/p/hash_key_env",
            ),
            (
                "empty term",
                serde_json::json!({"dictionaries": [{"name": "P", "terms": [" "]}]}),
                "/p/dictionaries/0/terms/0",
            ),
            (
                "hold too small",
                serde_json::json!({"max_hold_bytes": 1}),
                "/p/max_hold_bytes",
            ),
        ];
        for (name, cfg, want) in cases {
            let s: Settings = serde_json::from_value(cfg).unwrap();
            let e = Engine::compile(s, "/p").unwrap_err();
            assert!(e.message().starts_with(want), "{name}: {}", e.message());
        }
    }

    #[test]
    fn finds_builtin_types() {
        let e = Engine::default_policy().unwrap();
        let text = "mail jane.doe@example.com or ring the office; key AKIAIOSFODNN7EXAMPLE end";
        let got = found(&e, text);
        assert!(
            got.contains(&("EMAIL".into(), "jane.doe@example.com".into())),
            "{got:?}"
        );
        assert!(
            got.contains(&("API_KEY".into(), "AKIAIOSFODNN7EXAMPLE".into())),
            "{got:?}"
        );
    }

    #[test]
    fn operator_entities_and_dictionaries() {
        let s: Settings = serde_json::from_value(serde_json::json!({
            "custom": [
                {"name": "EMPLOYEE_ID", "pattern": "EMP-[0-9]{6}", "context": ["employee"], "context_required": true},
                {"name": "ACCOUNT", "pattern": "ACC[0-9]{8}", "checksum": "mod97"}
            ],
            "dictionaries": [{"name": "PROJECT", "terms": ["Project Falcon", "Bluebird"]}]
        }))
        .unwrap();
        let e = Engine::compile(s, "").unwrap();
        let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
            (
                "employee EMP-123456 is on leave",
                vec![("EMPLOYEE_ID", "EMP-123456")],
            ),
            ("ticket EMP-123456 is closed", vec![]),
            (
                "the project falcon launch and BLUEBIRD",
                vec![("PROJECT", "project falcon"), ("PROJECT", "BLUEBIRD")],
            ),
            ("bluebirds are not the code name", vec![]),
        ];
        for (text, want) in cases {
            let got = found(&e, text);
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            assert_eq!(got, want, "{text}");
        }
        let s: Settings = serde_json::from_value(serde_json::json!({
            "custom": [{"name": "ACCOUNT", "pattern": "[0-9]{11}", "checksum": "luhn"}]
        }))
        .unwrap();
        let e = Engine::compile(s, "").unwrap();
        assert_eq!(
            found(&e, "ref 79927398713 ok"),
            vec![("ACCOUNT".to_string(), "79927398713".to_string())]
        );
        assert!(found(&e, "ref 79927398710 ok").is_empty());
    }

    #[test]
    fn streaming_holds_only_what_can_still_match() {
        let e = Engine::default_policy().unwrap();
        let mut s = e.scratch();
        let mut out = Vec::new();
        // A word at the end could still become an e-mail address.
        let fin = e.scan(&mut s, "write to jane", false, &mut out);
        assert_eq!(fin, "write to ".len());
        // A finished sentence is final.
        let fin = e.scan(&mut s, "hello there. ", false, &mut out);
        assert_eq!(fin, "hello there. ".len());
        // A PEM block without its END line is held from its BEGIN line.
        let t = "key: -----BEGIN PRIVATE KEY-----\nMIIE";
        let fin = e.scan(&mut s, t, false, &mut out);
        assert_eq!(fin, "key: ".len());
    }
}
/// A policy's compiled settings, shared by every stream.
#[derive(Debug)]
pub struct Compiled {
    pub engine: std::rc::Rc<Engine>,
}

/// Parse a whole pii-redact filter configuration (the same code as `on_configure`).
pub fn parse_config(bytes: &[u8]) -> Result<guard_core::config::FilterConfig<Compiled>> {
    guard_core::config::FilterConfig::parse::<Settings, _>(
        bytes,
        guard_core::config::FailurePolicy::FailClosed,
        |s: Settings, path: &str| {
            Ok(Compiled {
                engine: std::rc::Rc::new(Engine::compile(s, path)?),
            })
        },
    )
}

impl Engine {
    /// The engine of the default policy of a whole filter configuration (for the CLI).
    pub fn from_config_file(bytes: &[u8]) -> Result<std::rc::Rc<Engine>> {
        let cfg = parse_config(bytes)?;
        Ok(std::rc::Rc::clone(&cfg.select(None, None).settings.engine))
    }
}

#[cfg(test)]
mod shipped_tests {
    use super::*;

    /// `guardctl pii` without `--config` uses `Settings::default()`: it must be the policy that
    /// ships in `envoy/policies/pii-redact.json`.
    #[test]
    fn default_settings_are_the_shipped_policy() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../envoy/policies/pii-redact.json"
        );
        let bytes = std::fs::read(path).unwrap();
        let cfg = parse_config(&bytes).unwrap();
        let shipped = &cfg.select(None, None).settings.engine.settings;
        assert_eq!(shipped, &Settings::default());
    }
}
