//! The prompt-guard engine: settings, compilation, and the scan of one text segment.
//!
//! Per segment: every normalised view of the text (and of every encoded payload decoded from
//! it) is matched against the rule packs; the statistical model scores the base view (and the
//! decoded payloads). Rule weights are adjusted by source (instructions to call tools are normal
//! from a user, suspicious inside a tool result), combined by noisy-OR
//! (`1 - Π(1 - wᵢ)`), and combined with the model probability the same way. The segment's source
//! sets the thresholds: `block` at or above `block`, `flag` at or above `flag`.

use crate::decode::{decode_payloads, DecodeLimits, Decoded};
use crate::model::Model;
use crate::normalize::{Normalizer, View, ViewKind};
use crate::rules::{builtin_rules, Category, RuleDef, RuleHit, RuleScratch, RuleSet};
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use guard_core::config::{FailurePolicy, FilterConfig};
use guard_core::error::{Error, Result};
use guard_core::segment::Source;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::rc::Rc;

/// The default policy shipped in `envoy/` and used by `guardctl` without `--config`.
pub const DEFAULT_POLICY: &str = include_str!("../../../envoy/policies/prompt-guard.json");

/// What a verdict asks for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    #[default]
    Allow,
    Flag,
    Block,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Flag => "flag",
            Verdict::Block => "block",
        }
    }
}

/// Score bands of one source.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub flag: f32,
    pub block: f32,
}

/// Per-source scope.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePolicy {
    /// Scan segments of this source at all.
    pub scan: bool,
    /// Thresholds for this source (default: the policy's `thresholds`).
    #[serde(default)]
    pub flag: Option<f32>,
    #[serde(default)]
    pub block: Option<f32>,
}

/// Denied or allowed topics: phrases matched on the normalised text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topic {
    pub id: String,
    pub phrases: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TopicPolicy {
    /// A user message that mentions one of these is refused (`denied_topic`).
    pub denied: Vec<Topic>,
    /// When not empty, the latest user message must mention one of these (`off_topic`).
    pub allowed: Vec<Topic>,
    /// What a topic violation does: `block` (default) or `flag`.
    pub action: Option<Verdict>,
}

/// Which second opinion to ask for grey-zone scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecondOpinionKind {
    /// OpenAI-compatible `POST /v1/moderations` (`results[0].flagged`).
    OpenaiModeration,
    /// `POST {"text": ...}` → `{"label": "injection"|"benign", "score": 0..1}`.
    Classifier,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondOpinion {
    /// Envoy cluster to call.
    pub cluster: String,
    pub kind: SecondOpinionKind,
    /// Request path (default `/v1/moderations` or `/classify`).
    #[serde(default)]
    pub path: Option<String>,
    /// `:authority` of the call (default: the cluster name).
    #[serde(default)]
    pub authority: Option<String>,
    /// Model name sent to a moderation endpoint.
    #[serde(default)]
    pub model: Option<String>,
    /// Extra request headers (e.g. an API key reference injected by Envoy is better).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Scores in `[low, high)` are sent; default: `[flag, block)` of the segment's source.
    #[serde(default)]
    pub grey_zone: Option<[f32; 2]>,
    /// When the call fails or times out: `fail_closed` blocks, `fail_open` keeps the engine's
    /// own verdict (a flag). Default `fail_open`.
    #[serde(default)]
    pub on_failure: Option<FailurePolicy>,
    /// Most text sent (bytes of the highest-scoring segment).
    #[serde(default = "default_max_text")]
    pub max_text_bytes: usize,
}

fn default_timeout_ms() -> u64 {
    500
}
fn default_max_text() -> usize {
    16 * 1024
}

/// What to do with exfiltration links in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AnswerAction {
    /// Leave answers alone.
    Off,
    /// Replace the offending link or image with a placeholder (streams included).
    #[default]
    Neutralize,
    /// Refuse the whole answer (502 when not streamed; an error event when streamed).
    Block,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnswerPolicy {
    pub exfiltration: AnswerAction,
    /// Hosts links may point at with data in their query (exact or `*.suffix`).
    pub allowed_hosts: Vec<String>,
    /// Longest markdown link held back while a stream is judged.
    pub max_link_bytes: usize,
}

