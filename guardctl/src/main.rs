//! `guardctl`: the guard engines on the command line (JSON Lines in, JSON Lines out).
//!
//! ```text
//! guardctl lint FILE                      validate a filter configuration or a whole policy file
//!                                         (envoy/policy.yaml; exit 2 when invalid)
//! guardctl render POLICY --target envoy|istio|istio-wasmplugin [--digests FILE | --no-digests]
//!                                         the Envoy http_filters / Istio WasmPlugins / Istio
//!                                         EnvoyFilters of a policy file (docs/policy.md)
//! guardctl injection [--config FILE] [--source user|tool|document]
//!                                         {"text": ...} per line → {"verdict","score","rules"}
//! guardctl pii [--config FILE]           {"text": ...} per line → {"spans": [{"start","end","type"}], "redacted"}
//! guardctl schema --schema FILE          one JSON instance per line → {"valid", "errors": [{"path","message"}]}
//! guardctl segments [--api SHAPE]         read request bodies (one JSON per line), print their text segments
//! guardctl train-injection [--data DIR] [--out FILE]     train the prompt-guard model (train split)
//! guardctl eval-injection [--data DIR] [--split test|train] [--config FILE] [--json]
//! guardctl eval-pii [--data DIR] [--split test|train] [--config FILE] [--errors] [--json]
//! guardctl schema-suite [--data DIR] [--failures]   JSON-Schema-Test-Suite pass rates, throughput
//! guardctl audit verify FILE              check the audit records' HMAC chains in an access log
//!                                         (key from GUARD_AUDIT_KEY; exit 1 when a record was
//!                                         edited, dropped or reordered)
//! guardctl replay FILE [--config FILE]... re-run captured records (key from GUARD_CAPTURE_KEY),
//!                                         print decision paths, exit 1 when a decision differs
//! ```
//!
//! Without `--config`, the policy is the default shipped in `envoy/policies/`. `--config` takes a
//! whole filter configuration and uses its `default` policy.
//!
//! `guardctl pii` reports every detection whatever its action, with `start`/`end` in Unicode
//! scalar values (chars), end exclusive; `redacted` is the text with the policy's request
//! actions carried out (placeholders numbered per line), or the text itself when the policy
//! changes nothing (no hit, `allow`, `dry_run`, or `requests: false`).

use guard_core::api::ApiShape;
use guard_core::body::RequestBody;
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::process::ExitCode;

mod eval;
mod eval_pii;
mod policy;
mod render;
mod replay;
mod schema;
mod synthetic;
mod train;

const USAGE: &str = "usage: guardctl <lint FILE | render POLICY --target envoy|istio|istio-wasmplugin [--digests FILE | --no-digests] | injection [--config FILE] [--source user|tool|document] | pii [--config FILE] | schema --schema FILE | segments [--api SHAPE] | train-injection [--data DIR] [--out FILE] | eval-injection [--data DIR] [--split test|train] [--config FILE] [--json] | eval-pii [--data DIR] [--split test|train] [--config FILE] [--errors] [--json] | schema-suite [--data DIR] [--failures] | audit verify FILE | replay FILE [--config FILE]...>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guardctl: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("lint") => {
            let [_, file] = args else {
                anyhow::bail!("{USAGE}")
            };
            lint(file)
        }
        Some("render") => render_cmd(args.get(1..).unwrap_or_default()),
        Some("injection") => injection(args.get(1..).unwrap_or_default()),
        Some("train-injection") => train::run(args.get(1..).unwrap_or_default()),
        Some("eval-injection") => eval::run(args.get(1..).unwrap_or_default()),
        Some("pii") => pii(args.get(1..).unwrap_or_default()),
        Some("eval-pii") => eval_pii::run(args.get(1..).unwrap_or_default()),
        Some("schema") => schema::run(args.get(1..).unwrap_or_default(), USAGE),
        Some("schema-suite") => schema::suite(args.get(1..).unwrap_or_default(), USAGE),
        Some("replay") => replay::run(args.get(1..).unwrap_or_default(), USAGE),
        Some("audit") => match args.get(1..) {
            Some([verb, file]) if verb == "verify" => audit_verify(file),
            _ => anyhow::bail!("{USAGE}"),
        },
        Some("segments") => {
            let api = match args.get(1..) {
                Some([flag, v]) if flag == "--api" => Some(
                    ApiShape::from_name(v)
                        .ok_or_else(|| anyhow::anyhow!("unknown api shape {v:?}"))?,
                ),
                Some([]) | None => None,
                _ => anyhow::bail!("{USAGE}"),
            };
            segments(api)
        }
        _ => anyhow::bail!("{USAGE}"),
    }
}

