//! `guardctl eval-injection`: the quality and speed of prompt-guard's full engine on the labelled
//! injection data.
//!
//! ```text
//! guardctl eval-injection [--data DIR] [--split test|train] [--config FILE]
//!                         [--indirect-as user|document] [--model-only] [--by-source] [--json]
//! ```
//!
//! Every record of `<data>/injection/<split>.jsonl` (default `test`) is scanned by the engine of
//! the shipped default policy (or of `--config FILE`'s `default` policy) as a user message;
//! `--indirect-as document` scans `indirect` records as a retrieved document instead. `flag` and
//! `block` both count as a detection; block-only numbers are reported too. Printed: precision,
//! recall, false-positive rate and balanced accuracy ((recall + benign accuracy) / 2); recall by
//! kind (direct, indirect, jailbreak); FPR by kind (benign, benign_hard) and for the WildGuard
//! benign source alone; recall and FPR by language; and the engine's single-thread throughput
//! (total bytes / wall time of a second pass over all texts, after a warm-up pass) with the
//! p50 / p99 scan time per text. `--model-only` replaces the engine with the embedded model
//! alone on the Base view (flag at 0.5, block at 0.8, the calibration anchors). `--json` prints
//! the numbers as one JSON object. Numbers are printed, never asserted.

use crate::train::{data_dir, load_records, Record};
use anyhow::{anyhow, bail, Context};
use guard_core::segment::Source;
use prompt_guard::engine::{Engine, Verdict};
use prompt_guard::model::Model;
use prompt_guard::normalize::Normalizer;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: guardctl eval-injection [--data DIR] [--split test|train] [--config FILE] [--indirect-as user|document] [--model-only] [--by-source] [--json]";

/// Languages shown in the text table (the JSON has all of them).
const TOP_LANGS: usize = 12;
/// Model-only thresholds: the calibration anchors of `train-injection`.
const MODEL_FLAG_AT: f32 = 0.5;
const MODEL_BLOCK_AT: f32 = 0.8;

struct Options {
    data: Option<String>,
    split: String,
    config: Option<String>,
    indirect_as_document: bool,
    model_only: bool,
    by_source: bool,
    json: bool,
}

/// Run the subcommand. `args` are the arguments after `eval-injection` (a leading
/// `eval-injection` is skipped too).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let opts = parse_args(args)?;
    let dir = data_dir(opts.data.as_deref())?;
    let path = dir.join("injection").join(format!("{}.jsonl", opts.split));
    let records = load_records(&path)?;
    if records.is_empty() {
        bail!("{} holds no records", path.display());
    }
    let scanner = Scanner::new(&opts)?;
    let sources: Vec<Source> = records
        .iter()
        .map(|r| {
            if opts.indirect_as_document && r.kind == "indirect" {
                Source::Document
            } else {
                Source::User
            }
        })
        .collect();

    // Warm-up pass (its verdicts are the ones reported), then a timed pass.
    let mut state = scanner.state();
    let verdicts: Vec<Verdict> = records
        .iter()
        .zip(&sources)
        .map(|(r, &s)| scanner.scan(&mut state, r, s))
        .collect();
    let mut times: Vec<Duration> = Vec::with_capacity(records.len());
    let mut agree = true;
    let started = Instant::now();
    for ((r, &s), &v) in records.iter().zip(&sources).zip(&verdicts) {
        let t = Instant::now();
        let again = scanner.scan(&mut state, r, s);
        times.push(t.elapsed());
        agree &= again == v;
    }
    let wall = started.elapsed();
    if !agree {
        bail!("the engine gave a different verdict on the second pass over the same text");
    }
    let bytes: usize = records.iter().map(|r| r.raw.len()).sum();
    let report = Report::build(
        &opts,
        scanner.name(&opts),
        &path.display().to_string(),
        &records,
        &verdicts,
        bytes,
        wall,
        &mut times,
    );
    if opts.json {
        println!("{}", report.to_json());
    } else {
        report.print(&records, &verdicts, opts.by_source);
    }
    Ok(())
}

fn parse_args(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        data: None,
        split: "test".to_string(),
        config: None,
        indirect_as_document: false,
        model_only: false,
        by_source: false,
        json: false,
    };
    let mut it = args.iter().skip_while(|a| a.as_str() == "eval-injection");
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
            "--indirect-as" => {
                o.indirect_as_document = match value()?.as_str() {
                    "document" => true,
                    "user" => false,
                    v => bail!("--indirect-as must be user or document, not {v:?}\n{USAGE}"),
                }
            }
            "--model-only" => o.model_only = true,
            "--by-source" => o.by_source = true,
            "--json" => o.json = true,
            _ => bail!("unknown argument {a:?}\n{USAGE}"),
        }
    }
    if o.model_only && o.config.is_some() {
        bail!("--model-only and --config cannot be used together\n{USAGE}");
    }
    Ok(o)
}

