//! `guardctl`: the guard engines on the command line (JSON Lines in, JSON Lines out).
//!
//! ```text
//! guardctl lint FILE                      validate a filter configuration (exit 2 when invalid)
//! guardctl injection [--config FILE] [--source user|tool|document]
//!                                         {"text": ...} per line → {"verdict","score","rules"}
//! guardctl segments [--api SHAPE]         read request bodies (one JSON per line), print their text segments
//! guardctl train-injection [--data DIR] [--out FILE]     train the prompt-guard model (train split)
//! guardctl eval-injection [--data DIR] [--split test|train] [--config FILE] [--json]
//! ```
//!
//! Without `--config`, the policy is the default shipped in `envoy/policies/`.

use guard_core::api::ApiShape;
use guard_core::body::RequestBody;
use guard_core::config::{FailurePolicy, FilterConfig};
use guard_host::GuardFilter;
use llm_telemetry::Telemetry;
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::process::ExitCode;

mod eval;
mod train;

const USAGE: &str = "usage: guardctl <lint FILE | injection [--config FILE] [--source user|tool|document] | segments [--api SHAPE] | train-injection [--data DIR] [--out FILE] | eval-injection [--data DIR] [--split test|train] [--config FILE] [--json]>";

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
        Some("injection") => injection(args.get(1..).unwrap_or_default()),
        Some("train-injection") => train::run(args.get(1..).unwrap_or_default()),
        Some("eval-injection") => eval::run(args.get(1..).unwrap_or_default()),
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

/// Validate a filter configuration with the same code as the filter's `on_configure`.
fn lint(file: &str) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {file}: {e}"))?;
    let config = FilterConfig::parse::<<Telemetry as GuardFilter>::Settings, _>(
        &bytes,
        FailurePolicy::FailOpen,
        Telemetry::compile,
    )
    .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    let names: Vec<&str> = config.policy_names().collect();
    println!(
        "{}",
        json!({"ok": true, "name": config.name, "version": config.version, "policies": names})
    );
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
