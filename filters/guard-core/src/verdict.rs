//! Verdicts, audit records and provider-shaped error replies, shared by every filter.
//!
//! Each filter writes one compact JSON [`AuditRecord`] into Envoy filter state
//! (`guard_<filter>`), which access loggers read as `%FILTER_STATE(wasm.guard_<filter>:PLAIN)%`.
//! Records hold ids, decisions, reason codes, counts, timings and hashes: never raw prompt or
//! response text.

use crate::api::ApiShape;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// What a filter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Scanned and passed unchanged.
    #[default]
    Allow,
    /// Passed, but flagged (header and record).
    Flag,
    /// Passed with a rewrite (redaction, added options).
    Modify,
    /// Refused.
    Block,
    /// Not scanned: the reason code says why (oversize on fail-open, unsupported content, ...).
    Skipped,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Flag => "flag",
            Decision::Modify => "modify",
            Decision::Block => "block",
            Decision::Skipped => "skipped",
        }
    }
}

/// The audit record of one filter for one request.
#[derive(Debug, Clone, Serialize, Default)]
pub struct AuditRecord {
    pub request_id: String,
    pub filter: &'static str,
    pub policy: String,
    pub policy_version: String,
    pub decision: Decision,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiShape>,
    /// Caller identity (subject) when one was resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Filter-specific fields (token counts, timings, entity counts, hashes).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl AuditRecord {
    /// Compact JSON; never fails for these types, an empty object if it somehow did.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// Record the decision with a reason, keeping the strongest decision seen.
    pub fn decide(&mut self, decision: Decision, reason: &str) {
        if rank(decision) >= rank(self.decision) {
            self.decision = decision;
        }
        if !reason.is_empty() && !self.reasons.iter().any(|r| r == reason) {
            self.reasons.push(reason.to_string());
        }
    }
}

fn rank(d: Decision) -> u8 {
    match d {
        Decision::Allow => 0,
        Decision::Modify => 1,
        Decision::Flag => 2,
        Decision::Skipped => 3,
        Decision::Block => 4,
    }
}

/// A local reply: status, reason code and message, rendered in the provider's error shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub reason: String,
    pub message: String,
}

impl LocalReply {
    pub fn new(status: u16, reason: &str, message: &str) -> Self {
        LocalReply {
            status,
            reason: reason.to_string(),
            message: message.to_string(),
        }
    }

    /// The body in the API's own error shape: OpenAI `{"error":{"message","type","code"}}`,
    /// Anthropic `{"type":"error","error":{"type","message"}}`, both with the request id and
    /// our stable reason code, so SDKs surface them cleanly. OpenAI's shape is used when the API
    /// is unknown.
    pub fn body(&self, api: Option<ApiShape>, request_id: &str) -> Vec<u8> {
        let v = if api.is_some_and(ApiShape::is_anthropic) {
            json!({
                "type": "error",
                "error": {
                    "type": anthropic_error_type(self.status),
                    "message": self.message,
                    "code": self.reason,
                },
                "request_id": request_id,
            })
        } else {
            json!({
                "error": {
                    "message": self.message,
                    "type": openai_error_type(self.status),
                    "param": null,
                    "code": self.reason,
                    "request_id": request_id,
                }
            })
        };
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

fn openai_error_type(status: u16) -> &'static str {
    match status {
        400 | 404 | 409 | 413 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "server_error",
    }
}

fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        400 | 409 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

impl LocalReply {
    /// The same error as one server-sent event in the API's stream shape, for a stream that
    /// must end after its headers were sent: OpenAI chat `data: {"error":{...}}` followed by
    /// `data: [DONE]`, Anthropic `event: error`, Responses `event: error`.
    pub fn stream_event(&self, api: Option<ApiShape>, request_id: &str) -> Vec<u8> {
        let (event, data) = match api {
            Some(ApiShape::AnthropicMessages) => ("error", self.body(api, request_id)),
            Some(ApiShape::OpenAiResponses) => (
                "error",
                serde_json::to_vec(&json!({
                    "type": "error",
                    "code": self.reason,
                    "message": self.message,
                    "param": null,
                }))
                .unwrap_or_default(),
            ),
            _ => ("", self.body(api, request_id)),
        };
        let mut out = Vec::with_capacity(data.len() + 40);
        if !event.is_empty() {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(event.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\n\n");
        if !matches!(
            api,
            Some(ApiShape::AnthropicMessages | ApiShape::OpenAiResponses)
        ) {
            out.extend_from_slice(b"data: [DONE]\n\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_shapes() {
        let r = LocalReply::new(
            413,
            "body_too_large",
            "request body is over the 10 byte limit",
        );
        let o: Value = serde_json::from_slice(&r.body(Some(ApiShape::OpenAiChat), "rid")).unwrap();
        assert_eq!(o["error"]["type"], "invalid_request_error");
        assert_eq!(o["error"]["code"], "body_too_large");
        assert_eq!(o["error"]["request_id"], "rid");
        let a: Value =
            serde_json::from_slice(&r.body(Some(ApiShape::AnthropicMessages), "rid")).unwrap();
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "request_too_large");
        assert_eq!(a["error"]["code"], "body_too_large");
        let u: Value = serde_json::from_slice(&r.body(None, "rid")).unwrap();
        assert!(u["error"].is_object());
    }

    #[test]
    fn strongest_decision_wins() {
        let mut rec = AuditRecord::default();
        rec.decide(Decision::Modify, "added_stream_usage");
        rec.decide(Decision::Allow, "");
        assert_eq!(rec.decision, Decision::Modify);
        rec.decide(Decision::Skipped, "body_too_large");
        assert_eq!(rec.decision, Decision::Skipped);
        assert_eq!(rec.reasons, vec!["added_stream_usage", "body_too_large"]);
        let j: Value = serde_json::from_slice(&rec.to_json()).unwrap();
        assert_eq!(j["decision"], "skipped");
    }
}
