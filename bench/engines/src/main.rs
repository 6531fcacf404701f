//! Native engine throughput for `make bench`: each engine on the shared labelled data and on the
//! benchmark's 4 KB chat request, one thread, median of several timed rounds. Every row checks
//! its match count first (a broken engine that finds nothing cannot look fast): the run fails
//! when a check fails.
//!
//! `cargo run --release -p bench-engines [-- --rounds N]`: a table on standard error, JSON
//! `{"engines": [{"name", "mb_per_s", "bytes", "matches", "check"}]}` on standard output.
//! Data from `$GUARD_DATA_DIR` or `../shared/data`.

use anyhow::{bail, Context, Result};
use guard_core::api::ApiShape;
use guard_core::body::{RequestBody, ResponseBody};
use guard_core::segment::Source;
use guard_core::sse::SseParser;
use guard_core::stream::StreamDecoder;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

use bench_engines::chat_prompt;

struct Row {
    name: &'static str,
    bytes: usize,
    secs: f64,
    matches: usize,
    check: String,
}

fn data_dir() -> Result<PathBuf> {
    let dir = std::env::var("GUARD_DATA_DIR").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
        PathBuf::from,
    );
    if !dir.is_dir() {
        bail!(
            "labelled data not found at {} (set GUARD_DATA_DIR)",
            dir.display()
        );
    }
    Ok(dir)
}

fn jsonl(path: PathBuf) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Median seconds of `rounds` runs of `f` (each returns its match count, which must not vary).
fn time(rounds: usize, mut f: impl FnMut() -> usize) -> Result<(f64, usize)> {
    let first = f();
    let mut secs = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let n = f();
        secs.push(t.elapsed().as_secs_f64());
        if n != first {
            bail!("match count changed between rounds: {first} then {n}");
        }
    }
    secs.sort_by(f64::total_cmp);
    Ok((secs.get(secs.len() / 2).copied().unwrap_or(0.0), first))
}

