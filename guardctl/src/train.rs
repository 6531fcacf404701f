//! `guardctl train-injection`: trains prompt-guard's statistical model, reproducibly.
//!
//! ```text
//! guardctl train-injection [--data DIR] [--out FILE] [--no-cv] [--holdout]
//! ```
//!
//! Reads `<data>/injection/train.jsonl` (never `test.jsonl`), keeps only `ship_ok: true` records,
//! normalises each text with prompt-guard's own normaliser (the Base view the engine scores),
//! hashes it into features with the runtime's own extractor, fits an L2-regularised,
//! class-weighted logistic regression with a deterministic full-batch L-BFGS (single-threaded
//! arithmetic in a fixed order, so the same input gives a byte-identical file), quantises the
//! weights to i8 and writes the weights file (`filters/prompt-guard/model/injection.bin` unless
//! `--out` says otherwise). It then prints a 5-fold cross-validation on the same records, scored
//! through the runtime `Model` (quantised), with the thresholds that give about 1% and 3%
//! false positives on `benign_hard`, so the engine's thresholds can be chosen without the test
//! split. `--holdout` also scores the train split's non-`ship_ok` records (never trained on) as
//! a second, out-of-distribution check. `--no-cv` skips the cross-validation.

use anyhow::{anyhow, bail, Context};
use prompt_guard::model::{FeatureParams, Model, ModelScratch};
use prompt_guard::normalize::Normalizer;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

const USAGE: &str =
    "usage: guardctl train-injection [--data DIR] [--out FILE] [--no-cv] [--holdout]";

/// L2 penalty on the weights (the loss is the weighted mean log-loss).
const LAMBDA: f64 = 1e-4;
const MAX_ITER: usize = 400;
const HISTORY: usize = 10;
const FOLDS: usize = 5;

