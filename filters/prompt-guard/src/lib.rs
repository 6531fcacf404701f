//! # prompt-guard
//!
//! Stops prompt injection, jailbreaks and banned or off-topic prompts before they reach the
//! model, and data-exfiltration links in answers, inside Envoy.
//!
//! Pipeline per text segment (see [`engine`]):
//! 1. [`normalize`]: NFKC, case folding, zero-width / bidi removal, confusable folding, views
//!    with separators collapsed, leetspeak undone and text reversed, each with a map back to
//!    original offsets.
//! 2. [`decode`]: base64, hex, URL-encoded and ROT13 runs are decoded (bounded) and scanned too.
//! 3. [`rules`]: multilingual rule packs (aho-corasick phrases, regex-automata structure), each
//!    rule with an id, a category and a weight.
//! 4. [`model`]: a logistic-regression model over hashed character n-grams, embedded in the wasm,
//!    trained by `make train` on the `ship_ok` train split.
//! 5. [`engine`]: rules and model combine into one score per segment; per-source thresholds;
//!    topic policy; a verdict.

pub mod decode;
pub mod engine;
pub mod exfil;
pub mod filter;
pub mod model;
pub mod normalize;
pub mod rules;

// The proxy-wasm entry point; off (`default-features = false`) when another module links
// this crate (the combined filter, wasm benchmarks).
#[cfg(feature = "export")]
guard_host::export_guard_filter!(crate::filter::PromptGuard);