impl Default for AnswerPolicy {
    fn default() -> Self {
        AnswerPolicy {
            exfiltration: AnswerAction::Neutralize,
            allowed_hosts: Vec::new(),
            max_link_bytes: 2048,
        }
    }
}

/// prompt-guard's own policy fields.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Never block or flag; record what would have happened.
    pub dry_run: bool,
    pub thresholds: Thresholds,
    /// Per-source scope; sources not listed use the defaults (user, tool results and documents
    /// scanned; system, developer, assistant, reasoning and tool calls not).
    pub sources: BTreeMap<String, SourcePolicy>,
    /// Built-in rule ids to turn off.
    pub disabled_rules: Vec<String>,
    /// Extra rules, same shape as the built-in ones.
    pub custom_rules: Vec<RuleDef>,
    /// Use the embedded statistical model.
    pub model: bool,
    /// Decode base64 / hex / URL / ROT13 payloads and scan them too.
    pub decode: bool,
    pub topics: TopicPolicy,
    pub second_opinion: Option<SecondOpinion>,
    pub answers: AnswerPolicy,
    /// Most bytes of one segment scanned (longer segments: the head and the tail).
    pub max_scan_bytes: usize,
    /// Header added to flagged requests going upstream.
    pub flag_header: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            dry_run: false,
            thresholds: Thresholds {
                flag: 0.6,
                block: 0.85,
            },
            sources: BTreeMap::new(),
            disabled_rules: Vec::new(),
            custom_rules: Vec::new(),
            model: true,
            decode: true,
            topics: TopicPolicy::default(),
            second_opinion: None,
            answers: AnswerPolicy::default(),
            max_scan_bytes: 256 * 1024,
            flag_header: "x-guard-flagged".to_string(),
        }
    }
}

const SOURCES: [(&str, Source); 8] = [
    ("user", Source::User),
    ("system", Source::System),
    ("developer", Source::Developer),
    ("assistant", Source::Assistant),
    ("reasoning", Source::Reasoning),
    ("tool_call", Source::ToolCall),
    ("tool_result", Source::ToolResult),
    ("document", Source::Document),
];

fn default_scanned(source: Source) -> bool {
    matches!(source, Source::User | Source::ToolResult | Source::Document)
}

/// A compiled topic list.
struct Topics {
    ids: Vec<String>,
    /// Pattern index → topic index.
    owner: Vec<usize>,
    matcher: Option<AhoCorasick>,
}

impl Topics {
    fn compile(topics: &[Topic], path: &str, norm: &mut Normalizer) -> Result<Topics> {
        let mut ids = Vec::new();
        let mut owner = Vec::new();
        let mut patterns = Vec::new();
        let mut buf = String::new();
        for (i, t) in topics.iter().enumerate() {
            if t.id.is_empty() || t.phrases.is_empty() {
                return Err(Error::config(format!(
                    "{path}/{i}: a topic needs an id and at least one phrase"
                )));
            }
            for (j, p) in t.phrases.iter().enumerate() {
                norm.base(p, &mut buf);
                if buf.is_empty() {
                    return Err(Error::config(format!(
                        "{path}/{i}/phrases/{j}: empty phrase"
                    )));
                }
                patterns.push(buf.clone());
                owner.push(i);
            }
            ids.push(t.id.clone());
        }
        let matcher = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::Standard)
                    .build(&patterns)
                    .map_err(|e| Error::config(format!("{path}: {e}")))?,
            )
        };
        Ok(Topics {
            ids,
            owner,
            matcher,
        })
    }

    /// Ids of the topics mentioned in `text` (a base view), at word boundaries.
    fn find(&self, text: &str, out: &mut Vec<usize>) {
        let Some(m) = &self.matcher else { return };
        for hit in m.find_overlapping_iter(text) {
            if !at_word_boundaries(text, hit.start(), hit.end()) {
                continue;
            }
            if let Some(&t) = self.owner.get(hit.pattern().as_usize()) {
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
    }
}

fn at_word_boundaries(text: &str, start: usize, end: usize) -> bool {
    let before = text.get(..start).and_then(|s| s.chars().next_back());
    let after = text.get(end..).and_then(|s| s.chars().next());
    let first = text.get(start..).and_then(|s| s.chars().next());
    let last = text.get(..end).and_then(|s| s.chars().next_back());
    let wordy = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() && !is_cjk(c));
    let glued_before = wordy(before) && wordy(first);
    let glued_after = wordy(after) && wordy(last);
    !(glued_before || glued_after)
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0x0E00..=0x0E7F)
}

