//! schema-guard: JSON Schema enforcement of LLM output, tool calls and request bodies.
//!
//! This first slice is the native engine ([`engine`]): draft 2020-12 and draft-07 (others by
//! `$schema`), `format` asserted, `pattern` in linear time, remote `$ref` resolved only from
//! preloaded documents, and limits on schema size and depth and on instance size. The
//! proxy-wasm filter comes later.
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

pub mod engine;
