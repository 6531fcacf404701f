//! # guard-core: the LLM traffic model
//!
//! Everything the guard filters share, with no proxy-wasm types, so it compiles natively (tests,
//! benchmarks, `guardctl`) and to `wasm32-wasip1` (the filters):
//!
//! - [`api`]: the three API shapes (OpenAI Chat Completions, OpenAI Responses, Anthropic
//!   Messages), detected from the path and the body.
//! - [`body`]: request and non-streamed response bodies as a list of located text
//!   [`segment::Segment`]s (who said it, where in the JSON), with a rewrite that keeps every
//!   unknown field.
//! - [`sse`]: an incremental WHATWG server-sent-events parser over bytes, correct for any
//!   chunking, with a bound on buffered bytes.
//! - [`stream`]: decoding of each API's SSE events into text / tool-call / usage deltas.
//! - [`stream_edit`]: removal of tool calls from a whole buffered streamed answer (the streamed
//!   twin of [`body::ResponseBody::remove_tool_calls`]).
//! - [`holdback`]: release streamed text only once every scanner has cleared it.
//! - [`protobuf`]: decoding of `google.protobuf.Struct` bytes that Envoy hands over for metadata
//!   (for example `jwt_authn` claims).
//! - [`config`], [`verdict`]: config helpers and audit-record types shared by all filters.
//! - [`answer`]: deterministic answers (whole, streamed, or the end of a stream under way) in
//!   each API's shape, for fallbacks (docs/fallback.md).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use guard_core::api::ApiShape;
//! use guard_core::body::RequestBody;
//! use guard_core::segment::Source;
//!
//! let raw = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
//! let req = RequestBody::parse(ApiShape::OpenAiChat, raw)?;
//! let segs = req.segments();
//! assert_eq!(segs[0].source, Source::User);
//! assert_eq!(segs[0].text, "hi");
//! # Ok(())
//! # }
//! ```

pub mod answer;
pub mod api;
pub mod audit;
pub mod body;
pub mod capture;
pub mod config;
pub mod error;
pub mod holdback;
pub mod protobuf;
pub mod segment;
pub mod sse;
pub mod stream;
pub mod stream_edit;
pub mod verdict;

pub use error::{Error, ErrorKind};