/// The compiled engine of one policy.
pub struct Engine {
    pub settings: Settings,
    rules: RuleSet,
    model: Option<&'static Model>,
    sources: Vec<(Source, SourcePolicy)>,
    denied: Topics,
    allowed: Topics,
    pub(crate) exfil: crate::exfil::ExfilPolicy,
}

/// Per-stream scratch, reused across segments and requests.
#[derive(Default)]
pub struct Scratch {
    norm: Normalizer,
    views: Vec<View>,
    decoded: Vec<Decoded>,
    dviews: Vec<View>,
    hits: Vec<RuleHit>,
    rules: Option<RuleScratch>,
    best: Vec<(usize, f32)>,
    topic_hits: Vec<usize>,
    clipped: String,
}

/// The result of scanning one segment.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Scan {
    pub verdict: Verdict,
    pub score: f32,
    pub rule_score: f32,
    pub model_score: f32,
    /// Ids of the rules that matched, strongest first.
    pub rules: Vec<String>,
    pub categories: Vec<Category>,
    /// The text was obfuscated: a rule matched only in a de-obfuscated, reversed or decoded
    /// view.
    pub obfuscated: bool,
    /// Denied topics mentioned.
    pub denied_topics: Vec<String>,
    /// Allowed topics mentioned (only computed when an allow-list exists).
    pub allowed_topics: Vec<String>,
    /// Thresholds used for this segment's source.
    pub flag_at: f32,
    pub block_at: f32,
    /// The source was not in scope.
    pub skipped: bool,
}