/// The engine of a policy, or the model alone.
enum Scanner {
    Engine(Box<Engine>),
    Model(&'static Model),
}

enum State {
    Engine(Box<prompt_guard::engine::Scratch>),
    Model(Box<(Normalizer, String, prompt_guard::model::ModelScratch)>),
}

impl Scanner {
    fn new(opts: &Options) -> anyhow::Result<Scanner> {
        if opts.model_only {
            return Model::embedded()
                .map(Scanner::Model)
                .ok_or_else(|| anyhow!("the embedded model failed to load"));
        }
        let engine = match &opts.config {
            Some(file) => {
                let bytes = std::fs::read(file).with_context(|| format!("cannot read {file}"))?;
                Engine::from_config_file(&bytes).map_err(|e| anyhow!("{file}: {e}"))?
            }
            None => Engine::default_policy()
                .map_err(|e| anyhow!("the default policy does not compile: {e}"))?,
        };
        Ok(Scanner::Engine(Box::new(engine)))
    }

    fn state(&self) -> State {
        match self {
            Scanner::Engine(e) => State::Engine(Box::new(e.scratch())),
            Scanner::Model(m) => {
                State::Model(Box::new((Normalizer::new(), String::new(), m.scratch())))
            }
        }
    }

    fn scan(&self, state: &mut State, r: &Record, source: Source) -> Verdict {
        match (self, state) {
            (Scanner::Engine(e), State::Engine(s)) => e.scan(s, &r.raw, source).verdict,
            (Scanner::Model(m), State::Model(st)) => {
                let (norm, base, scratch) = &mut **st;
                norm.base(&r.raw, base);
                let p = m.score_with(base, scratch);
                if p >= MODEL_BLOCK_AT {
                    Verdict::Block
                } else if p >= MODEL_FLAG_AT {
                    Verdict::Flag
                } else {
                    Verdict::Allow
                }
            }
            _ => Verdict::Allow,
        }
    }

    fn name(&self, opts: &Options) -> String {
        match (self, &opts.config) {
            (Scanner::Model(_), _) => "embedded model alone".to_string(),
            (Scanner::Engine(_), Some(f)) => format!("engine, policy {f}"),
            (Scanner::Engine(_), None) => "engine, shipped default policy".to_string(),
        }
    }
}

/// Detections of one group of records.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    pos: usize,
    neg: usize,
    tp: usize,
    fp: usize,
    tp_block: usize,
    fp_block: usize,
}

impl Counts {
    fn add(&mut self, r: &Record, v: Verdict) {
        let hit = v != Verdict::Allow;
        let block = v == Verdict::Block;
        if r.label == 1 {
            self.pos += 1;
            self.tp += usize::from(hit);
            self.tp_block += usize::from(block);
        } else {
            self.neg += 1;
            self.fp += usize::from(hit);
            self.fp_block += usize::from(block);
        }
    }
    fn of<'a>(items: impl Iterator<Item = (&'a Record, Verdict)>) -> Counts {
        let mut c = Counts::default();
        for (r, v) in items {
            c.add(r, v);
        }
        c
    }
    fn recall(&self, block: bool) -> f64 {
        ratio(if block { self.tp_block } else { self.tp }, self.pos)
    }
    fn fpr(&self, block: bool) -> f64 {
        ratio(if block { self.fp_block } else { self.fp }, self.neg)
    }
    fn precision(&self, block: bool) -> f64 {
        let (tp, fp) = if block {
            (self.tp_block, self.fp_block)
        } else {
            (self.tp, self.fp)
        };
        ratio(tp, tp + fp)
    }
    fn balanced_accuracy(&self, block: bool) -> f64 {
        (self.recall(block) + (1.0 - self.fpr(block))) / 2.0
    }
    fn summary_json(&self, block: bool) -> Value {
        let (tp, fp) = if block {
            (self.tp_block, self.fp_block)
        } else {
            (self.tp, self.fp)
        };
        json!({
            "precision": num(self.precision(block)),
            "recall": num(self.recall(block)),
            "fpr": num(self.fpr(block)),
            "balanced_accuracy": num(self.balanced_accuracy(block)),
            "tp": tp,
            "fp": fp,
            "positives": self.pos,
            "negatives": self.neg,
        })
    }
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
        "     -".to_string()
    } else {
        format!("{:5.1}%", 100.0 * x)
    }
}