/// Run the subcommand. `args` are the arguments after `train-injection` (a leading
/// `train-injection` is skipped too).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut data: Option<String> = None;
    let mut out: Option<String> = None;
    let mut cv = true;
    let mut holdout = false;
    let mut it = args.iter().skip_while(|a| a.as_str() == "train-injection");
    while let Some(a) = it.next() {
        match a.as_str() {
            "--data" => data = Some(it.next().ok_or_else(|| anyhow!("{USAGE}"))?.clone()),
            "--out" => out = Some(it.next().ok_or_else(|| anyhow!("{USAGE}"))?.clone()),
            "--no-cv" => cv = false,
            "--holdout" => holdout = true,
            _ => bail!("unknown argument {a:?}\n{USAGE}"),
        }
    }
    let dir = data_dir(data.as_deref())?;
    let train_path = dir.join("injection").join("train.jsonl");
    let out_path = out.map(PathBuf::from).unwrap_or_else(default_model_path);

    let started = Instant::now();
    let params = FeatureParams::default();
    let all = load_records(&train_path)?;
    let (ship, unshipped): (Vec<Record>, Vec<Record>) = all.into_iter().partition(|r| r.ship_ok);
    if ship.is_empty() {
        bail!("{} holds no ship_ok records", train_path.display());
    }
    let problem = Problem::build(&ship, &params);
    print_data_stats(&train_path, &ship, unshipped.len(), &problem);

    let (final_fit, folds) = std::thread::scope(|s| {
        let fold_handles: Vec<_> = if cv {
            (0..FOLDS)
                .map(|f| {
                    let problem = &problem;
                    s.spawn(move || {
                        let rows: Vec<usize> =
                            (0..problem.rows()).filter(|&i| problem.fold[i] != f).collect();
                        fit(problem, &rows)
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        let all_rows: Vec<usize> = (0..problem.rows()).collect();
        let final_fit = fit(&problem, &all_rows);
        let folds: Vec<Fit> = fold_handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .collect();
        (final_fit, folds)
    });
    if cv && folds.len() != FOLDS {
        bail!("a cross-validation fold failed");
    }
    let model = quantise(&final_fit, params)?;
    let bytes = model.to_bytes();
    if let Some(parent) = out_path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
    }
    std::fs::write(&out_path, &bytes)
        .with_context(|| format!("cannot write {}", out_path.display()))?;
    let elapsed = started.elapsed();

    println!();
    println!("== final model ==");
    println!(
        "lbfgs: {} iterations, objective {:.6}, |grad| {:.2e}",
        final_fit.iterations, final_fit.objective, final_fit.grad_norm
    );
    let nonzero = bytes
        .iter()
        .skip(prompt_guard::model::HEADER_LEN)
        .filter(|&&b| b != 0)
        .count();
    println!(
        "weights: {} buckets, {} non-zero after i8 quantisation, scale {:.3e}, bias {:.4}",
        params.buckets(),
        nonzero,
        final_fit.scale_used,
        final_fit.bias
    );
    println!(
        "wrote {} ({} bytes, sha256 {})",
        out_path.display(),
        bytes.len(),
        sha256_hex(&bytes)
    );
    let train_scores = score_all(&model, &ship);
    println!();
    println!("== fit on the training records themselves (optimistic) ==");
    print_threshold_table(&ship, &train_scores, &[0.5]);

    if cv {
        let mut oof = vec![0f32; ship.len()];
        for (f, fitted) in folds.iter().enumerate() {
            let m = quantise(fitted, params)?;
            let mut scratch = m.scratch();
            for (i, r) in ship.iter().enumerate() {
                if problem.fold.get(i) == Some(&f) {
                    if let Some(slot) = oof.get_mut(i) {
                        *slot = m.score_with(&r.text, &mut scratch);
                    }
                }
            }
        }
        println!();
        println!("== {FOLDS}-fold cross-validation on the ship_ok train records (out-of-fold scores, quantised model) ==");
        let hard: Vec<f32> = ship
            .iter()
            .zip(&oof)
            .filter(|(r, _)| r.kind == "benign_hard")
            .map(|(_, &s)| s)
            .collect();
        let t1 = threshold_for_fpr(&hard, 0.01);
        let t3 = threshold_for_fpr(&hard, 0.03);
        let mut ts = vec![0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
        ts.extend([t1, t3]);
        ts.sort_by(|a, b| a.total_cmp(b));
        ts.dedup();
        print_threshold_table(&ship, &oof, &ts);
        println!();
        println!(
            "threshold for FPR ≈ 1% on benign_hard (CV): {t1:.3}    for FPR ≈ 3%: {t3:.3}"
        );
        print_by_kind_and_lang(&ship, &oof, &[t3, t1]);
    }
    if holdout {
        println!();
        println!("== holdout: train-split records that are not ship_ok (never trained on) ==");
        let scores = score_all(&model, &unshipped);
        print_threshold_table(&unshipped, &scores, &[0.5, 0.7, 0.9]);
        print_by_kind_and_lang(&unshipped, &scores, &[0.5, 0.9]);
    }
    println!();
    println!(
        "training took {:.1} s (including {} cross-validation fits)",
        elapsed.as_secs_f64(),
        if cv { FOLDS } else { 0 }
    );
    Ok(())
}

/// The data directory: `--data`, else `$GUARD_DATA_DIR`, else `../shared/data` beside the
/// repository root, else `../shared/data` from the current directory. The error names every
/// path tried.
pub fn data_dir(flag: Option<&str>) -> anyhow::Result<PathBuf> {
    let mut tried: Vec<PathBuf> = Vec::new();
    let candidates: Vec<PathBuf> = if let Some(d) = flag {
        vec![PathBuf::from(d)]
    } else if let Some(d) = std::env::var_os("GUARD_DATA_DIR").filter(|d| !d.is_empty()) {
        vec![PathBuf::from(d)]
    } else {
        let mut v = Vec::new();
        if let Some(root) = repo_root() {
            v.push(root.join("..").join("shared").join("data"));
        }
        v.push(PathBuf::from("..").join("shared").join("data"));
        v
    };
    for c in candidates {
        if c.join("injection").join("train.jsonl").is_file()
            || c.join("injection").join("test.jsonl").is_file()
        {
            return Ok(c);
        }
        tried.push(c);
    }
    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "injection data not found: looked for injection/train.jsonl under {} (pass --data DIR or set GUARD_DATA_DIR)",
        list.join(", ")
    )
}

/// The workspace root: the parent of guardctl's manifest directory.
fn repo_root() -> Option<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf)
}

fn default_model_path() -> PathBuf {
    repo_root()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("filters")
        .join("prompt-guard")
        .join("model")
        .join("injection.bin")
}

/// One labelled record, its text already normalised (Base view).
#[derive(Debug, Clone)]
pub struct Record {
    pub text: String,
    pub raw_len: usize,
    pub label: u8,
    pub kind: String,
    pub lang: String,
    pub source: String,
    pub ship_ok: bool,
}

/// Reads a JSON Lines file of the injection schema and normalises every text.
pub fn load_records(path: &Path) -> anyhow::Result<Vec<Record>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut norm = Normalizer::new();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not json", path.display(), n + 1))?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let raw = v
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{}:{}: no \"text\"", path.display(), n + 1))?;
        let label = match v.get("label").and_then(Value::as_u64) {
            Some(0) => 0,
            Some(1) => 1,
            other => bail!("{}:{}: bad label {other:?}", path.display(), n + 1),
        };
        let mut base = String::new();
        norm.base(raw, &mut base);
        out.push(Record {
            text: base,
            raw_len: raw.len(),
            label,
            kind: field("kind"),
            lang: field("lang"),
            source: field("source"),
            ship_ok: v.get("ship_ok").and_then(Value::as_bool).unwrap_or(false),
        });
    }
    Ok(out)
}

