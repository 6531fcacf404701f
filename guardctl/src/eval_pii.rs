//! `guardctl eval-pii`: the quality and speed of pii-redact's engine on the labelled PII data.
//!
//! ```text
//! guardctl eval-pii [--data DIR] [--split test|train] [--config FILE] [--errors] [--json]
//! ```
//!
//! Every record of `<data>/pii/<split>.jsonl` (default `test`; spans in char offsets) is scanned
//! by the engine of the shipped default policy (or of `--config FILE`'s `default` policy); every
//! detection counts, whatever its action. Printed per evaluated type ([`TYPES`]): gold spans,
//! predictions, true positives, precision, recall and F1, in two matchings: *strict* (same type,
//! same span) and *overlap* (same type, spans overlap); each gold span and each prediction is
//! matched at most once. Then the micro totals over the evaluated types and the targets
//! (checksum types: recall ≥ 0.99 and precision ≥ 0.98; the others ≥ 0.95 and ≥ 0.95), met or
//! not, printed, never asserted.
//!
//! Gold spans of the types that need NER (PERSON, ADDRESS, LOCATION, ...: every type not in
//! [`TYPES`]) are left out, and a prediction that overlaps one of them without matching counts
//! neither as a true nor as a false positive. Predictions of types outside [`TYPES`] (operator
//! entities of a `--config`) are only counted.
//!
//! The PII-free records (`"spans": []`, look-alikes) get their own line: how many have at least
//! one detection, and the detections by type. Throughput: single-thread `scan` over every text
//! of the split, repeated until at least 1 s and 3 rounds, median MB/s of the rounds.
//! `--errors` lists the most frequent false negatives, false positives and boundary mismatches
//! (grouped by type and the shape of the text: digits → 9, letters → a / A); `--json` prints
//! every number as one JSON object instead of the tables.

use crate::train::data_dir_for;
use anyhow::{anyhow, bail, Context};
use pii_redact::engine::{Engine, Hit, Scratch};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: guardctl eval-pii [--data DIR] [--split test|train] [--config FILE] [--errors] [--json]";

/// The types the in-proxy engine detects, in table order.
pub(crate) const TYPES: [&str; 9] = [
    "EMAIL",
    "PHONE",
    "CREDIT_CARD",
    "IBAN",
    "US_SSN",
    "IP_ADDRESS",
    "API_KEY",
    "PRIVATE_KEY",
    "PASSWORD",
];
/// Types with a checksum, held to the higher targets.
const CHECKSUM_TYPES: [&str; 2] = ["CREDIT_CARD", "IBAN"];
/// (recall, precision) targets.
const CHECKSUM_TARGET: (f64, f64) = (0.99, 0.98);
const OTHER_TARGET: (f64, f64) = (0.95, 0.95);

/// Entries of each `--errors` list.
const TOP_ERRORS: usize = 20;
/// Chars of a span shown in `--errors`.
const SPAN_CHARS: usize = 60;
/// Chars of context on each side in `--errors`.
const CONTEXT_CHARS: usize = 30;

const MIN_ROUNDS: usize = 3;
const MIN_TIME: Duration = Duration::from_secs(1);

/// A span in Unicode scalar values (chars), end exclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
    pub ty: String,
}

impl Span {
    fn overlaps(&self, o: &Span) -> bool {
        self.start < o.end && o.start < self.end
    }
    fn same(&self, o: &Span) -> bool {
        self.start == o.start && self.end == o.end
    }
}

/// The engine of `--config FILE`'s default policy, or of the shipped default policy.
pub(crate) fn load_engine(config: Option<&str>) -> anyhow::Result<Rc<Engine>> {
    match config {
        Some(f) => {
            let bytes = std::fs::read(f).map_err(|e| anyhow!("cannot read {f}: {e}"))?;
            Engine::from_config_file(&bytes).map_err(|e| anyhow!("{f}: {e}"))
        }
        None => Engine::default_policy()
            .map(Rc::new)
            .map_err(|e| anyhow!("the default pii-redact policy does not compile: {e}")),
    }
}