/// Validate a filter configuration, or a whole policy file, with the same code as the filters'
/// `on_configure`. A single filter's configuration is recognised by its settings: prompt-guard's,
/// pii-redact's, schema-guard's, rag-acl's, approval-gate's, else llm-telemetry's. A policy file
/// (a filter member such as `pii_redact`, or `deployment`, at the top) gets every member checked
/// by its own filter's parser and one summary line per filter; errors name the JSON path with the
/// member prefix. YAML is accepted as well as JSON.
fn lint(file: &str) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {file}: {e}"))?;
    // JSON as the filter sees it; YAML (or a policy file) turned into JSON first.
    let parsed = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|t| policy::parse_text(t).ok());
    if let Some(root) = parsed.as_ref().filter(|v| policy::is_policy_file(v)) {
        return lint_policy_file(file, root);
    }
    let bytes = match parsed {
        Some(v @ Value::Object(_)) if serde_json::from_slice::<Value>(&bytes).is_err() => {
            serde_json::to_vec(&v)?
        }
        _ => bytes,
    };
    let mut errors = Vec::new();
    for filter in policy::RECOGNITION_ORDER {
        match policy::parse_member(filter, &bytes) {
            Ok((name, version, policies)) => {
                println!(
                    "{}",
                    json!({"ok": true, "filter": filter, "name": name, "version": version, "policies": policies})
                );
                return Ok(());
            }
            Err(e) => errors.push(format!("{filter}: {e}")),
        }
    }
    anyhow::bail!(
        "{file}: not a valid config of any filter ({})",
        errors.join("; ")
    )
}

/// `guardctl lint POLICY` of a whole policy file: one summary line per valid filter member on
/// stdout, every error (JSON path first) on stderr, exit 2 when there is any.
fn lint_policy_file(file: &str, root: &Value) -> anyhow::Result<()> {
    match policy::validate(root) {
        Ok(p) => {
            for m in &p.members {
                let (name, version, policies) = &m.summary;
                println!(
                    "{}",
                    json!({"ok": true, "filter": m.filter.member, "name": name, "version": version, "policies": policies})
                );
            }
            Ok(())
        }
        Err(errors) => {
            // The members that passed still get their line.
            if let Some(obj) = root.as_object() {
                for f in &policy::FILTERS {
                    if let Some(config) = obj.get(f.member).filter(|c| c.is_object()) {
                        if let Ok((name, version, policies)) =
                            policy::parse_member(f.member, &policy::member_bytes(config))
                        {
                            println!(
                                "{}",
                                json!({"ok": true, "filter": f.member, "name": name, "version": version, "policies": policies})
                            );
                        }
                    }
                }
            }
            anyhow::bail!(
                "{file}: {} error{}:\n  {}",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" },
                errors.join("\n  ")
            )
        }
    }
}