impl Engine {
    /// Compile one policy's settings; errors name the JSON path under `path`.
    pub fn compile(settings: Settings, path: &str) -> Result<Engine> {
        let check = |v: f32, p: &str| -> Result<()> {
            if !(0.0..=1.0).contains(&v) || v.is_nan() {
                return Err(Error::config(format!(
                    "{path}/{p}: {v} is not between 0 and 1"
                )));
            }
            Ok(())
        };
        check(settings.thresholds.flag, "thresholds/flag")?;
        check(settings.thresholds.block, "thresholds/block")?;
        if settings.thresholds.flag > settings.thresholds.block {
            return Err(Error::config(format!(
                "{path}/thresholds: flag ({}) is above block ({})",
                settings.thresholds.flag, settings.thresholds.block
            )));
        }
        let mut sources = Vec::new();
        for (name, source) in SOURCES {
            let policy = match settings.sources.get(name) {
                Some(p) => *p,
                None => SourcePolicy {
                    scan: default_scanned(source),
                    flag: None,
                    block: None,
                },
            };
            if let Some(f) = policy.flag {
                check(f, &format!("sources/{name}/flag"))?;
            }
            if let Some(b) = policy.block {
                check(b, &format!("sources/{name}/block"))?;
            }
            sources.push((source, policy));
        }
        for name in settings.sources.keys() {
            if !SOURCES.iter().any(|(n, _)| n == name) {
                return Err(Error::config(format!(
                    "{path}/sources/{name}: unknown source (one of user, system, developer, assistant, reasoning, tool_call, tool_result, document)"
                )));
            }
        }
        let mut defs = builtin_rules();
        for (i, id) in settings.disabled_rules.iter().enumerate() {
            if !defs.iter().any(|d| &d.id == id) {
                return Err(Error::config(format!(
                    "{path}/disabled_rules/{i}: no built-in rule {id:?}"
                )));
            }
        }
        defs.retain(|d| !settings.disabled_rules.contains(&d.id));
        defs.extend(settings.custom_rules.iter().cloned());
        let rules = RuleSet::compile(defs)
            .map_err(|e| Error::config(format!("{path}/custom_rules: {e}")))?;
        let model = if settings.model {
            Some(
                Model::embedded()
                    .ok_or_else(|| Error::config("the embedded model failed to load"))?,
            )
        } else {
            None
        };
        let mut norm = Normalizer::new();
        let denied = Topics::compile(
            &settings.topics.denied,
            &format!("{path}/topics/denied"),
            &mut norm,
        )?;
        let allowed = Topics::compile(
            &settings.topics.allowed,
            &format!("{path}/topics/allowed"),
            &mut norm,
        )?;
        if let Some(so) = &settings.second_opinion {
            if so.cluster.is_empty() {
                return Err(Error::config(format!(
                    "{path}/second_opinion/cluster: empty"
                )));
            }
            if so.timeout_ms == 0 || so.timeout_ms > 60_000 {
                return Err(Error::config(format!(
                    "{path}/second_opinion/timeout_ms: {} is not in 1..=60000",
                    so.timeout_ms
                )));
            }
            if let Some([lo, hi]) = so.grey_zone {
                check(lo, "second_opinion/grey_zone/0")?;
                check(hi, "second_opinion/grey_zone/1")?;
                if lo > hi {
                    return Err(Error::config(format!(
                        "{path}/second_opinion/grey_zone: {lo} is above {hi}"
                    )));
                }
            }
        }
        let exfil =
            crate::exfil::ExfilPolicy::compile(&settings.answers, &format!("{path}/answers"))?;
        Ok(Engine {
            settings,
            rules,
            model,
            sources,
            denied,
            allowed,
            exfil,
        })
    }

    /// The shipped default policy (`envoy/policies/prompt-guard.json`).
    pub fn default_policy() -> Result<Engine> {
        Engine::from_config_file(DEFAULT_POLICY.as_bytes())
    }

    /// The engine of a filter configuration file's `default` policy.
    pub fn from_config_file(bytes: &[u8]) -> Result<Engine> {
        let config = parse_config(bytes)?;
        let policy = config.select(None, None);
        // The compiled engine is shared through an Rc inside the config; rebuild an owned one.
        Engine::compile(policy.settings.settings.clone(), "/policies/default")
    }

