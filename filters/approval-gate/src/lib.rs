//! # approval-gate (work in progress, issue 9)
//!
//! A person approves high-stakes tool calls before they run, bound to their exact arguments.
//! This crate so far holds the engine:
//!
//! - [`policy`]: rules that match a tool call by tool name (globs), argument predicates (JSON
//!   pointer with comparisons, lists, linear-time patterns) and caller claims, with the outcome
//!   `allow`, `deny` or `require_approval`; the first matching rule decides.
//! - [`digest`]: the approval digest of a call (tool name, canonical arguments, caller,
//!   conversation), so an approval covers exactly that call and no swapped arguments.
//!
//! - [`filter`]: the proxy-wasm adapter's first surface, MCP `tools/call` requests: allow,
//!   deny, or create an approval request at the approval service (docs/approval-api.md) and
//!   `hold` the request (long polls, bounded) or `defer` it (a retry naming the approval passes
//!   once, only with the approved digest).
//!
//! Still to come: tool calls in model answers (streamed or not), the approval service's own
//! crate (`approval-service`), and the end-to-end tests.

pub mod digest;
pub mod filter;
pub mod policy;

pub use filter::ApprovalGate;

#[cfg(feature = "export")]
guard_host::export_guard_filter!(crate::filter::ApprovalGate);
