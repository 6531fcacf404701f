//! `guardctl replay FILE [--config FILE]...`: re-run every captured audit record of an access log
//! through the same engine and policy, check the input hash, print the decision path, and
//! report records whose replayed decision differs from the recorded one.
//!
//! Captures are decrypted with `GUARD_CAPTURE_KEY`. Replayed filters, request and answer:
//! prompt-guard (per segment: normalisation steps, views, decoded payloads, every rule match with
//! its position and weight, rule and model scores against the thresholds, the verdict; then the
//! answer's exfiltration links), pii-redact (the request pass with its pseudonyms, every entity
//! with type, segment, char offsets, score and action; then the answer's entities and restores)
//! and schema-guard (the answer against the declared schemas). `--config` takes a whole filter
//! configuration (its `default` policy is used for that filter's records); without it, the
//! shipped default policy.

use guard_core::api::ApiShape;
use guard_core::body::{RequestBody, ResponseBody};
use guard_core::segment::Source;
use guard_core::stream::Assembled;
use guard_core::verdict::{AuditRecord, Decision};
use pii_redact::engine::{Action, Direction, Engine as PiiEngine};
use pii_redact::redact::{Stats, TextKind, Vault};
use pii_redact::stream::{Buffers, Pass};
use prompt_guard::engine::{AnswerAction, Engine as PgEngine, Verdict};
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

/// A captured answer, as the filter judged it: a JSON body, or a stream folded into its final
/// text per choice.
enum Answer {
    None,
    Json(ResponseBody),
    Stream(Assembled),
}

fn answer_of(api: ApiShape, plain: &Value) -> Result<Answer, String> {
    let answer = plain
        .get("response")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if answer.trim().is_empty() {
        return Ok(Answer::None);
    }
    if let Ok(resp) = ResponseBody::parse(api, answer.as_bytes()) {
        return Ok(Answer::Json(resp));
    }
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
    Ok(Answer::Stream(asm.into_result()))
}

/// Text a person reads in a streamed answer, per choice: content, reasoning, refusal.
fn stream_texts(a: &Assembled) -> impl Iterator<Item = (usize, &'static str, &str)> {
    a.choices.iter().enumerate().flat_map(|(i, c)| {
        [
            (i, "content", c.content.as_str()),
            (i, "reasoning", c.reasoning.as_str()),
            (i, "refusal", c.refusal.as_str()),
        ]
    })
}

