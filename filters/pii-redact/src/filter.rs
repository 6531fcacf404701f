//! The pii-redact proxy-wasm filter (placeholder while the engine lands).
