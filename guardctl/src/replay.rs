//! `guardctl replay FILE [--config FILE]...`: re-run every captured audit record of an access log
//! through the same engine and policy, check the input hash, print the decision path, and
//! report records whose replayed decision differs from the recorded one.
//!
//! Captures are decrypted with `GUARD_CAPTURE_KEY`. Replayed filters: prompt-guard (request
//! scan: per segment the source, the rules, the rule and model scores against the thresholds,
//! the verdict) and pii-redact (request rewrite: every entity with its type, segment, char
//! offsets, score and action). `--config` takes a whole filter configuration (its `default`
//! policy is used for that filter's records); without it, the shipped default policy.

use guard_core::api::ApiShape;
use guard_core::body::RequestBody;
use pii_redact::engine::{Direction, Engine as PiiEngine};
use prompt_guard::engine::{Engine as PgEngine, Verdict};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::rc::Rc;

type SchemaPolicy = Rc<guard_core::config::Policy<schema_guard::filter::Compiled>>;

pub fn run(args: &[String], usage: &str) -> anyhow::Result<()> {
    let mut file: Option<&str> = None;
    let mut configs: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => configs.push(
                it.next()
                    .ok_or_else(|| anyhow::anyhow!("--config needs a file"))?,
            ),
            f if file.is_none() && !f.starts_with("--") => file = Some(f),
            other => anyhow::bail!("unknown argument {other:?}\n{usage}"),
        }
    }
    let file = file.ok_or_else(|| anyhow::anyhow!("{usage}"))?;
    let key = std::env::var(guard_core::capture::KEY_ENV).map_err(|_| {
        anyhow::anyhow!(
            "set {} to the capture key the filters were given",
            guard_core::capture::KEY_ENV
        )
    })?;
    let mut pg: Option<Rc<PgEngine>> = None;
    let mut pii: Option<Rc<PiiEngine>> = None;
    let mut sg: Option<SchemaPolicy> = None;
    for c in &configs {
        let bytes = std::fs::read(c).map_err(|e| anyhow::anyhow!("cannot read {c}: {e}"))?;
        if let Ok(e) = prompt_guard::engine::Engine::from_config_file(&bytes) {
            pg = Some(Rc::new(e));
        } else if let Ok(e) = PiiEngine::from_config_file(&bytes) {
            pii = Some(e);
        } else {
            let cfg = schema_guard::filter::parse_config(&bytes).map_err(|e| {
                anyhow::anyhow!("{c}: not a prompt-guard, pii-redact or schema-guard config: {e}")
            })?;
            sg = Some(cfg.select(None, None));
        }
    }
    let sg = match sg {
        Some(c) => c,
        None => schema_guard::filter::parse_config(b"{}")
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .select(None, None),
    };
    let pg = match pg {
        Some(e) => e,
        None => Rc::new(PgEngine::default_policy().map_err(|e| anyhow::anyhow!("{e}"))?),
    };
    let pii = match pii {
        Some(e) => e,
        None => Rc::new(PiiEngine::default_policy().map_err(|e| anyhow::anyhow!("{e}"))?),
    };
    let text =
        std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("cannot read {file}: {e}"))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut replayed, mut differ, mut skipped) = (0usize, 0usize, 0usize);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        for v in fields.values() {
            let Some(rec) = v
                .as_str()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
            else {
                continue;
            };
            let Some(cap) = rec.get("capture").filter(|c| c.is_object()) else {
                continue;
            };
            let filter = rec
                .get("filter")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let result = guard_core::capture::open(key.as_bytes(), cap)
                .map_err(|e| e.to_string())
                .and_then(|plain| {
                    serde_json::from_slice::<Value>(&plain).map_err(|e| e.to_string())
                })
                .and_then(|plain| match filter {
                    "prompt_guard" => replay_prompt_guard(&pg, &rec, &plain),
                    "pii_redact" => replay_pii(&pii, &rec, &plain),
                    "schema_guard" => replay_schema(&sg.settings, &rec, &plain),
                    other => Err(format!("records of {other} are not replayed")),
                });
            let line = match result {
                Ok(r) => {
                    replayed += 1;
                    if r.get("same") != Some(&Value::Bool(true)) {
                        differ += 1;
                    }
                    r
                }
                Err(e) => {
                    skipped += 1;
                    json!({"request_id": rec.get("request_id"), "filter": filter, "skipped": e})
                }
            };
            writeln!(out, "{line}")?;
        }
    }
    writeln!(
        out,
        "{}",
        json!({"summary": {"replayed": replayed, "differ": differ, "not_replayed": skipped}})
    )?;
    out.flush()?;
    if replayed == 0 {
        anyhow::bail!("no captured prompt-guard, pii-redact or schema-guard records in {file}");
    }
    if differ > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn request_of(plain: &Value) -> Result<RequestBody, String> {
    let api = plain
        .get("api")
        .and_then(Value::as_str)
        .and_then(ApiShape::from_name)
        .ok_or("capture has no api")?;
    let body = plain
        .get("request")
        .and_then(Value::as_str)
        .ok_or("capture has no request")?;
    if plain.get("truncated") == Some(&Value::Bool(true)) {
        return Err("the captured request was truncated (capture_max_bytes)".into());
    }
    RequestBody::parse(api, body.as_bytes()).map_err(|e| e.to_string())
}

