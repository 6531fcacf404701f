//! `guardctl schema` (validate JSON Lines against a schema) and `guardctl schema-suite` (the
//! official JSON-Schema-Test-Suite, pass rates per draft and per file, and throughput).

use anyhow::{anyhow, bail, Context};
use schema_guard::engine::{CompiledSchema, Dialect, Limits, Remotes};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `guardctl schema --schema FILE`: one JSON instance per line → `{"valid", "errors"}`.
pub(crate) fn run(args: &[String], usage: &str) -> anyhow::Result<()> {
    let file = match args {
        [flag, file] if flag == "--schema" => file,
        [flag] if flag == "--schema" => bail!("--schema needs a file\n{usage}"),
        _ => bail!("schema needs --schema FILE\n{usage}"),
    };
    let bytes = std::fs::read(file).map_err(|e| anyhow!("cannot read {file}: {e}"))?;
    let schema: Value =
        serde_json::from_slice(&bytes).map_err(|e| anyhow!("{file}: not valid json: {e}"))?;
    let compiled = CompiledSchema::compile(&schema, Limits::default(), &Remotes::default())
        .map_err(|e| anyhow!("{file}: {}", e.message()))?;
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let result = match serde_json::from_str::<Value>(&line) {
            Err(e) => json!({"error": format!("not json: {e}")}),
            Ok(instance) => {
                let errors = compiled.validate(&instance);
                json!({
                    "valid": errors.is_empty(),
                    "errors": errors
                        .iter()
                        .map(|v| json!({"path": v.path, "message": v.message}))
                        .collect::<Vec<_>>(),
                })
            }
        };
        writeln!(out, "{result}")?;
    }
    out.flush()?;
    Ok(())
}

const SUITE: &str = "json-schema-test-suite";
const DRAFTS: [(&str, Dialect); 2] = [
    ("draft2020-12", Dialect::Draft202012),
    ("draft7", Dialect::Draft7),
];

/// The suite's directory: `--data DIR` (the suite itself or its parent), else
/// `$GUARD_DATA_DIR/json-schema-test-suite`, else `../shared/data/json-schema-test-suite`.
fn suite_dir(flag: Option<&str>) -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = if let Some(d) = flag {
        vec![PathBuf::from(d), Path::new(d).join(SUITE)]
    } else if let Some(d) = std::env::var_os("GUARD_DATA_DIR").filter(|d| !d.is_empty()) {
        vec![PathBuf::from(d).join(SUITE)]
    } else {
        let mut v = Vec::new();
        if let Some(root) = Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
            v.push(root.join("..").join("shared").join("data").join(SUITE));
        }
        v.push(Path::new("..").join("shared").join("data").join(SUITE));
        v
    };
    for c in &candidates {
        if c.join("tests").is_dir() && c.join("remotes").is_dir() {
            return Ok(c.clone());
        }
    }
    let list: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "{SUITE} not found: looked for tests/ and remotes/ under {} (pass --data DIR or set GUARD_DATA_DIR)",
        list.join(", ")
    )
}

/// Every file under `remotes/`, keyed `http://localhost:1234/<relative path>`.
fn load_remotes(dir: &Path) -> anyhow::Result<Remotes> {
    let mut docs = HashMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                let rel = path.strip_prefix(dir)?;
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                let doc: Value = serde_json::from_slice(&std::fs::read(&path)?)
                    .with_context(|| format!("{}: not valid json", path.display()))?;
                docs.insert(format!("http://localhost:1234/{}", rel.join("/")), doc);
            }
        }
    }
    Ok(Remotes::new(docs))
}

#[derive(Default, Clone, Copy)]
struct Tally {
    passed: usize,
    total: usize,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.passed += o.passed;
        self.total += o.total;
    }
    fn rate(&self) -> f64 {
        if self.total == 0 {
            return 100.0;
        }
        self.passed as f64 * 100.0 / self.total as f64
    }
    fn show(&self) -> String {
        format!("{:>5}/{:<5} {:6.2}%", self.passed, self.total, self.rate())
    }
}