    pub fn scratch(&self) -> Scratch {
        Scratch {
            rules: Some(self.rules.scratch()),
            ..Scratch::default()
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Thresholds and scope of a source.
    pub fn source_policy(&self, source: Source) -> (bool, f32, f32) {
        let p = self
            .sources
            .iter()
            .find(|(s, _)| *s == source)
            .map(|(_, p)| *p);
        match p {
            Some(p) => (
                p.scan,
                p.flag.unwrap_or(self.settings.thresholds.flag),
                p.block.unwrap_or(self.settings.thresholds.block),
            ),
            None => (
                default_scanned(source),
                self.settings.thresholds.flag,
                self.settings.thresholds.block,
            ),
        }
    }

    /// Scan one segment of text from `source`.
    pub fn scan(&self, scratch: &mut Scratch, text: &str, source: Source) -> Scan {
        let (scan, flag_at, block_at) = self.source_policy(source);
        let mut out = Scan {
            flag_at,
            block_at,
            ..Scan::default()
        };
        if !scan {
            out.skipped = true;
            return out;
        }
        let text = clip(text, self.settings.max_scan_bytes, &mut scratch.clipped);
        let Scratch {
            norm,
            views,
            decoded,
            dviews,
            hits,
            rules,
            best,
            topic_hits,
            ..
        } = scratch;
        let rs = rules.get_or_insert_with(|| self.rules.scratch());
        best.clear();
        norm.views(text, views);
        let mut obfuscated_only = true;
        let plain_prose = views
            .iter()
            .find(|v| v.kind == ViewKind::Base)
            .is_some_and(|v| reads_forward(&v.text));
        for view in views.iter() {
            // Text that reads as ordinary prose forwards is not reversed text: skip that view.
            if view.kind == ViewKind::Reversed && plain_prose {
                continue;
            }
            hits.clear();
            self.rules.scan(&view.text, rs, hits);
            for h in hits.iter() {
                if view.kind == ViewKind::Base {
                    obfuscated_only = false;
                }
                note_hit(
                    &self.rules,
                    best,
                    h.rule,
                    source,
                    view.kind != ViewKind::Base,
                );
            }
        }
        let base = views
            .iter()
            .find(|v| v.kind == ViewKind::Base)
            .map(|v| v.text.as_str())
            .unwrap_or("");
        let mut model_score = match self.model {
            Some(m) if !base.is_empty() => m.score(base),
            _ => 0.0,
        };
        if self.settings.decode {
            decoded.clear();
            decode_payloads(text, &DecodeLimits::default(), decoded);
            for d in decoded.iter() {
                norm.views(&d.text, dviews);
                for view in dviews.iter() {
                    hits.clear();
                    self.rules.scan(&view.text, rs, hits);
                    for h in hits.iter() {
                        note_hit(&self.rules, best, h.rule, source, true);
                    }
                    if view.kind == ViewKind::Base {
                        if let Some(m) = self.model {
                            model_score = model_score.max(m.score(&view.text));
                        }
                    }
                }
            }
        }
        // Strongest rules first; noisy-OR of their (source-adjusted) weights.
        best.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut keep = 1.0f32;
        for (rule, w) in best.iter() {
            keep *= 1.0 - w.clamp(0.0, 1.0);
            if let Some(info) = self.rules.info(*rule) {
                out.rules.push(info.id.clone());
                if !out.categories.contains(&info.category) {
                    out.categories.push(info.category);
                }
            }
        }
        out.rule_score = 1.0 - keep;
        out.model_score = model_score;
        out.obfuscated = !best.is_empty() && obfuscated_only;
        out.score = 1.0 - (1.0 - out.rule_score) * (1.0 - model_score.clamp(0.0, 1.0));
        out.verdict = if out.score >= block_at {
            Verdict::Block
        } else if out.score >= flag_at {
            Verdict::Flag
        } else {
            Verdict::Allow
        };
        // Topics are about what users ask.
        if source == Source::User {
            topic_hits.clear();
            self.denied.find(base, topic_hits);
            out.denied_topics = topic_hits
                .iter()
                .filter_map(|i| self.denied.ids.get(*i).cloned())
                .collect();
            if !self.allowed.ids.is_empty() {
                topic_hits.clear();
                self.allowed.find(base, topic_hits);
                out.allowed_topics = topic_hits
                    .iter()
                    .filter_map(|i| self.allowed.ids.get(*i).cloned())
                    .collect();
            }
        }
        out
    }

    /// The decision path of one segment, for `guardctl replay`: the [`Scan`] (the same verdict
    /// as [`Engine::scan`]), the normalisation steps, the views and decoded payloads scanned,
    /// and every rule occurrence with its source-adjusted weight and its position in the
    /// segment (characters; a hit inside a decoded payload points at the encoded run). Not on
    /// the filter's hot path: it scans again to collect positions.
    pub fn explain(&self, scratch: &mut Scratch, text: &str, source: Source) -> Explain {
        let scan = self.scan(scratch, text, source);
        let mut out = Explain {
            steps: crate::normalize::steps(text),
            ..Explain::default()
        };
        if scan.skipped {
            out.scan = scan;
            return out;
        }
        let text = clip(text, self.settings.max_scan_bytes, &mut scratch.clipped);
        let chars = |b: usize| text.get(..b).map_or(0, |t| t.chars().count());
        let mut rs = self.rules.scratch();
        let mut hits = Vec::new();
        let mut views = Vec::new();
        scratch.norm.views(text, &mut views);
        let plain_prose = views
            .iter()
            .find(|v| v.kind == ViewKind::Base)
            .is_some_and(|v| reads_forward(&v.text));
        for view in &views {
            if view.kind == ViewKind::Reversed && plain_prose {
                continue;
            }
            out.views.push(view_name(view.kind));
            hits.clear();
            self.rules.scan(&view.text, &mut rs, &mut hits);
            for h in &hits {
                let (s, e) = view.original_range(h.start, h.end);
                self.push_path_hit(
                    &mut out,
                    h.rule,
                    source,
                    view.kind,
                    (chars(s), chars(e)),
                    None,
                );
            }
        }
        if self.settings.decode {
            let mut decoded = Vec::new();
            decode_payloads(text, &DecodeLimits::default(), &mut decoded);
            let mut dviews = Vec::new();
            for d in &decoded {
                let at = (chars(d.start), chars(d.end));
                out.decoded.push(DecodedRun {
                    encoding: d.encoding.as_str(),
                    start: at.0,
                    end: at.1,
                    depth: d.depth,
                });
                scratch.norm.views(&d.text, &mut dviews);
                for view in &dviews {
                    hits.clear();
                    self.rules.scan(&view.text, &mut rs, &mut hits);
                    for h in &hits {
                        self.push_path_hit(
                            &mut out,
                            h.rule,
                            source,
                            view.kind,
                            at,
                            Some(d.encoding.as_str()),
                        );
                    }
                }
            }
        }
        out.scan = scan;
        out
    }

    fn push_path_hit(
        &self,
        out: &mut Explain,
        rule: usize,
        source: Source,
        view: ViewKind,
        (start, end): (usize, usize),
        decoded: Option<&'static str>,
    ) {
        let Some(info) = self.rules.info(rule) else {
            return;
        };
        let obfuscated = view != ViewKind::Base || decoded.is_some();
        let hit = PathHit {
            rule: info.id.clone(),
            category: info.category.as_str(),
            weight: adjusted_weight(info.category, info.weight, source, obfuscated),
            view: view_name(view),
            decoded,
            start,
            end,
        };
        if !out.hits.iter().any(|h| {
            h.rule == hit.rule && h.start == hit.start && h.end == hit.end && h.view == hit.view
        }) {
            out.hits.push(hit);
        }
    }

    /// The answer-side policy (exfiltration links).
    pub fn exfil(&self) -> &crate::exfil::ExfilPolicy {
        &self.exfil
    }

    /// Whether the policy has an allow-list of topics.
    pub fn has_allowed_topics(&self) -> bool {
        !self.allowed.ids.is_empty()
    }

    /// The action for a topic violation.
    pub fn topic_action(&self) -> Verdict {
        self.settings.topics.action.unwrap_or(Verdict::Block)
    }
}

/// The decision path of one segment ([`Engine::explain`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Explain {
    /// Normalisation steps that changed the text ([`crate::normalize::steps`]).
    pub steps: Vec<&'static str>,
    /// The views scanned.
    pub views: Vec<&'static str>,
    /// Encoded payloads found and decoded.
    pub decoded: Vec<DecodedRun>,
    /// Every rule occurrence.
    pub hits: Vec<PathHit>,
    /// The verdict, scores and thresholds.
    pub scan: Scan,
}

/// An encoded run in a segment (character offsets).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecodedRun {
    pub encoding: &'static str,
    pub start: usize,
    pub end: usize,
    pub depth: u8,
}

