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
//! Still to come: the proxy-wasm adapter (tool calls in answers, streamed or not; MCP
//! `tools/call`), the hold and defer flows with the approval service, the service itself
//! (REST API, SQLite store, web console) and the end-to-end tests.

pub mod digest;
pub mod policy;
