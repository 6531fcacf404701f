//! `demo-upstream`: a scripted OpenAI/Anthropic-compatible upstream for demos and end-to-end
//! tests of the guardrail filters.
//!
//! It speaks OpenAI Chat Completions (`/v1/chat/completions`), OpenAI Responses
//! (`/v1/responses`) and Anthropic Messages (`/v1/messages`), under any path prefix, over
//! HTTP/1.1 and cleartext HTTP/2 (prior knowledge). Answers are JSON, or SSE when the request
//! has `"stream": true`; SSE bodies are written in small chunks (default 16 bytes) so that
//! tokens, UTF-8 characters and entities are split across body frames. The answer is picked by
//! a directive in the last user message (`[[tool_call]]`, `[[tool_calls:2]]`, `[[tool_args:{...}]]`, `[[json:{...}]]`,
//! `[[pii]]`, `[[text:...]]`, `[[status:429]]`, `[[long:N]]`, `[[gzip]]`, `[[br]]`) or by the header
//! `x-demo-scenario`; see [`scenario`]. Every request is recorded (method, path, headers, body,
//! trailers) so a test can check what the upstream saw.
//!
//! For the prompt-guard call-out it also serves two classifiers, `POST /v1/moderations` (OpenAI
//! moderation shape) and `POST /classify` (`{"text"}` → `{"label","score"}`), which flag text
//! containing `[[unsafe]]` or a known injection phrase and honour `x-demo-delay-ms` and
//! `x-demo-status`; see [`guard`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use demo_upstream::{Options, Upstream};
//! let upstream = Upstream::start("127.0.0.1:0".parse()?, Options::default()).await?;
//! println!("listening on {}", upstream.addr());
//! // ... send requests through the proxy under test ...
//! let seen = upstream.received();
//! assert!(seen.iter().all(|r| !String::from_utf8_lossy(&r.body).contains("secret")));
//! upstream.shutdown().await;
//! # Ok(()) }
//! ```

pub mod answer;
pub mod api;
mod body;
pub mod guard;
mod handler;
pub mod scenario;
mod server;

pub use body::MAX_BODY_BYTES;
pub use server::{Options, Recorded, Upstream};