/// One rule occurrence in a decision path (character offsets into the segment).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathHit {
    pub rule: String,
    pub category: &'static str,
    /// The rule's weight adjusted for the segment's source and obfuscation.
    pub weight: f32,
    /// The view it matched in: `base`, `deobfuscated` or `reversed`.
    pub view: &'static str,
    /// The encoding of the payload it matched in, if decoded.
    pub decoded: Option<&'static str>,
    pub start: usize,
    pub end: usize,
}

fn view_name(kind: ViewKind) -> &'static str {
    match kind {
        ViewKind::Base => "base",
        ViewKind::Deobfuscated => "deobfuscated",
        ViewKind::Reversed => "reversed",
    }
}

/// Source-adjusted weight of a rule hit: tool-use and AI-addressed instructions are ordinary in
/// a user's own request and suspicious inside content the model reads.
fn adjusted_weight(category: Category, weight: f32, source: Source, obfuscated: bool) -> f32 {
    let factor = match (source, category) {
        (Source::User | Source::Developer | Source::System, Category::ToolAbuse) => 0.3,
        (Source::User | Source::Developer | Source::System, Category::AddressedToAi) => 0.6,
        (Source::ToolResult | Source::Document, Category::AddressedToAi | Category::ToolAbuse) => {
            1.2
        }
        (
            Source::ToolResult | Source::Document,
            Category::InstructionOverride | Category::DelimiterInjection,
        ) => 1.1,
        _ => 1.0,
    };
    // Hiding an instruction is a signal of its own.
    let obf = if obfuscated { 1.15 } else { 1.0 };
    (weight * factor * obf).clamp(0.0, 0.99)
}