struct Report {
    scanner: String,
    file: String,
    split: String,
    indirect_as: &'static str,
    all: Counts,
    kinds: BTreeMap<String, Counts>,
    wildguard: Counts,
    langs: Vec<(String, Counts)>,
    bytes: usize,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    fn build(
        opts: &Options,
        scanner: String,
        file: &str,
        records: &[Record],
        verdicts: &[Verdict],
        bytes: usize,
        wall: Duration,
        times: &mut [Duration],
    ) -> Report {
        let pairs = || records.iter().zip(verdicts.iter().copied());
        let mut kinds: BTreeMap<String, Counts> = BTreeMap::new();
        let mut langs: BTreeMap<String, Counts> = BTreeMap::new();
        for (r, v) in pairs() {
            kinds.entry(r.kind.clone()).or_default().add(r, v);
            langs.entry(r.lang.clone()).or_default().add(r, v);
        }
        let mut langs: Vec<(String, Counts)> = langs.into_iter().collect();
        langs.sort_by(|a, b| {
            (b.1.pos + b.1.neg)
                .cmp(&(a.1.pos + a.1.neg))
                .then(a.0.cmp(&b.0))
        });
        times.sort_unstable();
        let quantile = |q: f64| -> f64 {
            let n = times.len();
            if n == 0 {
                return f64::NAN;
            }
            let i = ((q * (n - 1) as f64).round() as usize).min(n - 1);
            times.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
        };
        Report {
            scanner,
            file: file.to_string(),
            split: opts.split.clone(),
            indirect_as: if opts.indirect_as_document {
                "document"
            } else {
                "user"
            },
            all: Counts::of(pairs()),
            kinds,
            wildguard: Counts::of(
                pairs().filter(|(r, _)| r.label == 0 && r.source.contains("wildguard")),
            ),
            langs,
            bytes,
            seconds: wall.as_secs_f64(),
            p50_us: quantile(0.5),
            p99_us: quantile(0.99),
            max_us: quantile(1.0),
        }
    }

    fn kind(&self, k: &str) -> Counts {
        self.kinds.get(k).copied().unwrap_or_default()
    }

