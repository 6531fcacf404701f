//! # llm-telemetry
//!
//! The first guard filter, and the one that proves the chain end to end: it parses every
//! request, non-streamed answer and SSE stream through the core traffic model and emits
//!
//! | metric (Envoy adds `wasmcustom.`) | kind |
//! |---|---|
//! | `guard.llm_telemetry.api.<api>.model.<model>.requests` | counter |
//! | `guard.llm_telemetry.api.<api>.model.<model>.tokens_in` | counter |
//! | `guard.llm_telemetry.api.<api>.model.<model>.tokens_out` | counter |
//! | `guard.llm_telemetry.api.<api>.model.<model>.ttft_ms` | histogram (streams) |
//! | `guard.llm_telemetry.api.<api>.model.<model>.duration_ms` | histogram |
//! | `guard.llm_telemetry.decision.<decision>.reason.<reason>.decisions` | counter |
//!
//! Token counts come from the provider's `usage`. A streamed OpenAI chat request without
//! `stream_options.include_usage` gets it added, and the extra usage chunk that this makes the
//! provider send is removed from what the client sees, so the client gets the stream it asked
//! for and the proxy still counts tokens.
//!
//! `<model>` is the requested model when it matches the `models` allow-list (globs with a
//! trailing `*`), up to `max_model_labels` distinct values per VM, else `other`.
//!
//! ```json
//! { "policies": { "default": { "inject_stream_usage": true, "models": ["gpt-*", "claude-*"] } } }
//! ```

mod filter;

pub use filter::{Settings, Telemetry};

// The proxy-wasm entry point; off (`default-features = false`) when another module links
// this crate (the combined filter, wasm benchmarks).
#[cfg(feature = "export")]
guard_host::export_guard_filter!(crate::filter::Telemetry);