/// Every entity the engine finds in `text` (placeholders left out), in char offsets.
pub(crate) fn detect(
    engine: &Engine,
    scratch: &mut Scratch,
    text: &str,
    hits: &mut Vec<Hit>,
) -> Vec<Span> {
    engine.scan(scratch, text, true, hits);
    let mut chars = CharCounter::new(text);
    hits.iter()
        .filter(|h| h.placeholder.is_none())
        .map(|h| {
            let start = chars.at(h.start);
            let end = chars.at(h.end);
            Span {
                start,
                end,
                ty: engine.type_name(h.ty).to_string(),
            }
        })
        .collect()
}

/// Byte offsets → char offsets, fast for ascending offsets.
struct CharCounter<'a> {
    bytes: &'a [u8],
    byte: usize,
    chars: usize,
}

impl<'a> CharCounter<'a> {
    fn new(text: &'a str) -> Self {
        CharCounter {
            bytes: text.as_bytes(),
            byte: 0,
            chars: 0,
        }
    }

    /// The number of chars that start before byte `b`.
    fn at(&mut self, b: usize) -> usize {
        let b = b.min(self.bytes.len());
        if b < self.byte {
            self.byte = 0;
            self.chars = 0;
        }
        let starts = self
            .bytes
            .get(self.byte..b)
            .map_or(0, |s| s.iter().filter(|&&x| x & 0xC0 != 0x80).count());
        self.chars += starts;
        self.byte = b;
        self.chars
    }
}

struct Options {
    data: Option<String>,
    split: String,
    config: Option<String>,
    errors: bool,
    json: bool,
}

fn parse_args(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        data: None,
        split: "test".to_string(),
        config: None,
        errors: false,
        json: false,
    };
    let mut it = args.iter().skip_while(|a| a.as_str() == "eval-pii");
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| anyhow!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--data" => o.data = Some(value()?),
            "--split" => {
                let v = value()?;
                if v != "test" && v != "train" {
                    bail!("--split must be test or train, not {v:?}\n{USAGE}");
                }
                o.split = v;
            }
            "--config" => o.config = Some(value()?),
            "--errors" => o.errors = true,
            "--json" => o.json = true,
            _ => bail!("unknown argument {a:?}\n{USAGE}"),
        }
    }
    Ok(o)
}

/// One labelled record.
#[derive(Debug, Clone)]
struct Record {
    text: String,
    gold: Vec<Span>,
}

fn load_records(path: &Path) -> anyhow::Result<Vec<Record>> {
    let data =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in data.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}: not json", at()))?;
        let text = v
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{}: no string \"text\"", at()))?;
        let n_chars = text.chars().count();
        let spans = v
            .get("spans")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("{}: no array \"spans\"", at()))?;
        let mut gold = Vec::with_capacity(spans.len());
        for (i, s) in spans.iter().enumerate() {
            let idx = |k: &str| {
                s.get(k)
                    .and_then(Value::as_u64)
                    .and_then(|x| usize::try_from(x).ok())
            };
            let (Some(start), Some(end), Some(ty)) = (
                idx("start"),
                idx("end"),
                s.get("type").and_then(Value::as_str),
            ) else {
                bail!("{}: spans/{i} needs start, end and type", at());
            };
            if start >= end || end > n_chars {
                bail!(
                    "{}: spans/{i} [{start}, {end}) is not inside the text ({n_chars} chars)",
                    at()
                );
            }
            gold.push(Span {
                start,
                end,
                ty: ty.to_string(),
            });
        }
        out.push(Record {
            text: text.to_string(),
            gold,
        });
    }
    Ok(out)
}

/// Run the subcommand. `args` are the arguments after `eval-pii` (a leading `eval-pii` is
/// skipped too).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let opts = parse_args(args)?;
    let dir = data_dir_for(opts.data.as_deref(), "pii")?;
    let path = dir.join("pii").join(format!("{}.jsonl", opts.split));
    let records = load_records(&path)?;
    if records.is_empty() {
        bail!("{} holds no records", path.display());
    }
    let engine = load_engine(opts.config.as_deref())?;
    let mut scratch = engine.scratch();
    let mut hits = Vec::new();
    let preds: Vec<Vec<Span>> = records
        .iter()
        .map(|r| detect(&engine, &mut scratch, &r.text, &mut hits))
        .collect();
    let eval = Eval::build(&records, &preds);
    let speed = throughput(&engine, &records)?;
    let scanner = match &opts.config {
        Some(f) => format!("engine, policy {f}"),
        None => "engine, shipped default policy".to_string(),
    };
    let file = path.display().to_string();
    if opts.json {
        let mut v = eval.to_json(&scanner, &file, &opts.split, &speed);
        if opts.errors {
            if let Value::Object(m) = &mut v {
                m.insert("errors".to_string(), eval.errors_json());
            }
        }
        println!("{v}");
    } else {
        eval.print(&scanner, &file, &opts.split, &speed);
        if opts.errors {
            eval.print_errors();
        }
    }
    Ok(())
}