fn main() -> Result<()> {
    let mut rounds = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .context("--rounds needs a number")?
            }
            other => bail!("unknown argument {other:?}; usage: bench-engines [--rounds N]"),
        }
    }
    let data = data_dir()?;
    let injection = jsonl(data.join("injection/test.jsonl"))?;
    let pii_data = jsonl(data.join("pii/test.jsonl"))?;
    let prompt = chat_prompt(4096);
    let request = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You are a helpful assistant for the finance team."},
        {"role": "user", "content": prompt}]})
    .to_string();
    let mut rows = Vec::new();

    // Body model: parse the 4 KB request and list its segments.
    let (secs, n) = time(rounds, || {
        let mut n = 0;
        for _ in 0..1000 {
            if let Ok(r) = RequestBody::parse(ApiShape::OpenAiChat, request.as_bytes()) {
                n += r.segments().len();
            }
        }
        n
    })?;
    rows.push(Row {
        name: "body model: parse 4 KB request + segments",
        bytes: request.len() * 1000,
        secs,
        matches: n,
        check: check(n == 2000, format!("{n} segments, want 2000"))?,
    });

    // SSE: a 2 KB streamed answer in 20-byte chunks, parsed and decoded.
    let stream = sse_answer(2048);
    let (secs, n) = time(rounds, || {
        let mut n = 0;
        for _ in 0..1000 {
            let mut parser = SseParser::new(1 << 16);
            let mut decoder = StreamDecoder::new(ApiShape::OpenAiChat);
            let mut deltas = Vec::new();
            for chunk in stream.as_bytes().chunks(20) {
                let _ = parser.push(chunk, &mut |e| {
                    deltas.clear();
                    if decoder.decode(&e, &mut deltas).is_ok() {
                        n += deltas.len();
                    }
                });
            }
        }
        n
    })?;
    let events = stream.matches("data: {").count();
    rows.push(Row {
        name: "sse: 2 KB stream in 20-byte chunks",
        bytes: stream.len() * 1000,
        secs,
        matches: n,
        check: check(
            n >= events * 1000,
            format!("{n} deltas, want at least {}", events * 1000),
        )?,
    });

    // prompt-guard on the labelled test split.
    let pg = prompt_guard::engine::Engine::default_policy()?;
    let mut pg_scratch = pg.scratch();
    let texts: Vec<(&str, bool)> = injection
        .iter()
        .filter_map(|v| Some((v.get("text")?.as_str()?, v.get("label")?.as_u64()? == 1)))
        .collect();
    let attacks = texts.iter().filter(|t| t.1).count();
    let (secs, n) = time(rounds, || {
        texts
            .iter()
            .filter(|(t, _)| {
                pg.scan(&mut pg_scratch, t, Source::User).verdict
                    != prompt_guard::engine::Verdict::Allow
            })
            .count()
    })?;
    rows.push(Row {
        name: "prompt-guard: injection test split",
        bytes: texts.iter().map(|t| t.0.len()).sum(),
        secs,
        matches: n,
        check: check(
            n * 2 >= attacks && n <= attacks * 2,
            format!("{n} flagged of {attacks} attacks"),
        )?,
    });
    let (secs, n) = time(rounds, || {
        (0..200)
            .filter(|_| {
                pg.scan(&mut pg_scratch, &prompt, Source::User).verdict
                    == prompt_guard::engine::Verdict::Allow
            })
            .count()
    })?;
    rows.push(Row {
        name: "prompt-guard: 4 KB chat prompt",
        bytes: prompt.len() * 200,
        secs,
        matches: n,
        check: check(n == 200, format!("{n} of 200 allowed"))?,
    });

    // pii-redact on the labelled test split and on the chat prompt.
    let pii = pii_redact::engine::Engine::default_policy()?;
    let mut pii_scratch = pii.scratch();
    let mut hits = Vec::new();
    // The labelled types pii-redact detects (the data also labels names, places, ...).
    const OURS: &[&str] = pii_redact::patterns::BUILTIN;
    let pii_texts: Vec<&str> = pii_data
        .iter()
        .filter_map(|v| v.get("text")?.as_str())
        .collect();
    let labelled: usize = pii_data
        .iter()
        .filter_map(|v| v.get("spans")?.as_array())
        .flatten()
        .filter(|s| {
            s.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| OURS.contains(&t))
        })
        .count();
    let (secs, n) = time(rounds, || {
        pii_texts
            .iter()
            .map(|t| {
                pii.scan(&mut pii_scratch, t, true, &mut hits);
                hits.len()
            })
            .sum()
    })?;
    rows.push(Row {
        name: "pii-redact: PII test split",
        bytes: pii_texts.iter().map(|t| t.len()).sum(),
        secs,
        matches: n,
        check: check(
            n * 10 >= labelled * 9 && n * 10 <= labelled * 12,
            format!("{n} entities, {labelled} labelled"),
        )?,
    });
    let (secs, n) = time(rounds, || {
        (0..200)
            .map(|_| {
                pii.scan(&mut pii_scratch, &prompt, true, &mut hits);
                hits.len()
            })
            .sum()
    })?;
    rows.push(Row {
        name: "pii-redact: 4 KB chat prompt",
        bytes: prompt.len() * 200,
        secs,
        matches: n,
        check: check(n == 400, format!("{n} entities, want 2 x 200"))?,
    });

    // schema-guard: a 1 KB structured answer, valid and invalid, against its schema.
    let (schema, valid, invalid) = structured();
    let compiled = schema_guard::engine::CompiledSchema::compile(
        &schema,
        Default::default(),
        &Default::default(),
    )?;
    let answers: Vec<String> = (0..100)
        .map(|i| {
            if i % 4 == 3 {
                invalid.clone()
            } else {
                valid.clone()
            }
        })
        .collect();
    let (secs, n) = time(rounds, || {
        let mut n = 0;
        for _ in 0..10 {
            for a in &answers {
                if let Ok(v) = serde_json::from_str::<Value>(a) {
                    n += usize::from(compiled.is_valid(&v));
                }
            }
        }
        n
    })?;
    rows.push(Row {
        name: "schema-guard: 1 KB structured answer (parse + validate)",
        bytes: answers.iter().map(String::len).sum::<usize>() * 10,
        secs,
        matches: n,
        check: check(n == 750, format!("{n} valid, want 750"))?,
    });

    // llm-telemetry's work: the usage of an answer.
    let answer = json!({"id": "x", "object": "chat.completion", "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": chat_prompt(1024)},
        "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 250, "total_tokens": 1250}})
    .to_string();
    let (secs, n) = time(rounds, || {
        (0..1000)
            .filter_map(|_| ResponseBody::parse(ApiShape::OpenAiChat, answer.as_bytes()).ok())
            .filter_map(|r| r.usage())
            .map(|u| usize::try_from(u.output_tokens).unwrap_or(0))
            .sum()
    })?;
    rows.push(Row {
        name: "llm-telemetry: usage of a 1 KB answer",
        bytes: answer.len() * 1000,
        secs,
        matches: n,
        check: check(n == 250_000, format!("{n} output tokens, want 250000"))?,
    });

    eprintln!("| engine | MB/s | matches | check |\n|---|---:|---:|---|");
    let mut out = Vec::new();
    for r in &rows {
        let mbps = r.bytes as f64 / r.secs.max(1e-9) / 1e6;
        eprintln!("| {} | {mbps:.1} | {} | {} |", r.name, r.matches, r.check);
        out.push(
            json!({"name": r.name, "mb_per_s": (mbps * 10.0).round() / 10.0,
            "bytes": r.bytes, "matches": r.matches, "check": r.check}),
        );
    }
    println!("{}", json!({"engines": out}));
    Ok(())
}