/// Run one suite file: every case's schema compiled (a schema that does not compile fails all
/// its tests), every test's verdict compared with `valid`. Failures are pushed as descriptions.
fn run_file(
    path: &Path,
    dialect: Dialect,
    remotes: &Remotes,
    failures: &mut Vec<String>,
) -> anyhow::Result<Tally> {
    let cases: Value = serde_json::from_slice(&std::fs::read(path)?)
        .with_context(|| format!("{}: not valid json", path.display()))?;
    let cases = cases
        .as_array()
        .ok_or_else(|| anyhow!("{}: not an array of cases", path.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.unwrap_or_default();
    let mut tally = Tally::default();
    for case in cases {
        let desc = case
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("");
        let tests = case.get("tests").and_then(Value::as_array);
        let tests = tests.map(Vec::as_slice).unwrap_or_default();
        let schema = case.get("schema").unwrap_or(&Value::Null);
        let compiled = CompiledSchema::compile_as(schema, dialect, Limits::default(), remotes);
        for t in tests {
            tally.total += 1;
            let want = t.get("valid").and_then(Value::as_bool).unwrap_or(false);
            let data = t.get("data").unwrap_or(&Value::Null);
            let tdesc = t.get("description").and_then(Value::as_str).unwrap_or("");
            match &compiled {
                Ok(c) => {
                    let got = c.validate(data).is_empty();
                    if got == want {
                        tally.passed += 1;
                    } else {
                        failures.push(format!(
                            "{name}: {desc} / {tdesc}: expected {}",
                            if want { "valid" } else { "invalid" }
                        ));
                    }
                }
                Err(e) => failures.push(format!(
                    "{name}: {desc} / {tdesc}: schema did not compile: {}",
                    e.message()
                )),
            }
        }
    }
    Ok(tally)
}

fn json_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// `guardctl schema-suite [--data DIR] [--failures]`.
pub(crate) fn suite(args: &[String], usage: &str) -> anyhow::Result<()> {
    let mut data: Option<&str> = None;
    let mut show_failures = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--data" => {
                data = Some(
                    it.next()
                        .ok_or_else(|| anyhow!("--data needs a directory"))?
                        .as_str(),
                )
            }
            "--failures" => show_failures = true,
            other => bail!("unknown argument {other:?}\n{usage}"),
        }
    }
    let dir = suite_dir(data)?;
    let remotes = load_remotes(&dir.join("remotes"))?;
    println!(
        "JSON-Schema-Test-Suite at {} ({} remote documents preloaded); format asserted",
        dir.display(),
        remotes.len()
    );
    for (draft, dialect) in DRAFTS {
        let tests = dir.join("tests").join(draft);
        let mut failures = Vec::new();
        let mut required = Tally::default();
        let mut format = Tally::default();
        let mut optional_format = Tally::default();
        println!("\n{draft}");
        for f in json_files(&tests)? {
            let t = run_file(&f, dialect, &remotes, &mut failures)?;
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            if name == "format.json" {
                format.add(t);
            } else {
                required.add(t);
            }
            println!("  {name:<44} {}", t.show());
        }
        for f in json_files(&tests.join("optional").join("format"))? {
            let t = run_file(&f, dialect, &remotes, &mut failures)?;
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
            optional_format.add(t);
            println!(
                "  optional/format/{:<28} {}",
                name.unwrap_or_default(),
                t.show()
            );
        }
        println!(
            "  {draft} required (without format.json)   {}",
            required.show()
        );
        println!(
            "  {draft} format.json (annotation-only cases expected to fail) {}",
            format.show()
        );
        println!(
            "  {draft} optional/format          {}",
            optional_format.show()
        );
        if show_failures {
            for f in &failures {
                println!("    FAIL {f}");
            }
        }
    }
    throughput()
}

/// Validation throughput on a realistic tool-call arguments schema and instance: MB/s of
/// instance JSON validated (median of rounds), for a valid and an invalid instance.
fn throughput() -> anyhow::Result<()> {
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 2000},
            "limit": {"type": "integer", "minimum": 1, "maximum": 100},
            "since": {"type": "string", "format": "date-time"},
            "contact": {"type": "string", "format": "email"},
            "request_id": {"type": "string", "format": "uuid"},
            "callback": {"type": "string", "format": "uri"},
            "sort": {"enum": ["relevance", "date", "price"]},
            "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,31}$"}, "uniqueItems": true, "maxItems": 20},
            "filters": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "field": {"type": "string"},
                        "op": {"enum": ["eq", "ne", "lt", "gt", "in"]},
                        "value": {"type": ["string", "number", "boolean", "array"]}
                    },
                    "required": ["field", "op", "value"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["query", "limit"],
        "additionalProperties": false
    });
    let valid = json!({
        "query": "noise-cancelling headphones under 200 euros with good battery life",
        "limit": 20,
        "since": "2024-05-01T00:00:00Z",
        "contact": "shopper@example.com",
        "request_id": "123e4567-e89b-12d3-a456-426614174000",
        "callback": "https://hooks.example.com/search/done",
        "sort": "price",
        "tags": ["audio", "headphones", "travel", "anc"],
        "filters": [
            {"field": "price", "op": "lt", "value": 200},
            {"field": "brand", "op": "in", "value": ["sony", "bose", "sennheiser"]},
            {"field": "in_stock", "op": "eq", "value": true}
        ]
    });
    let invalid = json!({
        "query": "",
        "limit": 500,
        "since": "last tuesday",
        "contact": "not-an-email",
        "sort": "random",
        "tags": ["Audio", "audio", "audio"],
        "filters": [{"field": "price", "op": "lt"}],
        "extra": 1
    });
    let compiled = CompiledSchema::compile(&schema, Limits::default(), &Remotes::default())
        .map_err(|e| anyhow!("throughput schema: {}", e.message()))?;
    println!("\nthroughput (tool-call arguments schema, median of 7 rounds)");
    for (name, instance, want_valid) in [("valid", &valid, true), ("invalid", &invalid, false)] {
        let bytes = instance.to_string().len();
        let got = compiled.validate(instance);
        if got.is_empty() != want_valid {
            bail!("throughput {name} instance: unexpected verdict {got:?}");
        }
        let iterations = 20_000usize;
        let mut rates = Vec::new();
        for _ in 0..7 {
            let start = Instant::now();
            let mut errors = 0usize;
            for _ in 0..iterations {
                errors +=
                    std::hint::black_box(compiled.validate(std::hint::black_box(instance))).len();
            }
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            if errors != got.len() * iterations {
                bail!("throughput {name}: error count changed between runs");
            }
            rates.push((bytes * iterations) as f64 / secs / 1e6);
        }
        rates.sort_by(f64::total_cmp);
        let median = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
        println!(
            "  {name:<8} {bytes} bytes, {} errors: {median:8.1} MB/s, {:8.0} validations/s",
            got.len(),
            median * 1e6 / bytes as f64
        );
    }
    Ok(())
}
