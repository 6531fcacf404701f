//! Metric names and the per-VM metric registry.
//!
//! proxy-wasm metrics have no labels: labels are encoded as name segments
//! (`guard.<filter>.<label>.<value>...<metric>`) that Envoy's `stats_tags` (see
//! `envoy/envoy.yaml`) lift into Prometheus labels. Envoy prefixes custom metrics with
//! `wasmcustom.`. Values that come from traffic are sanitised and bounded by the caller (an
//! allow-list with an `other` bucket); ids are cached so each name is defined once per VM.

use crate::host::{Host, MetricKind};
use guard_core::verdict::Decision;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Most distinct metric names one VM defines; past it, new names are not defined (bounded).
pub const MAX_METRIC_NAMES: usize = 4096;

/// Decision reasons that get their own counter; others count as `other`.
pub const KNOWN_REASONS: &[&str] = &[
    "none",
    "no_request_body",
    "compressed_body",
    "body_too_large",
    "unparsable_body",
    "internal_error",
    "incomplete",
    "stream_usage_added",
    "prompt_injection",
    "indirect_injection",
    "denied_topic",
    "off_topic",
    "exfiltration",
    "second_opinion_benign",
    "second_opinion_unavailable",
    "schema_violation",
    "invalid_schema",
    "pii_redacted",
    "pii_detected",
    "pii_restored",
    "acl_enforced",
    "leak_prevented",
    "no_identity",
    "missing_claim",
    "bad_claim",
    "operation_denied",
    "unknown_operation",
    "collection_not_allowed",
    "unknown_collection",
    "acl_violation",
    "not_owner",
    "no_access",
    "too_many_ids",
    "bad_request",
    "lookup_failed",
    "callout_failed",
    // approval-gate (docs/approval-gate.md)
    "tool_denied",
    "approval_denied",
    "approval_expired",
    "approval_required",
    "approval_mismatch",
    "approval_used",
    "approval_not_granted",
    "approval_unavailable",
    "batched_tool_call",
    "tool_call_removed",
    "upstream_failure",
    "upstream_cut",
];

/// `guard.<filter>.upstream.<kind>.failures`: upstream failures before the headers by kind
/// (`status`, `reset`, `connect_failure`, `timeout`, `no_healthy_upstream`, `overflow`,
/// `other`) and streams cut after them (`cut`), counted by filters whose policy acts on them.
pub fn upstream_failures(filter: &str, kind: &str) -> String {
    format!("guard.{filter}.upstream.{kind}.failures")
}

/// `guard.<filter>.trigger.<upstream_failure|flagged_answer>.fallback.<outcome>.fallbacks`:
/// fallbacks delivered, by what triggered them and what the client got.
pub fn fallbacks(filter: &str, trigger: &str, outcome: &str) -> String {
    format!("guard.{filter}.trigger.{trigger}.fallback.{outcome}.fallbacks")
}

/// `guard.<filter>.escalation.<created|failed>.reviews`: escalations to the review queue.
pub fn escalations(filter: &str, result: &str) -> String {
    format!("guard.{filter}.escalation.{result}.reviews")
}

/// Defines metrics on first use and caches their ids. One per VM (root context).
pub struct Metrics {
    host: Rc<dyn Host>,
    ids: RefCell<HashMap<String, Option<u32>>>,
}

impl Metrics {
    pub fn new(host: Rc<dyn Host>) -> Self {
        Metrics {
            host,
            ids: RefCell::new(HashMap::new()),
        }
    }

    fn id(&self, kind: MetricKind, name: &str) -> Option<u32> {
        if let Some(id) = self.ids.borrow().get(name) {
            return *id;
        }
        let mut ids = self.ids.borrow_mut();
        if ids.len() >= MAX_METRIC_NAMES {
            return None;
        }
        let id = self.host.define_metric(kind, name);
        ids.insert(name.to_string(), id);
        id
    }

    /// Define a metric now (configure time) so it shows up in stats before any traffic.
    pub fn define(&self, kind: MetricKind, name: &str) {
        let _ = self.id(kind, name);
    }

    pub fn counter(&self, name: &str, by: u64) {
        if let Some(id) = self.id(MetricKind::Counter, name) {
            self.host
                .increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }

    pub fn gauge(&self, name: &str, value: u64) {
        if let Some(id) = self.id(MetricKind::Gauge, name) {
            self.host.record_metric(id, value);
        }
    }

    pub fn histogram(&self, name: &str, value: u64) {
        if let Some(id) = self.id(MetricKind::Histogram, name) {
            self.host.record_metric(id, value);
        }
    }

    /// `guard.<filter>.decision.<decision>.reason.<reason>.decisions`
    pub fn count_decision(&self, filter: &str, decision: Decision, reason: &str) {
        let reason = if KNOWN_REASONS.contains(&reason) {
            reason
        } else {
            "other"
        };
        self.counter(
            &format!(
                "guard.{filter}.decision.{}.reason.{reason}.decisions",
                decision.as_str()
            ),
            1,
        );
    }
}

/// A label value safe inside a dotted metric name: `[A-Za-z0-9_-]` kept, the rest `_`,
/// at most 64 bytes, never empty.
pub fn label(value: &str) -> String {
    let mut s: String = value
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        s.push_str("unknown");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for (input, want) in [
            ("gpt-4.1", "gpt-4_1"),
            ("", "unknown"),
            ("a b/c", "a_b_c"),
            ("é", "_"),
        ] {
            assert_eq!(label(input), want);
        }
        assert_eq!(label(&"x".repeat(100)).len(), 64);
    }
}