fn check(ok: bool, what: String) -> Result<String> {
    if !ok {
        bail!("match-count check failed: {what}");
    }
    Ok(what)
}

/// An OpenAI chat completion stream of about `size` bytes of text in 20-byte deltas.
fn sse_answer(size: usize) -> String {
    let text = chat_prompt(size);
    let mut out = String::new();
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(20) {
        let s: String = piece.iter().collect();
        let ev = json!({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": s}, "finish_reason": null}]});
        out.push_str(&format!("data: {ev}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

/// A structured-output schema with a valid and an invalid answer of about 1 KB.
fn structured() -> (Value, String, String) {
    let schema = json!({
        "type": "object", "additionalProperties": false,
        "required": ["customer", "items", "total", "currency"],
        "properties": {
            "customer": {"type": "object", "required": ["name", "email"],
                "properties": {"name": {"type": "string", "minLength": 1},
                               "email": {"type": "string", "format": "email"}}},
            "items": {"type": "array", "minItems": 1, "maxItems": 50, "items": {
                "type": "object", "required": ["sku", "qty", "price"],
                "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                               "qty": {"type": "integer", "minimum": 1},
                               "price": {"type": "number", "minimum": 0},
                               "note": {"type": "string", "maxLength": 200}}}},
            "total": {"type": "number"},
            "currency": {"enum": ["EUR", "USD", "GBP"]}
        }
    });
    let items: Vec<Value> = (0..12)
        .map(|i| {
            json!({"sku": format!("ABC-{:04}", 1000 + i), "qty": 1 + i % 3,
                        "price": 9.5 + f64::from(i), "note": "deliver to the side entrance"})
        })
        .collect();
    let valid = json!({"customer": {"name": "Dana Weber", "email": "dana@example.com"},
        "items": items, "total": 321.0, "currency": "EUR"});
    let mut invalid = valid.clone();
    if let Some(o) = invalid.as_object_mut() {
        o.insert("currency".into(), json!("DOGE"));
    }
    (schema, valid.to_string(), invalid.to_string())
}