/// Counts of one type in one matching.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    gold: usize,
    /// Predictions counted (true or false positives).
    pred: usize,
    tp: usize,
}

impl Counts {
    fn precision(&self) -> f64 {
        ratio(self.tp, self.pred)
    }
    fn recall(&self) -> f64 {
        ratio(self.tp, self.gold)
    }
    fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p.is_nan() || r.is_nan() {
            f64::NAN
        } else if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
    fn add(&mut self, o: &Counts) {
        self.gold += o.gold;
        self.pred += o.pred;
        self.tp += o.tp;
    }
    fn json(&self) -> Value {
        json!({
            "gold": self.gold,
            "pred": self.pred,
            "tp": self.tp,
            "fp": self.pred - self.tp.min(self.pred),
            "fn": self.gold - self.tp.min(self.gold),
            "precision": num(self.precision()),
            "recall": num(self.recall()),
            "f1": num(self.f1()),
        })
    }
}

fn target(ty: &str) -> (f64, f64) {
    if CHECKSUM_TYPES.contains(&ty) {
        CHECKSUM_TARGET
    } else {
        OTHER_TARGET
    }
}

/// Whether `c` meets `ty`'s targets (no gold spans: recall is undefined, not met).
fn meets(c: &Counts, ty: &str) -> bool {
    let (r, p) = target(ty);
    c.recall() >= r && c.precision() >= p
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Strict,
    Overlap,
}

/// What a prediction of an evaluated type turned out to be in one matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PredFate {
    Tp,
    Fp,
    /// Overlaps an ignored (NER-type) gold span.
    Ignored,
}

/// One-to-one matching of a record's predictions to its gold spans of evaluated types.
/// Returns each prediction's fate (`None` for types outside [`TYPES`]) and whether each gold
/// span was matched (`None` for ignored types).
fn match_record(
    gold: &[Span],
    pred: &[Span],
    mode: Mode,
) -> (Vec<Option<PredFate>>, Vec<Option<bool>>) {
    let mut matched: Vec<Option<bool>> = gold
        .iter()
        .map(|g| TYPES.contains(&g.ty.as_str()).then_some(false))
        .collect();
    let fates = pred
        .iter()
        .map(|p| {
            if !TYPES.contains(&p.ty.as_str()) {
                return None;
            }
            let hit = gold.iter().zip(matched.iter_mut()).find(|(g, m)| {
                **m == Some(false)
                    && g.ty == p.ty
                    && match mode {
                        Mode::Strict => g.same(p),
                        Mode::Overlap => g.overlaps(p),
                    }
            });
            if let Some((_, m)) = hit {
                *m = Some(true);
                return Some(PredFate::Tp);
            }
            let on_ignored = gold
                .iter()
                .any(|g| !TYPES.contains(&g.ty.as_str()) && g.overlaps(p));
            Some(if on_ignored {
                PredFate::Ignored
            } else {
                PredFate::Fp
            })
        })
        .collect();
    (fates, matched)
}

/// An error example (a group of them with the same type and shape).
#[derive(Debug, Clone)]
struct Example {
    ty: String,
    span: String,
    left: String,
    right: String,
    /// For a miss: the type found there instead; for a false positive: the gold type there;
    /// for a boundary mismatch: the gold span's text.
    note: String,
    count: usize,
    first: usize,
}

#[derive(Debug, Default)]
struct ErrorList {
    groups: BTreeMap<(String, String), Example>,
    total: usize,
}

impl ErrorList {
    fn add(&mut self, text: &str, start: usize, end: usize, ty: &str, note: String, seq: usize) {
        self.total += 1;
        let span: String = text
            .chars()
            .skip(start)
            .take(end - start.min(end))
            .collect();
        let key = (ty.to_string(), shape(&span));
        let e = self.groups.entry(key).or_insert_with(|| {
            let left: Vec<char> = text.chars().take(start).collect();
            let left: String = left
                .get(left.len().saturating_sub(CONTEXT_CHARS)..)
                .unwrap_or_default()
                .iter()
                .collect();
            let right: String = text.chars().skip(end).take(CONTEXT_CHARS).collect();
            Example {
                ty: ty.to_string(),
                span: span.clone(),
                left,
                right,
                note,
                count: 0,
                first: seq,
            }
        });
        e.count += 1;
    }

