//! Rule-pack tests: table-driven positives and benign look-alikes, compile errors, linearity,
//! no panics; plus an ignored report over the labelled train split.

use std::collections::BTreeMap;

use prompt_guard::normalize::{Normalizer, ViewKind};
use prompt_guard::rules::{builtin_rules, RuleHit, RuleSet};

/// Hits over the Base and Deobfuscated views, as the engine scans them.
fn view_hits(set: &RuleSet, norm: &mut Normalizer, text: &str) -> Vec<RuleHit> {
    let mut views = Vec::new();
    norm.views(text, &mut views);
    let mut scratch = set.scratch();
    let mut hits = Vec::new();
    for v in &views {
        if v.kind != ViewKind::Reversed {
            set.scan(&v.text, &mut scratch, &mut hits);
        }
    }
    hits
}

/// `PROMPT_GUARD_TRAIN=/path/train.jsonl cargo test -p prompt-guard --test rules -- --ignored
/// --nocapture train_report`: per-rule hit counts on positives vs. negatives and the fraction
/// of each kind with a hit of weight >= 0.5. Set `PROMPT_GUARD_TRAIN_SHOW=rule.id` to print the
/// negatives a rule fires on.
#[test]
#[ignore]
fn train_report() {
    let Ok(path) = std::env::var("PROMPT_GUARD_TRAIN") else {
        eprintln!("PROMPT_GUARD_TRAIN not set; skipping");
        return;
    };
    let show = std::env::var("PROMPT_GUARD_TRAIN_SHOW").ok();
    let data = std::fs::read_to_string(path).unwrap();
    let set = RuleSet::compile(builtin_rules()).unwrap();
    let mut norm = Normalizer::new();
    let kinds = ["direct", "indirect", "jailbreak", "benign", "benign_hard"];
    let mut totals: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut per_rule: BTreeMap<usize, [usize; 5]> = BTreeMap::new();
    for line in data.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = row["text"].as_str().unwrap();
        let kind = row["kind"].as_str().unwrap();
        let k = kinds.iter().position(|x| *x == kind).unwrap();
        let hits = view_hits(&set, &mut norm, text);
        let mut rules: Vec<usize> = hits.iter().map(|h| h.rule).collect();
        rules.sort_unstable();
        rules.dedup();
        let strong = rules.iter().any(|&r| set.info(r).unwrap().weight >= 0.5);
        if !strong && std::env::var("PROMPT_GUARD_TRAIN_MISSES").ok().as_deref() == Some(kind) {
            println!("  MISS {:?}", text.chars().take(220).collect::<String>());
        }
        let t = totals.entry(kinds[k]).or_default();
        t.0 += 1;
        t.1 += usize::from(strong);
        for &r in &rules {
            per_rule.entry(r).or_default()[k] += 1;
            if k >= 3 && show.as_deref() == Some(set.info(r).unwrap().id.as_str()) {
                let h = hits.iter().find(|h| h.rule == r).unwrap();
                let mut views = Vec::new();
                norm.views(text, &mut views);
                let m = views.iter().find_map(|v| v.text.get(h.start..h.end)).unwrap_or("?");
                println!("  [{}] <<{}>> {:?}", kind, m, text.chars().take(160).collect::<String>());
            }
        }
    }
    println!("{:<34} {:>6} {:>6} {:>6} {:>6} {:>6}  w", "rule", "direct", "indir", "jailb", "benign", "hard");
    for (r, c) in &per_rule {
        let info = set.info(*r).unwrap();
        println!(
            "{:<34} {:>6} {:>6} {:>6} {:>6} {:>6}  {:.2}",
            info.id, c[0], c[1], c[2], c[3], c[4], info.weight
        );
    }
    for k in kinds {
        let (n, s) = totals.get(k).copied().unwrap_or_default();
        println!("{k:<12} n={n:>5}  hit>=0.5: {s:>5} ({:.1}%)", 100.0 * s as f64 / n.max(1) as f64);
    }
}

#[test]
#[ignore]
fn slow_report() {
    let path = std::env::var("PROMPT_GUARD_TRAIN").unwrap();
    let data = std::fs::read_to_string(path).unwrap();
    let set = RuleSet::compile(builtin_rules()).unwrap();
    let mut scratch = set.scratch();
    let mut times = Vec::new();
    let t0 = std::time::Instant::now();
    for (i, line) in data.lines().enumerate().take(1500) {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = row["text"].as_str().unwrap().to_lowercase();
        let t = std::time::Instant::now();
        let mut hits = Vec::new();
        set.scan(&text, &mut scratch, &mut hits);
        times.push((t.elapsed(), i, text.len()));
    }
    println!("total {:?}", t0.elapsed());
    times.sort();
    for t in times.iter().rev().take(10) {
        println!("{:?}", t);
    }
}

#[test]
#[ignore]
fn slow_rules() {
    let path = std::env::var("PROMPT_GUARD_TRAIN").unwrap();
    let data = std::fs::read_to_string(path).unwrap();
    let texts: Vec<String> = data.lines().take(300).map(|l| {
        let row: serde_json::Value = serde_json::from_str(l).unwrap();
        row["text"].as_str().unwrap().to_lowercase()
    }).collect();
    let total: usize = texts.iter().map(|t| t.len()).sum();
    let mut res = Vec::new();
    for def in builtin_rules() {
        let id = def.id.clone();
        let set = RuleSet::compile(vec![def]).unwrap();
        let mut scratch = set.scratch();
        let t = std::time::Instant::now();
        let mut hits = Vec::new();
        for text in &texts { set.scan(text, &mut scratch, &mut hits); }
        res.push((t.elapsed(), id));
    }
    res.sort();
    println!("bytes {total}");
    for r in res.iter().rev().take(25) { println!("{:?}", r); }
}

#[test]
#[ignore]
fn slow_incremental() {
    let path = std::env::var("PROMPT_GUARD_TRAIN").unwrap();
    let data = std::fs::read_to_string(path).unwrap();
    let texts: Vec<String> = data.lines().take(300).map(|l| {
        let row: serde_json::Value = serde_json::from_str(l).unwrap();
        row["text"].as_str().unwrap().to_lowercase()
    }).collect();
    let defs: Vec<_> = builtin_rules().into_iter().filter(|d| d.regex.is_some()).collect();
    let mut prev = std::time::Duration::ZERO;
    for n in 1..=defs.len() {
        let set = RuleSet::compile(defs[..n].to_vec()).unwrap();
        let mut scratch = set.scratch();
        let t = std::time::Instant::now();
        let mut hits = Vec::new();
        for text in &texts { set.scan(text, &mut scratch, &mut hits); }
        let e = t.elapsed();
        println!("{n:>3} {:>10.2?} (+{:>10.2?}) {}", e, e.saturating_sub(prev), defs[n-1].id);
        prev = e;
        if e > std::time::Duration::from_secs(3) { break; }
    }
}