fn replay_prompt_guard(engine: &PgEngine, rec: &Value, plain: &Value) -> Result<Value, String> {
    let req = request_of(plain)?;
    let mut scratch = engine.scratch();
    let mut hasher = Sha256::new();
    let mut path = Vec::new();
    let mut worst = Verdict::Allow;
    for (i, seg) in req.segments().iter().enumerate() {
        let ex = engine.explain(&mut scratch, &seg.text, seg.source);
        let scan = &ex.scan;
        if scan.skipped {
            continue;
        }
        hasher.update(seg.text.as_bytes());
        if scan.verdict > worst {
            worst = scan.verdict;
        }
        path.push(json!({
            "segment": i, "source": seg.source.as_str(), "chars": seg.text.chars().count(),
            "normalisation": ex.steps, "views": ex.views, "decoded": ex.decoded,
            "matches": ex.hits.iter().map(|h| json!({
                "rule": h.rule, "category": h.category, "weight": round3(h.weight),
                "view": h.view, "decoded": h.decoded, "start": h.start, "end": h.end,
            })).collect::<Vec<_>>(),
            "rules": scan.rules, "obfuscated": scan.obfuscated,
            "rule_score": round3(scan.rule_score), "model_score": round3(scan.model_score),
            "score": round3(scan.score), "flag_at": scan.flag_at, "block_at": scan.block_at,
            "verdict": scan.verdict.as_str(),
        }));
    }
    // The request's verdict as the filter carries it out (dry run: recorded as `would`).
    let dry = engine.settings.dry_run;
    let mut decision = AuditRecord::default();
    let mut would: Option<&str> = None;
    match worst {
        Verdict::Allow => {}
        v if dry => would = Some(v.as_str()),
        Verdict::Flag => decision.decide(Decision::Flag, ""),
        Verdict::Block => decision.decide(Decision::Block, ""),
    }
    // The answer: exfiltration links in what the assistant wrote.
    let mut links = 0usize;
    if engine.exfil().enabled() {
        let mut buf = String::new();
        match answer_of(req.shape(), plain)? {
            Answer::None => {}
            Answer::Json(resp) => {
                for seg in resp.segments() {
                    if matches!(seg.source, Source::Assistant | Source::Reasoning) {
                        links += engine.exfil().rewrite(&seg.text, &mut buf);
                    }
                }
            }
            Answer::Stream(a) => {
                for (_, _, text) in stream_texts(&a) {
                    links += engine.exfil().rewrite(text, &mut buf);
                }
            }
        }
    }
    if links > 0 {
        if dry {
            would = Some("neutralize");
        } else if engine.exfil().action == AnswerAction::Block {
            decision.decide(Decision::Block, "");
        } else {
            decision.decide(Decision::Modify, "");
        }
    }
    let replayed = would.unwrap_or(decision.decision.as_str());
    let mut out = base(rec, replayed, rec.get("scanned_sha256"), &hash8(hasher));
    if let Some(o) = out.as_object_mut() {
        let recorded_links = rec.get("exfil_links").and_then(Value::as_u64).unwrap_or(0);
        if recorded_links != links as u64 {
            o.insert("same".into(), json!(false));
        }
        o.insert("path".into(), json!(path));
        o.insert(
            "exfil_links".into(),
            json!({"recorded": recorded_links, "replayed": links}),
        );
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
    let mut bufs = Buffers::default();
    let mut vault = Vault::new(engine.settings.max_pseudonyms);
    let (mut req_stats, mut resp_stats) = (Stats::default(), Stats::default());
    let mut hasher = Sha256::new();
    let segments = req.segments();
    // The same pass the filter runs (placeholders reserved, pseudonyms issued), then a scan
    // of each segment for the decision path.
    Pass {
        engine,
        scratch: &mut scratch,
        bufs: &mut bufs,
        dir: Direction::Request,
        vault: &mut vault,
        stats: &mut req_stats,
    }
    .segments(&segments, Some(&mut hasher));
    let mut hits = Vec::new();
    let mut path = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        engine.scan(&mut scratch, &seg.text, true, &mut hits);
        for h in hits.iter().filter(|h| h.placeholder.is_none()) {
            let chars = |b: usize| seg.text.get(..b).map_or(0, |t| t.chars().count());
            path.push(json!({
                "direction": "request", "segment": i, "source": seg.source.as_str(),
                "type": engine.type_name(h.ty), "start": chars(h.start), "end": chars(h.end),
                "score": round3(h.score), "pattern": h.pattern,
                "action": engine.type_info(h.ty).map_or("allow", |t| t.action(Direction::Request).as_str()),
            }));
        }
    }
    let dry = engine.settings.dry_run;
    let request_blocked = !req_stats.blocked.is_empty();
    // The answer, judged only when the filter read one (a blocked request has none).
    let judged_answer = !request_blocked || dry;
    if judged_answer && (engine.settings.responses || vault.has_restorable()) {
        let mut pass = Pass {
            engine,
            scratch: &mut scratch,
            bufs: &mut bufs,
            dir: Direction::Response,
            vault: &mut vault,
            stats: &mut resp_stats,
        };
        match answer_of(req.shape(), plain)? {
            Answer::None => {}
            Answer::Json(resp) => {
                pass.segments(&resp.segments(), None);
            }
            Answer::Stream(a) => {
                for (_, _, text) in stream_texts(&a) {
                    pass.text(text, TextKind::Plain);
                }
                for c in &a.choices {
                    for t in &c.tool_calls {
                        pass.text(&t.arguments, TextKind::JsonRaw);
                    }
                }
            }
        }
    }
    // The decision as the filter reaches it: the request side in the body phase, the answer
    // side when the exchange ends.
    let mut rec_out = AuditRecord::default();
    let changed = |s: &Stats| s.found.keys().any(|(_, a)| !matches!(a, Action::Allow));
    let mut would = None;
    if dry {
        if req_stats.total() > 0 {
            would = Some(if request_blocked { "block" } else { "redact" });
        }
    } else if request_blocked {
        rec_out.decide(Decision::Block, "");
    } else {
        if changed(&req_stats) {
            rec_out.decide(Decision::Modify, "");
        }
        if !resp_stats.blocked.is_empty() {
            rec_out.decide(Decision::Block, "");
        } else if (resp_stats.total() > 0 && changed(&resp_stats))
            || (resp_stats.restored > 0 && rec_out.decision == Decision::Allow)
        {
            rec_out.decide(Decision::Modify, "");
        }
    }
    let replayed = would.unwrap_or(rec_out.decision.as_str());
    let mut out = base(rec, replayed, rec.get("scanned_sha256"), &hash8(hasher));
    let by_dir = |s: &Stats| json!(s.by_type(engine));
    let mut replayed_entities = serde_json::Map::new();
    for (dir, s) in [("request", &req_stats), ("response", &resp_stats)] {
        if s.total() > 0 {
            replayed_entities.insert(dir.into(), by_dir(s));
        }
    }
    let recorded_entities = rec.get("entities").cloned().unwrap_or_else(|| json!({}));
    let recorded_restored = rec.get("restored").and_then(Value::as_u64).unwrap_or(0);
    if let Some(o) = out.as_object_mut() {
        let same = o.get("same") == Some(&Value::Bool(true))
            && recorded_entities == Value::Object(replayed_entities.clone())
            && recorded_restored == u64::from(resp_stats.restored);
        o.insert("same".into(), json!(same));
        o.insert(
            "entities".into(),
            json!({"recorded": recorded_entities, "replayed": replayed_entities}),
        );
        o.insert(
            "restored".into(),
            json!({"recorded": recorded_restored, "replayed": resp_stats.restored}),
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
    let (findings, streamed) = match answer_of(api, plain)? {
        Answer::None => (Vec::new(), false),
        Answer::Json(resp) => (expect.answer(&resp), false),
        Answer::Stream(a) => (
            expect.stream(&a, &mut schema_guard::check::Progress::default(), true),
            true,
        ),
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
