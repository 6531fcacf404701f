//! Engine scan throughput on the pii test split (or any JSON Lines file of `{"text"}`):
//! `cargo run --release -p pii-redact --example scan_speed [FILE]`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use pii_redact::engine::Engine;
use std::time::Instant;

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/data/pii/train.jsonl".to_string());
    let texts: Vec<String> = std::fs::read_to_string(&path)
        .expect("data file")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    let engine = Engine::default_policy().unwrap();
    let mut scratch = engine.scratch();
    let mut hits = Vec::new();
    let mut n = 0usize;
    for round in 0..3 {
        let t = Instant::now();
        for text in &texts {
            engine.scan(&mut scratch, text, true, &mut hits);
            n += hits.len();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "round {round}: {} texts, {bytes} bytes, {:.1} MB/s, {:.1} us/text",
            texts.len(),
            bytes as f64 / s / 1e6,
            s * 1e6 / texts.len() as f64
        );
    }
    if std::env::var("PER_PATTERN").is_ok() {
        let big: String = texts.join("\n").chars().take(1 << 20).collect();
        for (i, p) in pii_redact::patterns::builtin_patterns().iter().enumerate() {
            let re = regex_automata::meta::Regex::new(&p.regex).unwrap();
            let t = Instant::now();
            let c = re.find_iter(&big).count();
            let s = t.elapsed().as_secs_f64();
            println!(
                "pattern {i:2} {:12} {:8.1} MB/s {c} matches",
                format!("{:?}", p.check),
                big.len() as f64 / s / 1e6
            );
        }
    }
    if std::env::var("COMBINED").is_ok() {
        let big: String = texts.join("\n").chars().take(1 << 20).collect();
        let pats: Vec<String> = pii_redact::patterns::builtin_patterns()
            .iter()
            .map(|p| p.regex.clone())
            .collect();
        let sets: Vec<(&str, Vec<usize>)> = vec![
            ("prefix 0-14", (0..15).collect()),
            ("structural 22-28", (22..29).collect()),
            ("0-14 + 22-28", (0..15).chain(22..29).collect()),
            ("22-27 (no phone)", (22..28).collect()),
            ("email", vec![27]),
            ("card+ssn+phone", vec![23, 24, 28]),
        ];
        for cap in [2usize << 20] {
            for (name, idx) in &sets {
                let sel: Vec<&str> = idx.iter().map(|&i| pats[i].as_str()).collect();
                let upto = name;
                let re = regex_automata::meta::Regex::builder()
                    .configure(regex_automata::meta::Regex::config().hybrid_cache_capacity(cap))
                    .build_many(&sel)
                    .unwrap();
                let t = Instant::now();
                let c = re.find_iter(&big).count();
                let s = t.elapsed().as_secs_f64();
                println!(
                    "cap {cap} first {upto} patterns: {:8.1} MB/s {c}",
                    big.len() as f64 / s / 1e6
                );
            }
        }
    }
    if let Ok(f) = std::env::var("PROSE") {
        let prose = std::fs::read_to_string(f).unwrap();
        let t = Instant::now();
        let mut n = 0;
        for _ in 0..10 {
            engine.scan(&mut scratch, &prose, true, &mut hits);
            n += hits.len();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "prose {} bytes x10: {:.1} MB/s, {n} hits",
            prose.len(),
            prose.len() as f64 * 10.0 / s / 1e6
        );
    }
    // Long prose: one big text.
    let big: String = texts.join("\n").chars().take(4 << 20).collect();
    let t = Instant::now();
    engine.scan(&mut scratch, &big, true, &mut hits);
    let s = t.elapsed().as_secs_f64();
    println!(
        "one {} byte text: {:.1} MB/s, {} hits ({n})",
        big.len(),
        big.len() as f64 / s / 1e6,
        hits.len()
    );
}