    fn mb_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / 1e6 / self.seconds
        } else {
            f64::NAN
        }
    }

    fn to_json(&self) -> Value {
        let mut by_kind = Map::new();
        for k in ["direct", "indirect", "jailbreak"] {
            let c = self.kind(k);
            by_kind.insert(
                k.to_string(),
                json!({"records": c.pos, "recall": num(c.recall(false)), "block_recall": num(c.recall(true))}),
            );
        }
        for (k, c) in [
            ("benign", self.kind("benign")),
            ("benign_hard", self.kind("benign_hard")),
            ("wildguard", self.wildguard),
        ] {
            by_kind.insert(
                k.to_string(),
                json!({"records": c.neg, "fpr": num(c.fpr(false)), "block_fpr": num(c.fpr(true))}),
            );
        }
        let mut by_lang = Map::new();
        for (lang, c) in &self.langs {
            by_lang.insert(
                lang.clone(),
                json!({
                    "positives": c.pos,
                    "negatives": c.neg,
                    "recall": num(c.recall(false)),
                    "fpr": num(c.fpr(false)),
                    "block_recall": num(c.recall(true)),
                    "block_fpr": num(c.fpr(true)),
                }),
            );
        }
        json!({
            "scanner": self.scanner,
            "file": self.file,
            "split": self.split,
            "indirect_as": self.indirect_as,
            "records": self.all.pos + self.all.neg,
            "detect": self.all.summary_json(false),
            "block": self.all.summary_json(true),
            "by_kind": by_kind,
            "by_lang": by_lang,
            "throughput": {
                "bytes": self.bytes,
                "seconds": num(self.seconds),
                "mb_per_s": num(self.mb_per_s()),
                "p50_us": num(self.p50_us),
                "p99_us": num(self.p99_us),
                "max_us": num(self.max_us),
            },
        })
    }

    fn print(&self, records: &[Record], verdicts: &[Verdict], by_source: bool) {
        println!("== eval-injection: {} ==", self.scanner);
        println!(
            "{} ({} split): {} records, {} attacks, {} benign; indirect records scanned as {}",
            self.file,
            self.split,
            self.all.pos + self.all.neg,
            self.all.pos,
            self.all.neg,
            self.indirect_as
        );
        println!();
        println!(
            "{:<16} {:>9} {:>7} {:>7} {:>9}",
            "counted as hit", "precision", "recall", "FPR", "bal. acc"
        );
        for (name, block) in [("flag or block", false), ("block only", true)] {
            println!(
                "{:<16} {:>9} {:>7} {:>7} {:>9}",
                name,
                pct(self.all.precision(block)),
                pct(self.all.recall(block)),
                pct(self.all.fpr(block)),
                pct(self.all.balanced_accuracy(block)),
            );
        }
        println!();
        println!(
            "{:<12} {:>7} {:>9} {:>9}",
            "kind", "records", "detected", "blocked"
        );
        for k in ["direct", "indirect", "jailbreak"] {
            let c = self.kind(k);
            println!(
                "{:<12} {:>7} {:>9} {:>9}   (recall)",
                k,
                c.pos,
                pct(c.recall(false)),
                pct(c.recall(true))
            );
        }
        for (k, c) in [
            ("benign", self.kind("benign")),
            ("benign_hard", self.kind("benign_hard")),
            ("wildguard", self.wildguard),
        ] {
            println!(
                "{:<12} {:>7} {:>9} {:>9}   (false positives)",
                k,
                c.neg,
                pct(c.fpr(false)),
                pct(c.fpr(true))
            );
        }
        println!();
        println!(
            "{:<5} {:>6} {:>7} {:>8} {:>6} {:>7} {:>8}",
            "lang", "attack", "recall", "r block", "benign", "FPR", "FPR blk"
        );
        for (lang, c) in self.langs.iter().take(TOP_LANGS) {
            println!(
                "{:<5} {:>6} {:>7} {:>8} {:>6} {:>7} {:>8}",
                lang,
                c.pos,
                pct(c.recall(false)),
                pct(c.recall(true)),
                c.neg,
                pct(c.fpr(false)),
                pct(c.fpr(true))
            );
        }
        if self.langs.len() > TOP_LANGS {
            println!(
                "({} more languages in --json)",
                self.langs.len() - TOP_LANGS
            );
        }
        if by_source {
            let mut sources: BTreeMap<&str, Counts> = BTreeMap::new();
            for (r, &v) in records.iter().zip(verdicts) {
                sources.entry(r.source.as_str()).or_default().add(r, v);
            }
            println!();
            println!("{:>6} {:>9} {:>9}  source (detected / blocked: recall for attacks, FPR for benign)", "n", "detected", "blocked");
            for (src, c) in &sources {
                let (n, d, b) = if c.pos > 0 && c.neg == 0 {
                    (c.pos, c.recall(false), c.recall(true))
                } else {
                    (
                        c.pos + c.neg,
                        ratio(c.tp + c.fp, c.pos + c.neg),
                        ratio(c.tp_block + c.fp_block, c.pos + c.neg),
                    )
                };
                println!("{:>6} {:>9} {:>9}  {}", n, pct(d), pct(b), src);
            }
        }
        println!();
        println!(
            "throughput: {:.1} MB/s ({} bytes in {:.3} s, single thread, after a warm-up pass); per text p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            self.mb_per_s(),
            self.bytes,
            self.seconds,
            self.p50_us,
            self.p99_us,
            self.max_us
        );
        if cfg!(debug_assertions) {
            println!("(debug build: build with --release for meaningful throughput)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parse_args_cases() {
        // (name, arguments, ok)
        let cases: &[(&str, &[&str], bool)] = &[
            ("defaults", &[], true),
            (
                "subcommand name skipped",
                &["eval-injection", "--json"],
                true,
            ),
            ("train split", &["--split", "train"], true),
            ("bad split", &["--split", "dev"], false),
            ("indirect as document", &["--indirect-as", "document"], true),
            ("bad indirect", &["--indirect-as", "tool"], false),
            ("missing value", &["--data"], false),
            ("unknown flag", &["--fast"], false),
            (
                "model-only with config",
                &["--model-only", "--config", "x.json"],
                false,
            ),
        ];
        for (name, list, ok) in cases {
            assert_eq!(parse_args(&args(list)).is_ok(), *ok, "{name}");
        }
        let o = parse_args(&args(&["--indirect-as", "document", "--split", "train"])).unwrap();
        assert!(o.indirect_as_document);
        assert_eq!(o.split, "train");
    }

    #[test]
    fn counts_and_rates() {
        let r = |label: u8| Record {
            raw: String::new(),
            text: String::new(),
            label,
            kind: String::new(),
            lang: String::new(),
            source: String::new(),
            ship_ok: true,
        };
        let (a, b) = (r(1), r(0));
        let c = Counts::of(
            [
                (&a, Verdict::Block),
                (&a, Verdict::Flag),
                (&a, Verdict::Allow),
                (&a, Verdict::Allow),
                (&b, Verdict::Flag),
                (&b, Verdict::Allow),
                (&b, Verdict::Allow),
                (&b, Verdict::Allow),
            ]
            .into_iter(),
        );
        assert_eq!(c.recall(false), 0.5);
        assert_eq!(c.recall(true), 0.25);
        assert_eq!(c.fpr(false), 0.25);
        assert_eq!(c.fpr(true), 0.0);
        assert_eq!(c.precision(false), 2.0 / 3.0);
        assert_eq!(c.balanced_accuracy(false), 0.625);
        assert!(Counts::default().recall(false).is_nan());
        assert_eq!(num(f64::NAN), Value::Null);
    }
}
