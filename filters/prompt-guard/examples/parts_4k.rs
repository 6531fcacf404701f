//! Profile helper: time each part of a prompt-guard scan of a 4 KB benign prompt
//! (`cargo run --release -p prompt-guard --example parts_4k`).

use prompt_guard::decode::{decode_payloads, DecodeLimits};
use prompt_guard::engine::Engine;
use prompt_guard::model::Model;
use prompt_guard::normalize::Normalizer;
use std::time::Instant;

fn per_scan(n: usize, mut f: impl FnMut() -> usize) -> (f64, usize) {
    let t = Instant::now();
    let mut c = 0;
    for _ in 0..n {
        c += f();
    }
    (t.elapsed().as_secs_f64() * 1e6 / n as f64, c)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let para = "Our quarterly report covers revenue, operating costs and the outlook for the next \
                fiscal year. Please summarise the main drivers of growth, list the risks the board \
                highlighted, and suggest three questions an analyst might ask on the earnings call. ";
    let mut prompt = String::from("Hi, I am Dana (dana.weber@example.com, +1 415 555 0134). ");
    while prompt.len() < 4096 {
        prompt.push_str(para);
    }
    prompt.truncate(4096);
    let engine = Engine::default_policy()?;
    let n = 3000;
    let mut norm = Normalizer::new();
    let mut views = Vec::new();
    let (us, _) = per_scan(n, || {
        norm.views(&prompt, &mut views);
        views.len()
    });
    println!("normalise (all views): {us:.1} us, {} views", views.len());
    let mut rs = engine.rules().scratch();
    let mut hits = Vec::new();
    for v in &views {
        let (us, c) = per_scan(n, || {
            hits.clear();
            engine.rules().scan(&v.text, &mut rs, &mut hits);
            hits.len()
        });
        println!("rules on {:?}: {us:.1} us ({} hits)", v.kind, c / n);
    }
    let model = Model::embedded().ok_or("no embedded model")?;
    let base = views.first().map(|v| v.text.clone()).unwrap_or_default();
    let (us, _) = per_scan(n, || usize::from(model.score(&base) > 0.5));
    println!("model: {us:.1} us");
    let mut decoded = Vec::new();
    let (us, c) = per_scan(n, || {
        decoded.clear();
        decode_payloads(&prompt, &DecodeLimits::default(), &mut decoded);
        decoded.len()
    });
    println!("decode: {us:.1} us ({} payloads)", c / n);
    Ok(())
}
