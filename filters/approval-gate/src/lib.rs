//! # approval-gate (work in progress, issue 9)
//!
//! A person approves high-stakes tool calls before they run, bound to their exact arguments
//! (docs/approval-gate.md; the approval service is the `approval-service` crate).
//!
//! - [`policy`]: rules that match a tool call by tool name (globs), argument predicates (JSON
//!   pointer with comparisons, lists, linear-time patterns) and caller claims, with the outcome
//!   `allow`, `deny` or `require_approval`; the first matching rule decides.
//! - [`digest`]: the approval digest of a call (tool name, canonical arguments, caller,
//!   conversation), so an approval covers exactly that call and no swapped arguments.
//! - [`filter`]: the proxy-wasm adapter. MCP `tools/call` requests are allowed, refused, or
//!   `hold` (long polls of the approval service, bounded) / `defer` (a retry naming the
//!   approval passes once, only with the approved digest); tool calls in model answers
//!   (streamed or not) are held with the whole answer, and a refused call in a whole answer is
//!   replaced by a deterministic message.

pub mod digest;
pub mod filter;
pub mod policy;

pub use filter::ApprovalGate;

#[cfg(feature = "export")]
guard_host::export_guard_filter!(crate::filter::ApprovalGate);