/// The design matrix in compressed rows: each row's distinct buckets, all with value
/// `1/sqrt(k)`.
struct Problem {
    indptr: Vec<usize>,
    idx: Vec<u32>,
    val: Vec<f64>,
    y: Vec<f64>,
    weight: Vec<f64>,
    fold: Vec<usize>,
    dim: usize,
}

impl Problem {
    fn build(records: &[Record], params: &FeatureParams) -> Problem {
        let mut scratch = ModelScratch::default();
        let mut feats = Vec::new();
        let mut p = Problem {
            indptr: vec![0],
            idx: Vec::new(),
            val: Vec::new(),
            y: Vec::new(),
            weight: Vec::new(),
            fold: Vec::new(),
            dim: params.buckets(),
        };
        let pos = records.iter().filter(|r| r.label == 1).count().max(1) as f64;
        let neg = records.iter().filter(|r| r.label == 0).count().max(1) as f64;
        let n = records.len() as f64;
        for r in records {
            params.extract(&r.text, &mut scratch, &mut feats);
            p.idx.extend_from_slice(&feats);
            p.indptr.push(p.idx.len());
            p.val.push(if feats.is_empty() {
                0.0
            } else {
                1.0 / (feats.len() as f64).sqrt()
            });
            p.y.push(if r.label == 1 { 1.0 } else { -1.0 });
            // Class-balanced weights: each class carries half the loss.
            p.weight
                .push(if r.label == 1 { n / (2.0 * pos) } else { n / (2.0 * neg) });
            p.fold.push(fold_of(&r.text));
        }
        p
    }

    fn rows(&self) -> usize {
        self.y.len()
    }

    fn row(&self, i: usize) -> (&[u32], f64) {
        let a = self.indptr.get(i).copied().unwrap_or(0);
        let b = self.indptr.get(i + 1).copied().unwrap_or(a);
        (
            self.idx.get(a..b).unwrap_or(&[]),
            self.val.get(i).copied().unwrap_or(0.0),
        )
    }
}