/// `guardctl render POLICY --target envoy|istio|istio-wasmplugin [--digests FILE | --no-digests]`.
fn render_cmd(args: &[String]) -> anyhow::Result<()> {
    let mut file = None;
    let mut target = None;
    let mut digests: Option<Option<String>> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--target" => {
                let t = it.next().ok_or_else(|| {
                    anyhow::anyhow!("--target needs envoy, istio or istio-wasmplugin")
                })?;
                target = Some(render::Target::parse(t).ok_or_else(|| {
                    anyhow::anyhow!("--target must be envoy, istio or istio-wasmplugin, not {t:?}")
                })?);
            }
            "--digests" => {
                let f = it
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--digests needs a file"))?;
                digests = Some(Some(f.clone()));
            }
            "--no-digests" => digests = Some(None),
            other if other.starts_with("--") => {
                anyhow::bail!("unknown argument {other:?}\n{USAGE}")
            }
            other if file.is_none() => file = Some(other.to_string()),
            other => anyhow::bail!("unexpected argument {other:?}\n{USAGE}"),
        }
    }
    let (Some(file), Some(target)) = (file, target) else {
        anyhow::bail!("render needs a policy file and --target\n{USAGE}")
    };
    let text =
        std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("cannot read {file}: {e}"))?;
    let root = policy::parse_text(&text).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    if !policy::is_policy_file(&root) {
        anyhow::bail!(
            "{file}: not a policy file (no member named after a filter, e.g. pii_redact, and no deployment)"
        );
    }
    let p = policy::validate(&root).map_err(|errors| {
        anyhow::anyhow!("{file}: invalid policy file:\n  {}", errors.join("\n  "))
    })?;
    let tag = p.deployment.images.tag().to_string();
    let digests = match digests {
        Some(None) => render::Digests::default(),
        Some(Some(f)) => load_digests(&f, &tag)?,
        None if target != render::Target::Envoy
            && std::path::Path::new(DEFAULT_DIGESTS).exists() =>
        {
            eprintln!("guardctl: sha256 from {DEFAULT_DIGESTS} (--no-digests to leave it out)");
            load_digests(DEFAULT_DIGESTS, &tag)?
        }
        None => render::Digests::default(),
    };
    let out = render::render(&p, target, &digests, &file)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Where `make oci` writes the image digests.
const DEFAULT_DIGESTS: &str = "target/oci/digests.json";

fn load_digests(file: &str, tag: &str) -> anyhow::Result<render::Digests> {
    let (d, warnings) = render::Digests::load(std::path::Path::new(file), tag)?;
    for w in warnings {
        eprintln!("guardctl: warning: {w}");
    }
    Ok(d)
}

/// `guardctl audit verify FILE`: regroup the chained records of an access log by chain and
/// sequence, check every MAC. Prints a JSON summary; exit 1 when anything is wrong.
fn audit_verify(file: &str) -> anyhow::Result<()> {
    let key = std::env::var(guard_core::audit::KEY_ENV).map_err(|_| {
        anyhow::anyhow!(
            "set {} to the audit key the filters were given",
            guard_core::audit::KEY_ENV
        )
    })?;
    let text =
        std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("cannot read {file}: {e}"))?;
    let report = guard_core::audit::verify_log(&text, key.as_bytes());
    println!(
        "{}",
        json!({"ok": report.ok(), "records": report.records, "chains": report.chains, "problems": report.problems})
    );
    if report.ok() {
        Ok(())
    } else {
        std::process::exit(1)
    }
}