fn note_hit(
    rules: &RuleSet,
    best: &mut Vec<(usize, f32)>,
    rule: usize,
    source: Source,
    obfuscated: bool,
) {
    let Some(info) = rules.info(rule) else { return };
    let w = adjusted_weight(info.category, info.weight, source, obfuscated);
    match best.iter_mut().find(|(r, _)| *r == rule) {
        Some(slot) => slot.1 = slot.1.max(w),
        None => best.push((rule, w)),
    }
}

/// Whether a base view reads forwards as prose: it has at least three different very common
/// function words (English, French, German, Spanish, Portuguese, Italian). Reversed text has
/// none, so only text that fails this is scanned reversed.
fn reads_forward(base: &str) -> bool {
    const COMMON: [&str; 16] = [
        " the ", " and ", " to ", " of ", " is ", " you ", " le ", " la ", " et ", " der ",
        " die ", " und ", " el ", " que ", " de ", " il ",
    ];
    let probe = base.get(..floor_char(base, 4096)).unwrap_or(base);
    COMMON.iter().filter(|w| probe.contains(*w)).take(3).count() >= 3
}

/// At most `max` bytes of `text`: all of it, or its head and tail (attacks sit at either end).
fn clip<'a>(text: &'a str, max: usize, buf: &'a mut String) -> &'a str {
    if text.len() <= max || max == 0 {
        return text;
    }
    let head_len = floor_char(text, max * 3 / 4);
    let tail_start = ceil_char(text, text.len().saturating_sub(max / 4));
    buf.clear();
    buf.push_str(text.get(..head_len).unwrap_or(""));
    buf.push(' ');
    buf.push_str(text.get(tail_start..).unwrap_or(""));
    buf.as_str()
}

fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i.min(s.len())
}

/// A compiled policy as the filter holds it: the engine, shared by every stream.
pub struct Compiled {
    pub settings: Settings,
    pub engine: Rc<Engine>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("rules", &self.engine.rules.len())
            .finish()
    }
}

/// Parse a whole prompt-guard filter configuration (the same code as `on_configure`).
pub fn parse_config(bytes: &[u8]) -> Result<FilterConfig<Compiled>> {
    FilterConfig::parse::<Settings, _>(
        bytes,
        FailurePolicy::FailClosed,
        |s: Settings, path: &str| {
            let engine = Engine::compile(s.clone(), path)?;
            Ok(Compiled {
                settings: s,
                engine: Rc::new(engine),
            })
        },
    )
}