/// Cross-validation fold of a record: a hash of the first 48 characters of its normalised text,
/// so templated families that share an opening stay in one fold.
fn fold_of(text: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for c in text.chars().take(48) {
        h = (h ^ u64::from(c)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 32;
    (h % FOLDS as u64) as usize
}

/// The result of one fit.
struct Fit {
    w: Vec<f64>,
    bias: f64,
    iterations: usize,
    objective: f64,
    grad_norm: f64,
    scale_used: f64,
}

/// Objective and gradient at `x = [w.., b]` over `rows`:
/// `Σ c_i log(1 + exp(-y_i z_i)) / Σ c_i + λ/2 |w|²`.
fn objective(p: &Problem, rows: &[usize], total_weight: f64, x: &[f64], grad: &mut [f64]) -> f64 {
    grad.iter_mut().for_each(|g| *g = 0.0);
    let bias = x.get(p.dim).copied().unwrap_or(0.0);
    let mut loss = 0.0;
    let mut gb = 0.0;
    for &i in rows {
        let (feats, v) = p.row(i);
        let mut z = 0.0;
        for &f in feats {
            z += x.get(f as usize).copied().unwrap_or(0.0);
        }
        z = z * v + bias;
        let y = p.y.get(i).copied().unwrap_or(0.0);
        let c = p.weight.get(i).copied().unwrap_or(0.0) / total_weight;
        let m = y * z;
        loss += c * log1p_exp(-m);
        // d/dz log(1+exp(-y z)) = -y * sigmoid(-y z)
        let d = -y * sigmoid64(-m) * c;
        gb += d;
        let dv = d * v;
        for &f in feats {
            if let Some(g) = grad.get_mut(f as usize) {
                *g += dv;
            }
        }
    }
    let mut reg = 0.0;
    for (g, &w) in grad.iter_mut().zip(x.iter()).take(p.dim) {
        reg += w * w;
        *g += LAMBDA * w;
    }
    if let Some(g) = grad.get_mut(p.dim) {
        *g = gb;
    }
    loss + 0.5 * LAMBDA * reg
}

fn log1p_exp(t: f64) -> f64 {
    if t > 0.0 {
        t + (-t).exp().ln_1p()
    } else {
        t.exp().ln_1p()
    }
}

fn sigmoid64(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Full-batch L-BFGS with a backtracking (Armijo) line search. Deterministic: sequential sums in
/// a fixed order.
fn fit(p: &Problem, rows: &[usize]) -> Fit {
    let n = p.dim + 1;
    let total_weight: f64 = rows
        .iter()
        .map(|&i| p.weight.get(i).copied().unwrap_or(0.0))
        .sum::<f64>()
        .max(f64::MIN_POSITIVE);
    let mut x = vec![0.0; n];
    let mut g = vec![0.0; n];
    let mut f = objective(p, rows, total_weight, &x, &mut g);
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut rho_hist: Vec<f64> = Vec::new();
    let mut d = vec![0.0; n];
    let mut x_new = vec![0.0; n];
    let mut g_new = vec![0.0; n];
    let mut alpha = vec![0.0; HISTORY];
    let mut iterations = 0;
    let mut small_steps = 0;
    for iter in 0..MAX_ITER {
        iterations = iter + 1;
        // Two-loop recursion: d = -H g.
        d.copy_from_slice(&g);
        for k in (0..s_hist.len()).rev() {
            let (Some(s), Some(y), Some(&rho)) = (s_hist.get(k), y_hist.get(k), rho_hist.get(k))
            else {
                continue;
            };
            let a = rho * dot(s, &d);
            if let Some(slot) = alpha.get_mut(k) {
                *slot = a;
            }
            d.iter_mut().zip(y).for_each(|(di, yi)| *di -= a * yi);
        }
        if let (Some(s), Some(y)) = (s_hist.last(), y_hist.last()) {
            let gamma = dot(s, y) / dot(y, y).max(f64::MIN_POSITIVE);
            d.iter_mut().for_each(|di| *di *= gamma);
        } else {
            let gn = dot(&g, &g).sqrt().max(f64::MIN_POSITIVE);
            d.iter_mut().for_each(|di| *di /= gn);
        }
        for k in 0..s_hist.len() {
            let (Some(s), Some(y), Some(&rho)) = (s_hist.get(k), y_hist.get(k), rho_hist.get(k))
            else {
                continue;
            };
            let b = rho * dot(y, &d);
            let a = alpha.get(k).copied().unwrap_or(0.0);
            d.iter_mut().zip(s).for_each(|(di, si)| *di += (a - b) * si);
        }
        d.iter_mut().for_each(|di| *di = -*di);
        let mut gd = dot(&g, &d);
        if gd >= 0.0 {
            // Not a descent direction: restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            rho_hist.clear();
            let gn = dot(&g, &g).sqrt().max(f64::MIN_POSITIVE);
            d.iter_mut().zip(&g).for_each(|(di, gi)| *di = -gi / gn);
            gd = dot(&g, &d);
        }
        // Backtracking line search.
        let mut step = 1.0;
        let mut f_new;
        let mut accepted = false;
        loop {
            x_new
                .iter_mut()
                .zip(x.iter().zip(&d))
                .for_each(|(xn, (xi, di))| *xn = xi + step * di);
            f_new = objective(p, rows, total_weight, &x_new, &mut g_new);
            if f_new <= f + 1e-4 * step * gd {
                accepted = true;
                break;
            }
            step *= 0.5;
            if step < 1e-10 {
                break;
            }
        }
        if !accepted {
            break;
        }
        let s: Vec<f64> = x_new.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 {
            if s_hist.len() == HISTORY {
                s_hist.remove(0);
                y_hist.remove(0);
                rho_hist.remove(0);
            }
            s_hist.push(s);
            y_hist.push(y);
            rho_hist.push(1.0 / sy);
        }
        std::mem::swap(&mut x, &mut x_new);
        std::mem::swap(&mut g, &mut g_new);
        let rel = (f - f_new).abs() / f.abs().max(1e-12);
        f = f_new;
        let gnorm = dot(&g, &g).sqrt();
        if gnorm < 1e-7 {
            break;
        }
        if rel < 1e-9 {
            small_steps += 1;
            if small_steps >= 3 {
                break;
            }
        } else {
            small_steps = 0;
        }
    }
    let bias = x.get(p.dim).copied().unwrap_or(0.0);
    x.truncate(p.dim);
    Fit {
        w: x,
        bias,
        iterations,
        objective: f,
        grad_norm: dot(&g, &g).sqrt(),
        scale_used: 0.0,
    }
}

/// i8 quantisation: scale = max |w| / 127, round to nearest.
fn quantise(fit: &Fit, params: FeatureParams) -> anyhow::Result<Model> {
    let max = fit.w.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let weights: Vec<i8> = fit
        .w
        .iter()
        .map(|w| (w / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    Model::from_parts(params, fit.bias as f32, scale as f32, weights)
        .map_err(|e| anyhow!("cannot build the model: {e}"))
}

fn score_all(model: &Model, records: &[Record]) -> Vec<f32> {
    let mut scratch = model.scratch();
    records
        .iter()
        .map(|r| model.score_with(&r.text, &mut scratch))
        .collect()
}

/// The lowest threshold `t` (a score of the set, nudged up) such that at most `fpr` of `scores`
/// are `>= t`.
fn threshold_for_fpr(scores: &[f32], fpr: f64) -> f32 {
    if scores.is_empty() {
        return 0.5;
    }
    let mut s = scores.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    let allowed = (fpr * s.len() as f64).floor() as usize;
    // s[allowed] is the highest score that must be below the threshold.
    let v = s.get(allowed).copied().unwrap_or(0.0);
    let t = f32::from_bits(v.to_bits().saturating_add(1)).min(1.0);
    if t > v {
        t
    } else {
        v
    }
}

struct Counts {
    tp: usize,
    fp: usize,
    pos: usize,
    neg: usize,
}

impl Counts {
    fn of<'a>(items: impl Iterator<Item = (&'a Record, f32)>, t: f32) -> Counts {
        let mut c = Counts {
            tp: 0,
            fp: 0,
            pos: 0,
            neg: 0,
        };
        for (r, s) in items {
            let hit = s >= t;
            if r.label == 1 {
                c.pos += 1;
                c.tp += usize::from(hit);
            } else {
                c.neg += 1;
                c.fp += usize::from(hit);
            }
        }
        c
    }
    fn recall(&self) -> f64 {
        ratio(self.tp, self.pos)
    }
    fn fpr(&self) -> f64 {
        ratio(self.fp, self.neg)
    }
    fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

fn pct(x: f64) -> String {
    if x.is_nan() {
        "   -  ".to_string()
    } else {
        format!("{:5.1}%", 100.0 * x)
    }
}

fn print_threshold_table(records: &[Record], scores: &[f32], thresholds: &[f32]) {
    let pairs = || records.iter().zip(scores.iter().copied());
    println!(
        "{:>9}  {:>7} {:>7} {:>7} {:>8} {:>8} {:>9} {:>7} {:>7} {:>7}",
        "threshold",
        "prec",
        "recall",
        "FPR",
        "FPR ben",
        "FPR hard",
        "FPR wildg",
        "r dir",
        "r ind",
        "r jb"
    );
    for &t in thresholds {
        let all = Counts::of(pairs(), t);
        let kind = |k: &str| Counts::of(pairs().filter(|(r, _)| r.kind == k), t);
        let wild = Counts::of(
            pairs().filter(|(r, _)| r.label == 0 && r.source.contains("wildguard")),
            t,
        );
        println!(
            "{:>9.3}  {:>7} {:>7} {:>7} {:>8} {:>8} {:>9} {:>7} {:>7} {:>7}",
            t,
            pct(all.precision()),
            pct(all.recall()),
            pct(all.fpr()),
            pct(kind("benign").fpr()),
            pct(kind("benign_hard").fpr()),
            pct(wild.fpr()),
            pct(kind("direct").recall()),
            pct(kind("indirect").recall()),
            pct(kind("jailbreak").recall()),
        );
    }
}

fn print_by_kind_and_lang(records: &[Record], scores: &[f32], thresholds: &[f32]) {
    let mut langs: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for r in records {
        let e = langs.entry(r.lang.as_str()).or_insert((0, 0));
        if r.label == 1 {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    let mut order: Vec<(&str, (usize, usize))> = langs.into_iter().collect();
    order.sort_by(|a, b| (b.1 .0 + b.1 .1).cmp(&(a.1 .0 + a.1 .1)).then(a.0.cmp(b.0)));
    for &t in thresholds {
        println!();
        println!("by language at threshold {t:.3}:");
        println!("{:>5} {:>6} {:>7} {:>6} {:>7}", "lang", "pos", "recall", "neg", "FPR");
        for (lang, (pos, neg)) in &order {
            let c = Counts::of(
                records
                    .iter()
                    .zip(scores.iter().copied())
                    .filter(|(r, _)| r.lang == *lang),
                t,
            );
            println!(
                "{:>5} {:>6} {:>7} {:>6} {:>7}",
                lang,
                pos,
                pct(c.recall()),
                neg,
                pct(c.fpr())
            );
        }
    }
}

fn print_data_stats(path: &Path, ship: &[Record], unshipped: usize, p: &Problem) {
    println!("== data ==");
    println!(
        "{}: {} ship_ok records used, {} other records ignored (licence)",
        path.display(),
        ship.len(),
        unshipped
    );
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for r in ship {
        *kinds.entry(r.kind.as_str()).or_default() += 1;
    }
    let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("by kind: {}", list.join(", "));
    let pos = ship.iter().filter(|r| r.label == 1).count();
    println!("label 1: {pos}, label 0: {}", ship.len() - pos);
    println!(
        "features: {} buckets, {} non-zeros ({:.0} per record)",
        p.dim,
        p.idx.len(),
        p.idx.len() as f64 / ship.len().max(1) as f64
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