/// `guardctl injection`: JSON Lines of `{"text": ...}` → the policy's verdict for each (the
/// verdict the policy gives, even when the policy is in dry run).
fn injection(args: &[String]) -> anyhow::Result<()> {
    use guard_core::segment::Source;
    let mut config: Option<String> = None;
    let mut source = Source::User;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => {
                config = Some(
                    it.next()
                        .ok_or_else(|| anyhow::anyhow!("--config needs a file"))?
                        .clone(),
                )
            }
            "--source" => {
                source = match it.next().map(String::as_str) {
                    Some("user") => Source::User,
                    Some("tool") => Source::ToolResult,
                    Some("document") => Source::Document,
                    other => {
                        anyhow::bail!("--source must be user, tool or document, not {other:?}")
                    }
                }
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let engine = match &config {
        Some(f) => {
            let bytes = std::fs::read(f).map_err(|e| anyhow::anyhow!("cannot read {f}: {e}"))?;
            prompt_guard::engine::Engine::from_config_file(&bytes)
                .map_err(|e| anyhow::anyhow!("{f}: {e}"))?
        }
        None => prompt_guard::engine::Engine::default_policy()
            .map_err(|e| anyhow::anyhow!("default policy: {e}"))?,
    };
    let mut scratch = engine.scratch();
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let result = match serde_json::from_str::<Value>(&line) {
            Err(e) => json!({"error": format!("not json: {e}")}),
            Ok(v) => match v.get("text").and_then(Value::as_str) {
                None => json!({"error": "missing string field \"text\""}),
                Some(text) => {
                    let scan = engine.scan(&mut scratch, text, source);
                    json!({
                        "verdict": scan.verdict.as_str(),
                        "score": (f64::from(scan.score) * 10000.0).round() / 10000.0,
                        "rules": scan.rules,
                    })
                }
            },
        };
        writeln!(out, "{result}")?;
    }
    out.flush()?;
    Ok(())
}

/// `guardctl pii`: JSON Lines of `{"text": ...}` → every detection (char offsets) and the text
/// as the policy rewrites it in a request.
fn pii(args: &[String]) -> anyhow::Result<()> {
    use pii_redact::engine::Direction;
    use pii_redact::redact::{Stats, TextKind, Vault};
    use pii_redact::stream::{rewrite, Buffers};
    let config = match args {
        [] => None,
        [flag, file] if flag == "--config" => Some(file.as_str()),
        [flag] if flag == "--config" => anyhow::bail!("--config needs a file\n{USAGE}"),
        _ => anyhow::bail!("unknown arguments {args:?}\n{USAGE}"),
    };
    let engine = eval_pii::load_engine(config)?;
    let mut scratch = engine.scratch();
    let mut hits = Vec::new();
    let mut bufs = Buffers::default();
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let result = match serde_json::from_str::<Value>(&line) {
            Err(e) => json!({"error": format!("not json: {e}")}),
            Ok(v) => match v.get("text").and_then(Value::as_str) {
                None => json!({"error": "missing string field \"text\""}),
                Some(text) => {
                    let spans = eval_pii::detect(&engine, &mut scratch, text, &mut hits);
                    // Each line is its own request: its own placeholder numbers.
                    let mut vault = Vault::new(engine.settings.max_pseudonyms);
                    let redacted = if engine.settings.requests {
                        rewrite(
                            &engine,
                            &mut scratch,
                            &mut bufs,
                            Direction::Request,
                            text,
                            TextKind::Plain,
                            &mut vault,
                            &mut Stats::default(),
                        )
                    } else {
                        None
                    };
                    json!({
                        "spans": spans
                            .iter()
                            .map(|s| json!({"start": s.start, "end": s.end, "type": s.ty}))
                            .collect::<Vec<_>>(),
                        "redacted": redacted.as_deref().unwrap_or(text),
                    })
                }
            },
        };
        writeln!(out, "{result}")?;
    }
    out.flush()?;
    Ok(())
}

/// JSON Lines: one request body per line → its segments (source, JSON pointer, text).
fn segments(api: Option<ApiShape>) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let result = match serde_json::from_str::<Value>(&line) {
            Err(e) => json!({"error": format!("not json: {e}")}),
            Ok(v) => match api.or_else(|| ApiShape::sniff_request(&v)) {
                None => json!({"error": "cannot tell the api shape; pass --api"}),
                Some(shape) => match RequestBody::from_value(shape, v) {
                    Err(e) => json!({"error": e.to_string()}),
                    Ok(body) => json!({
                        "api": shape.as_str(),
                        "segments": body.segments().iter().map(|s| json!({
                            "source": s.source.as_str(),
                            "path": s.path.to_string(),
                            "text": s.text,
                        })).collect::<Vec<_>>(),
                    }),
                },
            },
        };
        writeln!(out, "{result}")?;
    }
    Ok(())
}
