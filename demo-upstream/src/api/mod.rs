//! The three API shapes the upstream speaks, behind one dispatch surface.
//!
//! Each submodule parses its request JSON into an [`answer::Prompt`](crate::answer::Prompt)
//! and renders an [`answer::Reply`](crate::answer::Reply) as a JSON body or an SSE stream, plus
//! its provider-shaped error body:
//! - [`chat`]: OpenAI Chat Completions (`/v1/chat/completions`);
//! - [`responses`]: OpenAI Responses (`/v1/responses`);
//! - [`messages`]: Anthropic Messages (`/v1/messages`).

pub mod chat;
pub mod messages;
pub mod responses;

use serde_json::{Map, Value};

use crate::answer::{Prompt, Reply, DEFAULT_MODEL};

/// An API shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// OpenAI Chat Completions.
    Chat,
    /// OpenAI Responses.
    Responses,
    /// Anthropic Messages.
    Messages,
}

impl Api {
    /// The API served at `path` (any prefix allowed, query ignored).
    pub fn from_path(path: &str) -> Option<Api> {
        let path = path.split('?').next().unwrap_or("");
        let path = path.strip_suffix('/').unwrap_or(path);
        if path.ends_with("/v1/chat/completions") {
            Some(Api::Chat)
        } else if path.ends_with("/v1/responses") {
            Some(Api::Responses)
        } else if path.ends_with("/v1/messages") {
            Some(Api::Messages)
        } else {
            None
        }
    }

    /// Parses a request body (already JSON) into a prompt; errors are client errors (400).
    pub fn parse(self, body: &Value) -> Result<Prompt, String> {
        let obj = body
            .as_object()
            .ok_or_else(|| "request body must be a json object".to_owned())?;
        match self {
            Api::Chat => chat::parse(obj),
            Api::Responses => responses::parse(obj),
            Api::Messages => messages::parse(obj),
        }
    }

    /// The non-streamed JSON answer.
    pub fn render_json(self, reply: &Reply) -> Value {
        match self {
            Api::Chat => chat::render_json(reply),
            Api::Responses => responses::render_json(reply),
            Api::Messages => messages::render_json(reply),
        }
    }

    /// The whole SSE stream of the answer, serialized.
    pub fn render_sse(self, reply: &Reply) -> Vec<u8> {
        match self {
            Api::Chat => chat::render_sse(reply),
            Api::Responses => responses::render_sse(reply),
            Api::Messages => messages::render_sse(reply),
        }
    }

    /// A provider-shaped error body for `status`.
    pub fn error_body(self, status: u16, message: &str) -> Value {
        match self {
            Api::Chat | Api::Responses => openai_error(status, message),
            Api::Messages => messages::error_body(status, message),
        }
    }
}

/// OpenAI's error shape: `{"error":{"message","type","param","code"}}`.
pub fn openai_error(status: u16, message: &str) -> Value {
    let (kind, code) = match status {
        401 => ("invalid_request_error", Value::from("invalid_api_key")),
        403 => ("permission_error", Value::Null),
        404 => ("invalid_request_error", Value::from("not_found")),
        413 => ("invalid_request_error", Value::from("request_too_large")),
        429 => ("rate_limit_error", Value::from("rate_limit_exceeded")),
        500..=599 => ("server_error", Value::Null),
        _ => ("invalid_request_error", Value::Null),
    };
    serde_json::json!({
        "error": {"message": message, "type": kind, "param": null, "code": code}
    })
}

/// A deterministic id: `<prefix>demo<seq>` plus an optional suffix.
pub(crate) fn make_id(prefix: &str, seq: u64, suffix: &str) -> String {
    format!("{prefix}demo{seq:08}{suffix}")
}

/// Serialized SSE events.
#[derive(Default)]
pub(crate) struct Sse {
    buf: Vec<u8>,
}

impl Sse {
    /// `data: <json>` only (OpenAI chat style).
    pub(crate) fn data(&mut self, value: &Value) {
        self.buf.extend_from_slice(b"data: ");
        self.buf.extend_from_slice(value.to_string().as_bytes());
        self.buf.extend_from_slice(b"\n\n");
    }

    /// `event: <name>` and `data: <json>` (Anthropic and Responses style).
    pub(crate) fn event(&mut self, name: &str, value: &Value) {
        self.buf.extend_from_slice(b"event: ");
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(b'\n');
        self.data(value);
    }

    /// `data: [DONE]`.
    pub(crate) fn done(&mut self) {
        self.buf.extend_from_slice(b"data: [DONE]\n\n");
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// `model` (a string if present; default [`DEFAULT_MODEL`]).
pub(crate) fn model(obj: &Map<String, Value>) -> Result<String, String> {
    match obj.get("model") {
        None | Some(Value::Null) => Ok(DEFAULT_MODEL.to_owned()),
        Some(Value::String(m)) => Ok(m.clone()),
        Some(_) => Err("field `model` must be a string".to_owned()),
    }
}

/// A boolean field (absent or null = false).
pub(crate) fn flag(obj: &Map<String, Value>, field: &str) -> Result<bool, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("field `{field}` must be a boolean")),
    }
}

/// An optional array field.
pub(crate) fn opt_array<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
) -> Result<&'a [Value], String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(format!("field `{field}` must be an array")),
    }
}

/// Text of a content value: a string, or the `text` of every part of an array joined by `\n`.
/// Anything else has no text.
pub(crate) fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Checks that `content` is absent, null, a string or an array.
pub(crate) fn check_content(content: Option<&Value>, location: &str) -> Result<(), String> {
    match content {
        None | Some(Value::Null) | Some(Value::String(_)) | Some(Value::Array(_)) => Ok(()),
        Some(_) => Err(format!("{location}.content must be a string or an array")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let cases = [
            ("/v1/chat/completions", Some(Api::Chat)),
            ("/openai/v1/chat/completions", Some(Api::Chat)),
            ("/v1/chat/completions?x=1", Some(Api::Chat)),
            ("/v1/responses", Some(Api::Responses)),
            ("/anthropic/v1/messages/", Some(Api::Messages)),
            ("/v1/messagesx", None),
            ("/chat/completions", None),
            ("/", None),
        ];
        for (path, want) in cases {
            assert_eq!(Api::from_path(path), want, "{path}");
        }
    }
}
