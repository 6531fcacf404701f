//! Engine scan throughput (native, one thread, the shipped default policy):
//! `cargo run --release -p pii-redact --example scan_speed [JSONL] [PROSE]`.
//!
//! `JSONL`: `{"text"}` per line, default `../shared/data/pii/train.jsonl` (PII-dense records);
//! three rounds over every text, then the texts joined into one. `PROSE`: any text file (e.g.
//! the repository's docs joined), scanned ten times as one text.

use pii_redact::engine::Engine;
use std::time::Instant;

fn mb_per_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs.max(1e-9) / 1e6
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "../shared/data/pii/train.jsonl".to_string());
    let prose = args.next();
    let texts: Vec<String> = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {path}: {e}"))?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_string))
        .collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    let engine = Engine::default_policy()?;
    let mut scratch = engine.scratch();
    let mut hits = Vec::new();
    for round in 0..3 {
        let t = Instant::now();
        let mut found = 0usize;
        for text in &texts {
            engine.scan(&mut scratch, text, true, &mut hits);
            found += hits.len();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "round {round}: {} texts, {bytes} bytes, {found} hits, {:.1} MB/s, {:.1} us/text",
            texts.len(),
            mb_per_s(bytes, s),
            s * 1e6 / texts.len().max(1) as f64
        );
    }
    let big = texts.join("\n");
    let t = Instant::now();
    engine.scan(&mut scratch, &big, true, &mut hits);
    let s = t.elapsed().as_secs_f64();
    println!(
        "one {} byte text: {:.1} MB/s, {} hits",
        big.len(),
        mb_per_s(big.len(), s),
        hits.len()
    );
    if let Some(f) = prose {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("cannot read {f}: {e}"))?;
        let t = Instant::now();
        let mut found = 0usize;
        for _ in 0..10 {
            engine.scan(&mut scratch, &text, true, &mut hits);
            found += hits.len();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "prose {} bytes x10: {:.1} MB/s, {found} hits",
            text.len(),
            mb_per_s(text.len() * 10, s)
        );
    }
    Ok(())
}
