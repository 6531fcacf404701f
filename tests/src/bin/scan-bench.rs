//! Wasm scan time of prompt-guard inside a real Envoy: sends N chat requests with a ~4 KB
//! benign prompt through the shipped config and prints p50 / p90 / p99 of the `scan_us` that the
//! filter records in its audit record (time spent scanning, measured by the host clock inside
//! the VM). `cargo run --release -p e2e --bin scan-bench [N]`.

use e2e::{Env, Spec};
use serde_json::json;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let env = Env::start(Spec::shipped()).await?;
    let para = "Our quarterly report covers revenue, operating costs and the outlook for the next \
                fiscal year. Please summarise the main drivers of growth, list the risks the board \
                highlighted, and suggest three questions an analyst might ask on the earnings call. ";
    let mut prompt = String::new();
    while prompt.len() < 4096 {
        prompt.push_str(para);
    }
    prompt.truncate(4096);
    for i in 0..n {
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]});
        let r = env
            .client()
            .post("/v1/chat/completions", body.to_string())
            .header("x-request-id", format!("bench-{i}"))
            .send()
            .await?;
        anyhow::ensure!(r.status == 200, "request {i}: {}", r.status);
    }
    let lines = env.access_log(n).await?;
    let mut us: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.get("prompt_guard").and_then(|v| v.as_str()))
        .filter_map(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .filter_map(|v| v.get("scan_us").and_then(serde_json::Value::as_u64))
        .collect();
    us.sort_unstable();
    let pct = |p: f64| {
        us.get(((us.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "prompt-guard wasm scan of a 4 KB prompt (V8, Envoy 1.40), {} requests",
        us.len()
    );
    println!(
        "| p50 | p90 | p99 |\n|---|---|---|\n| {} us | {} us | {} us |",
        pct(0.5),
        pct(0.9),
        pct(0.99)
    );
    env.finish();
    Ok(())
}
