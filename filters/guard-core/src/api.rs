//! The API shapes the filters understand, and how a request is classified: by its path first
//! (configurable), then by sniffing the body.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One of the LLM HTTP APIs the model covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ApiShape {
    /// OpenAI Chat Completions (`POST /v1/chat/completions`).
    #[serde(rename = "openai_chat")]
    OpenAiChat,
    /// OpenAI Responses (`POST /v1/responses`).
    #[serde(rename = "openai_responses")]
    OpenAiResponses,
    /// Anthropic Messages (`POST /v1/messages`).
    #[serde(rename = "anthropic_messages")]
    AnthropicMessages,
}

impl ApiShape {
    pub const ALL: [ApiShape; 3] = [
        ApiShape::OpenAiChat,
        ApiShape::OpenAiResponses,
        ApiShape::AnthropicMessages,
    ];

    /// Stable name used in config, metrics and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiShape::OpenAiChat => "openai_chat",
            ApiShape::OpenAiResponses => "openai_responses",
            ApiShape::AnthropicMessages => "anthropic_messages",
        }
    }

    pub fn from_name(name: &str) -> Option<ApiShape> {
        ApiShape::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether errors for this API use Anthropic's `{"type":"error","error":{...}}` shape.
    pub fn is_anthropic(self) -> bool {
        matches!(self, ApiShape::AnthropicMessages)
    }

    /// The default path mapping: the providers' own paths, matched as a suffix of the path
    /// without its query string (so `/openai/v1/chat/completions` behind a prefix also matches).
    pub fn from_default_path(path: &str) -> Option<ApiShape> {
        let path = strip_query(path).trim_end_matches('/');
        if path.ends_with("/chat/completions") {
            Some(ApiShape::OpenAiChat)
        } else if path.ends_with("/responses") {
            Some(ApiShape::OpenAiResponses)
        } else if path.ends_with("/messages") {
            Some(ApiShape::AnthropicMessages)
        } else {
            None
        }
    }

    /// Guess the shape of a request body when the path did not tell.
    pub fn sniff_request(body: &Value) -> Option<ApiShape> {
        let obj = body.as_object()?;
        if obj.contains_key("input") || obj.contains_key("instructions") {
            return Some(ApiShape::OpenAiResponses);
        }
        if obj.contains_key("messages") {
            // Anthropic: top-level `system`, or `max_tokens` with content blocks, or
            // `anthropic_version`; OpenAI puts the system prompt in `messages`.
            if obj.contains_key("system") || obj.contains_key("anthropic_version") {
                return Some(ApiShape::AnthropicMessages);
            }
            let blocks_look_anthropic = obj
                .get("messages")
                .and_then(Value::as_array)
                .map(|msgs| {
                    msgs.iter().any(|m| {
                        m.get("content")
                            .and_then(Value::as_array)
                            .is_some_and(|parts| {
                                parts.iter().any(|p| {
                                    matches!(
                                        p.get("type").and_then(Value::as_str),
                                        Some("tool_use" | "tool_result" | "thinking" | "document")
                                    )
                                })
                            })
                    })
                })
                .unwrap_or(false);
            if blocks_look_anthropic {
                return Some(ApiShape::AnthropicMessages);
            }
            return Some(ApiShape::OpenAiChat);
        }
        None
    }
}

/// The path without its query string or fragment.
pub fn strip_query(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_paths() {
        let cases = [
            ("/v1/chat/completions", Some(ApiShape::OpenAiChat)),
            ("/v1/chat/completions?x=1", Some(ApiShape::OpenAiChat)),
            ("/openai/v1/chat/completions/", Some(ApiShape::OpenAiChat)),
            ("/v1/responses", Some(ApiShape::OpenAiResponses)),
            ("/v1/messages", Some(ApiShape::AnthropicMessages)),
            ("/v1/models", None),
            ("", None),
        ];
        for (path, want) in cases {
            assert_eq!(ApiShape::from_default_path(path), want, "{path}");
        }
    }

    #[test]
    fn sniffing() {
        let cases = [
            (
                json!({"model":"m","messages":[]}),
                Some(ApiShape::OpenAiChat),
            ),
            (
                json!({"model":"m","system":"s","messages":[]}),
                Some(ApiShape::AnthropicMessages),
            ),
            (
                json!({"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"x","content":"r"}]}]}),
                Some(ApiShape::AnthropicMessages),
            ),
            (
                json!({"model":"m","input":"hi"}),
                Some(ApiShape::OpenAiResponses),
            ),
            (json!([1, 2]), None),
            (json!({"prompt":"x"}), None),
        ];
        for (body, want) in cases {
            assert_eq!(ApiShape::sniff_request(&body), want, "{body}");
        }
    }
}