fn hash8(h: Sha256) -> String {
    guard_core::config::hex_prefix(&h.finalize(), 8)
}

fn base(rec: &Value, replayed: &str, recorded_hash: Option<&Value>, hash: &str) -> Value {
    let recorded = rec
        .get("would")
        .or_else(|| rec.get("decision"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    json!({
        "request_id": rec.get("request_id"),
        "filter": rec.get("filter"),
        "policy_version": rec.get("policy_version"),
        "recorded": recorded,
        "replayed": replayed,
        "same": recorded == replayed,
        "input_hash": if recorded_hash.and_then(Value::as_str) == Some(hash) { "ok" } else { "mismatch" },
    })
}

fn replay_prompt_guard(engine: &PgEngine, rec: &Value, plain: &Value) -> Result<Value, String> {
    let req = request_of(plain)?;
    let mut scratch = engine.scratch();
    let mut hasher = Sha256::new();
    let mut path = Vec::new();
    let mut worst = Verdict::Allow;
    for (i, seg) in req.segments().iter().enumerate() {
        let scan = engine.scan(&mut scratch, &seg.text, seg.source);
        if scan.skipped {
            continue;
        }
        hasher.update(seg.text.as_bytes());
        if scan.verdict > worst {
            worst = scan.verdict;
        }
        path.push(json!({
            "segment": i, "source": seg.source.as_str(),
            "rules": scan.rules, "obfuscated": scan.obfuscated,
            "rule_score": round3(scan.rule_score), "model_score": round3(scan.model_score),
            "score": round3(scan.score), "flag_at": scan.flag_at, "block_at": scan.block_at,
            "verdict": scan.verdict.as_str(),
        }));
    }
    let mut out = base(
        rec,
        worst.as_str(),
        rec.get("scanned_sha256"),
        &hash8(hasher),
    );
    if let Some(o) = out.as_object_mut() {
        o.insert("path".into(), json!(path));
        if rec.get("second_opinion").is_some() {
            o.insert(
                "note".into(),
                json!("the recorded decision used a second opinion, which replay does not call"),
            );
        }
    }
    Ok(out)
}

fn replay_pii(engine: &PiiEngine, rec: &Value, plain: &Value) -> Result<Value, String> {
    let req = request_of(plain)?;
    let mut scratch = engine.scratch();
    let mut hasher = Sha256::new();
    let mut hits = Vec::new();
    let mut path = Vec::new();
    let mut counts: std::collections::BTreeMap<String, u32> = Default::default();
    let mut changed = false;
    let mut blocked = false;
    for (i, seg) in req.segments().iter().enumerate() {
        hasher.update(seg.text.as_bytes());
        engine.scan(&mut scratch, &seg.text, true, &mut hits);
        for h in hits.iter().filter(|h| h.placeholder.is_none()) {
            let name = engine.type_name(h.ty).to_string();
            let action = engine
                .type_info(h.ty)
                .map(|t| t.action(Direction::Request))
                .map_or("allow", |a| a.as_str());
            changed |= action != "allow";
            blocked |= action == "block";
            *counts.entry(name.clone()).or_insert(0) += 1;
            let chars = |b: usize| seg.text.get(..b).map_or(0, |t| t.chars().count());
            path.push(json!({
                "segment": i, "source": seg.source.as_str(), "type": name,
                "start": chars(h.start), "end": chars(h.end),
                "score": round3(h.score), "pattern": h.pattern, "action": action,
            }));
        }
    }
    let dry = engine.settings.dry_run;
    let decision = match (blocked, changed, dry) {
        (true, _, _) => "block",
        (false, true, false) => "modify",
        (false, true, true) => "redact",
        (false, false, _) => "allow",
    };
    let mut out = base(rec, decision, rec.get("scanned_sha256"), &hash8(hasher));
    let recorded_counts = rec
        .get("entities")
        .and_then(|e| e.get("request"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(o) = out.as_object_mut() {
        // The record holds the exchange's final decision; only the request side is replayed.
        // Its request side: a block, or a change when request entities were found.
        let recorded = o
            .get("recorded")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let request_side = match recorded {
            "block" | "redact" => recorded,
            "modify" if recorded_counts.as_object().is_some_and(|m| !m.is_empty()) => "modify",
            _ => "allow",
        }
        .to_string();
        let same = request_side == decision && recorded_counts == json!(counts);
        o.insert("recorded_request".into(), json!(request_side));
        o.insert("same".into(), json!(same));
        o.insert(
            "entities".into(),
            json!({"recorded": recorded_counts, "replayed": counts}),
        );
        o.insert("path".into(), json!(path));
    }
    Ok(out)
}

/// schema-guard: the answer (non-streamed JSON or a captured stream) against what the request
/// declared and the policy's schemas.
fn replay_schema(
    c: &schema_guard::filter::Compiled,
    rec: &Value,
    plain: &Value,
) -> Result<Value, String> {
    let req = request_of(plain)?;
    let api = req.shape();
    let request = plain
        .get("request")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let hash = guard_core::config::hex_prefix(&Sha256::digest(request.as_bytes()), 8);
    let (expect, unusable) = c.expect_for(&req);
    let answer = plain
        .get("response")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (findings, streamed) = match guard_core::body::ResponseBody::parse(api, answer.as_bytes()) {
        Ok(resp) => (expect.answer(&resp), false),
        Err(_) if answer.trim().is_empty() => (Vec::new(), false),
        Err(_) => {
            let mut parser = guard_core::sse::SseParser::new(1 << 20);
            let mut decoder = guard_core::stream::StreamDecoder::new(api);
            let mut asm = guard_core::stream::StreamAssembler::new(1 << 24);
            let mut events = Vec::new();
            parser
                .push(answer.as_bytes(), &mut |e| events.push(e))
                .and_then(|()| parser.flush_unterminated(&mut |e| events.push(e)))
                .map_err(|e| e.to_string())?;
            let mut deltas = Vec::new();
            for ev in &events {
                deltas.clear();
                if decoder.decode(ev, &mut deltas).is_ok() {
                    for d in &deltas {
                        asm.apply(d).map_err(|e| e.to_string())?;
                    }
                }
            }
            (
                expect.stream(
                    asm.result(),
                    &mut schema_guard::check::Progress::default(),
                    true,
                ),
                true,
            )
        }
    };
    let decision = if !unusable.is_empty()
        && c.settings.on_invalid_schema == schema_guard::filter::OnInvalidSchema::Block
    {
        "block"
    } else {
        c.decision_for(&findings, streamed)
    };
    let mut out = base(rec, decision, rec.get("request_sha256"), &hash);
    if let Some(o) = out.as_object_mut() {
        let path: Vec<Value> = findings
            .iter()
            .map(|f| {
                json!({"kind": f.kind.as_str(), "choice": f.choice, "tool": f.tool,
                       "violations": f.violations.iter().map(|v| json!({"path": v.path, "message": v.message})).collect::<Vec<_>>()})
            })
            .collect();
        o.insert("streamed".into(), json!(streamed));
        o.insert("path".into(), json!(path));
        if !unusable.is_empty() {
            o.insert("unusable_schemas".into(), json!(unusable));
        }
    }
    Ok(out)
}

fn round3(x: f32) -> f64 {
    (f64::from(x) * 1000.0).round() / 1000.0
}
