//! schema-guard: JSON Schema enforcement of LLM output, tool calls and request bodies.
//!
//! - [`engine`]: draft 2020-12 and draft-07 (others by `$schema`) on the `jsonschema` crate,
//!   `format` asserted, `pattern` in linear time, remote `$ref` resolved only from preloaded
//!   documents, limits on schema size and depth and on instance size, a cache of compiled
//!   request-declared schemas.
//! - [`check`]: what an answer must look like from its request (structured output, declared
//!   tools and their argument schemas, the operator's response schema), the checks, and the
//!   `drop_tool_call` rewrite.
//! - [`filter`]: the proxy-wasm filter (requests, answers, streams in `buffer` or
//!   `passthrough` mode).
//!
//! ```
//! use schema_guard::engine::{CompiledSchema, Limits, Remotes};
//! use serde_json::json;
//!
//! let schema = json!({
//!     "type": "object",
//!     "properties": {"age": {"type": "integer"}, "email": {"format": "email"}},
//!     "required": ["age"]
//! });
//! let compiled = CompiledSchema::compile(&schema, Limits::default(), &Remotes::default())?;
//! assert!(compiled.validate(&json!({"age": 3})).is_empty());
//! let errors = compiled.validate(&json!({"age": "3", "email": "not-an-email"}));
//! let paths: Vec<&str> = errors.iter().map(|v| v.path.as_str()).collect();
//! assert_eq!(paths, ["/age", "/email"]);
//! # Ok::<(), guard_core::error::Error>(())
//! ```

pub mod check;
pub mod engine;
pub mod filter;

// The proxy-wasm entry point; off (`default-features = false`) when another module links
// this crate (the combined filter, wasm benchmarks).
#[cfg(feature = "export")]
guard_host::export_guard_filter!(crate::filter::SchemaGuard);
