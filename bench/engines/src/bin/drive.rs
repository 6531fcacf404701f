//! Native cost of one whole exchange through each filter's driver (guard-host's `GuardStream`
//! with the recording fake host): a 4 KB chat request and a 1 KB JSON answer, the shipped
//! default policies. Shows what the adapter adds around the engines (buffering, parsing,
//! hashing, the audit record and its MAC, metrics); the fake host's own bookkeeping is
//! included, so read it as an upper bound. `cargo run --release -p bench-engines --bin drive`.

use guard_host::driver::{GuardFilter, GuardStream};
use guard_host::fake::FakeHost;
use guard_host::metrics::Metrics;
use guard_host::{Dir, Host};
use serde_json::json;
use std::rc::Rc;
use std::time::Instant;

use bench_engines::chat_prompt;

fn run<F: GuardFilter>(
    policy: &str,
    request: &[u8],
    answer: &[u8],
    n: usize,
) -> anyhow::Result<(f64, String)> {
    let host = Rc::new(FakeHost::new());
    let cfg = guard_core::config::FilterConfig::parse::<F::Settings, _>(
        policy.as_bytes(),
        F::DEFAULT_FAILURE,
        F::compile,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let metrics = Rc::new(Metrics::new(host.clone() as Rc<dyn Host>));
    let cfg = Rc::new(cfg);
    let shared = Rc::new(F::init_shared(&metrics, &cfg));
    let t = Instant::now();
    for _ in 0..n {
        let mut s = GuardStream::<F>::new(Rc::clone(&cfg), Rc::clone(&shared), Rc::clone(&metrics));
        host.set_header(Dir::Request, ":method", Some(b"POST"));
        host.set_header(Dir::Request, ":path", Some(b"/v1/chat/completions"));
        host.set_header(Dir::Request, "content-type", Some(b"application/json"));
        host.set_header(Dir::Request, "x-request-id", Some(b"rid-1"));
        s.on_request_headers(&*host, false);
        host.set_buffer(Dir::Request, request);
        s.on_request_body(&*host, request.len(), true);
        host.set_header(Dir::Response, ":status", Some(b"200"));
        host.set_header(Dir::Response, "content-type", Some(b"application/json"));
        s.on_response_headers(&*host, false);
        host.set_buffer(Dir::Response, answer);
        s.on_response_body(&*host, answer.len(), true);
        s.on_done(&*host);
        host.state.borrow_mut().logs.clear();
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let calls: Vec<String> = host
        .state
        .borrow()
        .calls
        .iter()
        .map(|(name, c)| format!("{name} {}", c / n as u64))
        .collect();
    Ok((us, calls.join(", ")))
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3000);
    let prompt = chat_prompt(4096);
    let request = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You are a helpful assistant for the finance team."},
        {"role": "user", "content": prompt}]})
    .to_string();
    let answer = json!({"id": "x", "object": "chat.completion", "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": chat_prompt(1024)},
        "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 250, "total_tokens": 1250}})
    .to_string();
    let (rq, an) = (request.as_bytes(), answer.as_bytes());
    println!("| filter | µs per exchange (native, fake host) | host calls per exchange |\n|---|---:|---|");
    let rows: [(&str, (f64, String)); 4] = [
        (
            "llm-telemetry",
            run::<llm_telemetry::Telemetry>("{}", rq, an, n)?,
        ),
        (
            "schema-guard",
            run::<schema_guard::filter::SchemaGuard>(&policy("schema-guard")?, rq, an, n)?,
        ),
        (
            "pii-redact",
            run::<pii_redact::filter::PiiRedact>(&policy("pii-redact")?, rq, an, n)?,
        ),
        (
            "prompt-guard",
            run::<prompt_guard::filter::PromptGuard>(&policy("prompt-guard")?, rq, an, n)?,
        ),
    ];
    for (name, (us, calls)) in rows {
        println!("| {name} | {us:.1} | {calls} |");
    }
    Ok(())
}

/// A shipped policy file of `envoy/policies/`.
fn policy(name: &str) -> anyhow::Result<String> {
    let path = format!(
        "{}/../../envoy/policies/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))
}