    fn top(&self) -> Vec<&Example> {
        let mut v: Vec<&Example> = self.groups.values().collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.first.cmp(&b.first)));
        v.truncate(TOP_ERRORS);
        v
    }

    fn json(&self) -> Value {
        json!({
            "total": self.total,
            "groups": self.groups.len(),
            "top": self.top().iter().map(|e| json!({
                "type": e.ty,
                "count": e.count,
                "span": truncate(&e.span, SPAN_CHARS),
                "left": e.left,
                "right": e.right,
                "note": e.note,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The shape of a span (digits → 9, ASCII letters → a / A), truncated: groups look-alikes.
fn shape(s: &str) -> String {
    s.chars()
        .take(SPAN_CHARS)
        .map(|c| match c {
            '0'..='9' => '9',
            'a'..='z' => 'a',
            'A'..='Z' => 'A',
            c => c,
        })
        .collect()
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    } else {
        s.to_string()
    }
}

/// Control characters escaped, for one-line output.
fn one_line(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Everything measured (except throughput).
#[derive(Debug, Default)]
struct Eval {
    records: usize,
    by_mode: BTreeMap<Mode, BTreeMap<&'static str, Counts>>,
    /// Predictions not counted because they overlap an ignored gold span, per matching.
    ignored_pred: BTreeMap<Mode, usize>,
    ignored_gold: BTreeMap<String, usize>,
    /// Predictions of types outside [`TYPES`].
    other_pred: BTreeMap<String, usize>,
    pii_free: usize,
    pii_free_flagged: usize,
    pii_free_by_type: BTreeMap<String, usize>,
    missed: ErrorList,
    spurious: ErrorList,
    boundary: ErrorList,
}

impl Eval {
    fn build(records: &[Record], preds: &[Vec<Span>]) -> Eval {
        let mut e = Eval {
            records: records.len(),
            ..Eval::default()
        };
        for mode in [Mode::Strict, Mode::Overlap] {
            e.by_mode.insert(
                mode,
                TYPES.iter().map(|&t| (t, Counts::default())).collect(),
            );
            e.ignored_pred.insert(mode, 0);
        }
        let mut seq = 0usize;
        for (r, pred) in records.iter().zip(preds) {
            for g in &r.gold {
                if !TYPES.contains(&g.ty.as_str()) {
                    *e.ignored_gold.entry(g.ty.clone()).or_default() += 1;
                }
            }
            for p in pred {
                if !TYPES.contains(&p.ty.as_str()) {
                    *e.other_pred.entry(p.ty.clone()).or_default() += 1;
                }
            }
            if r.gold.is_empty() {
                e.pii_free += 1;
                if !pred.is_empty() {
                    e.pii_free_flagged += 1;
                }
                for p in pred {
                    *e.pii_free_by_type.entry(p.ty.clone()).or_default() += 1;
                }
            }
            let mut fates_by_mode = BTreeMap::new();
            for mode in [Mode::Strict, Mode::Overlap] {
                let (fates, matched) = match_record(&r.gold, pred, mode);
                if let Some(counts) = e.by_mode.get_mut(&mode) {
                    for (g, m) in r.gold.iter().zip(&matched) {
                        if let (Some(m), Some(c)) = (m, counts.get_mut(g.ty.as_str())) {
                            c.gold += 1;
                            c.tp += usize::from(*m);
                        }
                    }
                    for (p, f) in pred.iter().zip(&fates) {
                        match (f, counts.get_mut(p.ty.as_str())) {
                            (Some(PredFate::Ignored), _) => {
                                *e.ignored_pred.entry(mode).or_default() += 1;
                            }
                            (Some(_), Some(c)) => c.pred += 1,
                            _ => {}
                        }
                    }
                }
                fates_by_mode.insert(mode, (fates, matched));
            }
            // Error examples: misses and false positives in the overlap matching; boundary
            // mismatches are the strict-only errors.
            let (Some((_, s_matched)), Some((o_fates, o_matched))) = (
                fates_by_mode.get(&Mode::Strict),
                fates_by_mode.get(&Mode::Overlap),
            ) else {
                continue;
            };
            for ((g, om), sm) in r.gold.iter().zip(o_matched).zip(s_matched) {
                seq += 1;
                match (om, sm) {
                    (Some(false), _) => {
                        let found: Vec<&str> = pred
                            .iter()
                            .filter(|p| p.overlaps(g))
                            .map(|p| p.ty.as_str())
                            .collect();
                        let note = if found.is_empty() {
                            String::new()
                        } else {
                            format!("found as {}", found.join("+"))
                        };
                        e.missed.add(&r.text, g.start, g.end, &g.ty, note, seq);
                    }
                    (Some(true), Some(false)) => {
                        let got: Vec<String> = pred
                            .iter()
                            .filter(|p| p.ty == g.ty && p.overlaps(g))
                            .map(|p| {
                                let t: String =
                                    r.text.chars().skip(p.start).take(p.end - p.start).collect();
                                format!("predicted {:?}", truncate(&t, SPAN_CHARS))
                            })
                            .collect();
                        e.boundary
                            .add(&r.text, g.start, g.end, &g.ty, got.join(", "), seq);
                    }
                    _ => {}
                }
            }
            for (p, of) in pred.iter().zip(o_fates) {
                seq += 1;
                if *of == Some(PredFate::Fp) {
                    let there: Vec<&str> = r
                        .gold
                        .iter()
                        .filter(|g| g.overlaps(p))
                        .map(|g| g.ty.as_str())
                        .collect();
                    let note = if there.is_empty() {
                        String::new()
                    } else {
                        format!("gold there: {}", there.join("+"))
                    };
                    e.spurious.add(&r.text, p.start, p.end, &p.ty, note, seq);
                }
            }
        }
        e
    }

    fn counts(&self, mode: Mode, ty: &str) -> Counts {
        self.by_mode
            .get(&mode)
            .and_then(|m| m.get(ty))
            .copied()
            .unwrap_or_default()
    }

    fn micro(&self, mode: Mode) -> Counts {
        let mut c = Counts::default();
        for ty in TYPES {
            c.add(&self.counts(mode, ty));
        }
        c
    }

    fn ignored_gold_total(&self) -> usize {
        self.ignored_gold.values().sum()
    }

    fn to_json(&self, scanner: &str, file: &str, split: &str, speed: &Speed) -> Value {
        let mode_json = |mode: Mode| {
            let mut by_type = Map::new();
            for ty in TYPES {
                let c = self.counts(mode, ty);
                let (r, p) = target(ty);
                let mut v = c.json();
                if let Value::Object(m) = &mut v {
                    m.insert(
                        "target".to_string(),
                        json!({"recall": r, "precision": p, "met": meets(&c, ty)}),
                    );
                }
                by_type.insert(ty.to_string(), v);
            }
            json!({
                "by_type": by_type,
                "micro": self.micro(mode).json(),
                "targets_met": TYPES.iter().filter(|t| meets(&self.counts(mode, t), t)).count(),
                "ignored_predictions": self.ignored_pred.get(&mode).copied().unwrap_or(0),
            })
        };
        json!({
            "scanner": scanner,
            "file": file,
            "split": split,
            "records": self.records,
            "types": TYPES,
            "strict": mode_json(Mode::Strict),
            "overlap": mode_json(Mode::Overlap),
            "ignored_gold": {
                "total": self.ignored_gold_total(),
                "by_type": self.ignored_gold,
            },
            "other_predicted_types": self.other_pred,
            "pii_free": {
                "records": self.pii_free,
                "with_detection": self.pii_free_flagged,
                "rate": num(ratio(self.pii_free_flagged, self.pii_free)),
                "false_detections_by_type": self.pii_free_by_type,
            },
            "throughput": speed.json(),
        })
    }

    fn print(&self, scanner: &str, file: &str, split: &str, speed: &Speed) {
        println!("== eval-pii: {scanner} ==");
        let gold: usize = self.micro(Mode::Strict).gold;
        println!(
            "{file} ({split} split): {} records ({} PII-free), {gold} gold spans of the {} evaluated types",
            self.records,
            self.pii_free,
            TYPES.len()
        );
        for (mode, title) in [
            (Mode::Strict, "strict: same type, exact span"),
            (Mode::Overlap, "overlap: same type, spans overlap"),
        ] {
            println!();
            println!("-- {title} --");
            println!(
                "{:<12} {:>6} {:>6} {:>6} {:>9} {:>8} {:>8}   target (recall / precision)",
                "type", "gold", "pred", "TP", "precision", "recall", "F1"
            );
            for ty in TYPES {
                let c = self.counts(mode, ty);
                let (r, p) = target(ty);
                println!(
                    "{:<12} {:>6} {:>6} {:>6} {:>9} {:>8} {:>8}   ≥{:.0}% / ≥{:.0}%: {}",
                    ty,
                    c.gold,
                    c.pred,
                    c.tp,
                    pct(c.precision()),
                    pct(c.recall()),
                    pct(c.f1()),
                    100.0 * r,
                    100.0 * p,
                    if meets(&c, ty) { "met" } else { "NOT met" }
                );
            }
            let m = self.micro(mode);
            println!(
                "{:<12} {:>6} {:>6} {:>6} {:>9} {:>8} {:>8}   targets met by {}/{} types",
                "micro",
                m.gold,
                m.pred,
                m.tp,
                pct(m.precision()),
                pct(m.recall()),
                pct(m.f1()),
                TYPES
                    .iter()
                    .filter(|t| meets(&self.counts(mode, t), t))
                    .count(),
                TYPES.len()
            );
        }
        println!();
        println!(
            "ignored (need NER, not detected in the proxy): {} gold spans ({}); predictions overlapping them count neither TP nor FP: {} strict, {} overlap",
            self.ignored_gold_total(),
            list(&self.ignored_gold),
            self.ignored_pred.get(&Mode::Strict).copied().unwrap_or(0),
            self.ignored_pred.get(&Mode::Overlap).copied().unwrap_or(0),
        );
        if !self.other_pred.is_empty() {
            println!(
                "predictions of types not evaluated (not counted): {}",
                list(&self.other_pred)
            );
        }
        println!(
            "PII-free records: {}; with ≥1 detection: {} ({}); false detections by type: {}",
            self.pii_free,
            self.pii_free_flagged,
            pct(ratio(self.pii_free_flagged, self.pii_free)).trim(),
            if self.pii_free_by_type.is_empty() {
                "none".to_string()
            } else {
                list(&self.pii_free_by_type)
            }
        );
        println!();
        println!(
            "throughput: {:.1} MB/s median of {} rounds (min {:.1}, max {:.1}; {} bytes per round, {:.2} s in all; scan only, single thread)",
            speed.median(),
            speed.rounds.len(),
            speed.min(),
            speed.max(),
            speed.bytes,
            speed.total.as_secs_f64(),
        );
        if cfg!(debug_assertions) {
            println!("(debug build: build with --release for meaningful throughput)");
        }
    }

    fn print_errors(&self) {
        for (list, title) in [
            (
                &self.missed,
                "false negatives (no prediction of the type overlaps the gold span)",
            ),
            (
                &self.spurious,
                "false positives (no gold span of the type overlaps; ignored types excluded)",
            ),
            (
                &self.boundary,
                "boundary mismatches (same type, overlapping, different span: strict-only errors)",
            ),
        ] {
            println!();
            println!(
                "-- {title}: {} in {} groups by type and shape; the {} largest --",
                list.total,
                list.groups.len(),
                TOP_ERRORS.min(list.groups.len())
            );
            for e in list.top() {
                let note = if e.note.is_empty() {
                    String::new()
                } else {
                    format!("   [{}]", one_line(&e.note))
                };
                println!(
                    "{:>4}× {:<12} {}⟦{}⟧{}{}",
                    e.count,
                    e.ty,
                    one_line(&e.left),
                    one_line(&truncate(&e.span, SPAN_CHARS)),
                    one_line(&e.right),
                    note
                );
            }
        }
    }

    fn errors_json(&self) -> Value {
        json!({
            "false_negatives": self.missed.json(),
            "false_positives": self.spurious.json(),
            "boundary": self.boundary.json(),
        })
    }
}

fn list(m: &BTreeMap<String, usize>) -> String {
    let mut v: Vec<(&String, &usize)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Scan speed: MB/s of each round over every text.
#[derive(Debug)]
struct Speed {
    bytes: usize,
    rounds: Vec<f64>,
    total: Duration,
}

impl Speed {
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.rounds.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v.get(n / 2).copied().unwrap_or(f64::NAN),
            n => match (v.get(n / 2 - 1), v.get(n / 2)) {
                (Some(a), Some(b)) => (a + b) / 2.0,
                _ => f64::NAN,
            },
        }
    }
    fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }
    fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
    fn json(&self) -> Value {
        json!({
            "bytes_per_round": self.bytes,
            "rounds": self.rounds.len(),
            "seconds": num(self.total.as_secs_f64()),
            "mb_per_s_median": num(self.median()),
            "mb_per_s_min": num(self.min()),
            "mb_per_s_max": num(self.max()),
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        })
    }
}

/// Time `scan` over every text until [`MIN_TIME`] and [`MIN_ROUNDS`]; every round must find
/// the same number of hits.
fn throughput(engine: &Engine, records: &[Record]) -> anyhow::Result<Speed> {
    let bytes: usize = records.iter().map(|r| r.text.len()).sum();
    let mut scratch = engine.scratch();
    let mut hits = Vec::new();
    let mut rounds = Vec::new();
    let mut total = Duration::ZERO;
    let mut expected: Option<usize> = None;
    while rounds.len() < MIN_ROUNDS || total < MIN_TIME {
        let mut found = 0usize;
        let t = Instant::now();
        for r in records {
            engine.scan(&mut scratch, &r.text, true, &mut hits);
            found += hits.len();
        }
        let dt = t.elapsed();
        if *expected.get_or_insert(found) != found {
            bail!(
                "the engine found a different number of hits in another round over the same texts"
            );
        }
        total += dt;
        rounds.push(bytes as f64 / 1e6 / dt.as_secs_f64().max(1e-9));
    }
    Ok(Speed {
        bytes,
        rounds,
        total,
    })
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// A finite number, or null.
fn num(x: f64) -> Value {
    serde_json::Number::from_f64((x * 1e6).round() / 1e6)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn pct(x: f64) -> String {
    if x.is_nan() {
        "-".to_string()
    } else {
        format!("{:.2}%", 100.0 * x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn span(start: usize, end: usize, ty: &str) -> Span {
        Span {
            start,
            end,
            ty: ty.to_string(),
        }
    }

    #[test]
    fn parse_args_cases() {
        // (name, arguments, ok)
        let cases: &[(&str, &[&str], bool)] = &[
            ("defaults", &[], true),
            ("subcommand name skipped", &["eval-pii", "--json"], true),
            ("train split", &["--split", "train"], true),
            ("bad split", &["--split", "dev"], false),
            ("errors", &["--errors"], true),
            ("missing value", &["--config"], false),
            ("unknown flag", &["--fast"], false),
        ];
        for (name, list, ok) in cases {
            assert_eq!(parse_args(&args(list)).is_ok(), *ok, "{name}");
        }
        let o = parse_args(&args(&["--split", "train", "--errors"])).unwrap();
        assert_eq!(o.split, "train");
        assert!(o.errors && !o.json);
        assert_eq!(parse_args(&[]).unwrap().split, "test");
    }

    #[test]
    fn char_counter_counts_scalar_values() {
        let text = "😀 é 中x";
        let mut c = CharCounter::new(text);
        for (ci, (bi, _)) in text.char_indices().enumerate() {
            assert_eq!(c.at(bi), ci, "byte {bi}");
        }
        assert_eq!(c.at(text.len()), text.chars().count());
        // Going back restarts from the beginning.
        assert_eq!(c.at(4), 1);
        assert_eq!(c.at(usize::MAX), text.chars().count());
    }

    #[test]
    fn detect_reports_char_offsets() {
        let engine = load_engine(None).unwrap();
        let mut scratch = engine.scratch();
        let text = "😀 中文 write to jane.doe@example.com now";
        let spans = detect(&engine, &mut scratch, text, &mut Vec::new());
        let b = text.find("jane").unwrap();
        let start = text[..b].chars().count();
        let end = start + "jane.doe@example.com".chars().count();
        assert_ne!(
            start, b,
            "the test needs multi-byte chars before the address"
        );
        assert_eq!(spans, vec![span(start, end, "EMAIL")]);
    }

    #[test]
    fn matching_strict_overlap_and_ignored() {
        let gold = vec![
            span(0, 10, "EMAIL"),
            span(20, 30, "PERSON"),
            span(40, 50, "PHONE"),
            span(60, 70, "IBAN"),
        ];
        let pred = vec![
            span(0, 10, "EMAIL"),        // exact
            span(22, 28, "PHONE"),       // on an ignored span
            span(41, 50, "PHONE"),       // boundary
            span(60, 70, "CREDIT_CARD"), // wrong type
            span(80, 85, "MY_ID"),       // not evaluated
        ];
        let (fates, matched) = match_record(&gold, &pred, Mode::Strict);
        use PredFate::*;
        assert_eq!(
            fates,
            vec![Some(Tp), Some(Ignored), Some(Fp), Some(Fp), None]
        );
        assert_eq!(matched, vec![Some(true), None, Some(false), Some(false)]);
        let (fates, matched) = match_record(&gold, &pred, Mode::Overlap);
        assert_eq!(
            fates,
            vec![Some(Tp), Some(Ignored), Some(Tp), Some(Fp), None]
        );
        assert_eq!(matched, vec![Some(true), None, Some(true), Some(false)]);
        // One-to-one: two predictions on one gold span give one TP and one FP.
        let (fates, _) = match_record(
            &[span(0, 20, "PHONE")],
            &[span(0, 8, "PHONE"), span(10, 20, "PHONE")],
            Mode::Overlap,
        );
        assert_eq!(fates, vec![Some(Tp), Some(Fp)]);
    }

    #[test]
    fn eval_counts_pii_free_and_micro() {
        let records = vec![
            Record {
                text: "a".repeat(100),
                gold: vec![span(0, 10, "EMAIL"), span(20, 30, "PERSON")],
            },
            Record {
                text: "b".repeat(100),
                gold: vec![],
            },
            Record {
                text: "c".repeat(100),
                gold: vec![],
            },
        ];
        let preds = vec![
            vec![span(0, 9, "EMAIL"), span(20, 25, "PHONE")],
            vec![span(1, 5, "PHONE"), span(6, 9, "API_KEY")],
            vec![],
        ];
        let e = Eval::build(&records, &preds);
        let strict = e.counts(Mode::Strict, "EMAIL");
        assert_eq!((strict.gold, strict.pred, strict.tp), (1, 1, 0));
        let overlap = e.counts(Mode::Overlap, "EMAIL");
        assert_eq!((overlap.gold, overlap.pred, overlap.tp), (1, 1, 1));
        assert_eq!(e.counts(Mode::Overlap, "PHONE").pred, 1);
        assert_eq!(e.ignored_gold_total(), 1);
        assert_eq!(e.ignored_pred.get(&Mode::Overlap), Some(&1));
        assert_eq!((e.pii_free, e.pii_free_flagged), (2, 1));
        assert_eq!(e.pii_free_by_type.get("PHONE"), Some(&1));
        let m = e.micro(Mode::Overlap);
        assert_eq!((m.gold, m.pred, m.tp), (1, 3, 1));
        assert_eq!(m.recall(), 1.0);
        assert!((m.f1() - 0.5).abs() < 1e-12);
        assert_eq!(
            (e.missed.total, e.spurious.total, e.boundary.total),
            (0, 2, 1)
        );
        assert!(meets(
            &Counts {
                gold: 100,
                pred: 100,
                tp: 99
            },
            "IBAN"
        ));
        assert!(!meets(
            &Counts {
                gold: 100,
                pred: 100,
                tp: 98
            },
            "IBAN"
        ));
        assert!(meets(
            &Counts {
                gold: 100,
                pred: 100,
                tp: 95
            },
            "EMAIL"
        ));
        assert!(!meets(&Counts::default(), "EMAIL"));
    }

    #[test]
    fn load_records_checks_spans() {
        let dir = std::env::temp_dir().join(format!("guardctl-eval-pii-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("ok.jsonl");
        std::fs::write(
            &f,
            "{\"text\":\"😀 a@b.co\",\"spans\":[{\"start\":2,\"end\":8,\"type\":\"EMAIL\"}],\"source\":\"x\"}\n\n",
        )
        .unwrap();
        let r = load_records(&f).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].gold, vec![span(2, 8, "EMAIL")]);
        // End 9 is past the text in chars (though not in bytes).
        std::fs::write(
            &f,
            "{\"text\":\"😀 a@b.co\",\"spans\":[{\"start\":2,\"end\":9,\"type\":\"EMAIL\"}]}\n",
        )
        .unwrap();
        let err = load_records(&f).unwrap_err().to_string();
        assert!(err.contains("not inside the text"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
