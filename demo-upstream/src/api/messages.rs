//! Anthropic Messages: request parsing, `message` bodies, the named-event SSE stream and the
//! `{"type":"error","error":{...}}` error shape.
//!
//! Stream layout: `message_start` (usage with `input_tokens` and `output_tokens: 1`), per
//! content block `content_block_start` (a `ping` follows the first one), `content_block_delta`s
//! (`text_delta` of 4-8 characters, or `input_json_delta` `partial_json` fragments for tool
//! use), `content_block_stop`; then `message_delta` (`stop_reason`, `usage.output_tokens`) and
//! `message_stop`. Every event has both `event:` and `data:` lines.

use serde_json::{json, Map, Value};

use super::{content_text, flag, make_id, model, opt_array, Sse};
use crate::answer::{count_words, split_deltas, Content, Prompt, Reply};

/// Text of the `text` blocks (or string content) of a message.
fn text_blocks(content: Option<&Value>) -> String {
    match content {
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        other => content_text(other),
    }
}

/// Text of the `tool_result` blocks of a message, if it has any.
fn tool_results(content: Option<&Value>) -> Option<String> {
    let blocks = content?.as_array()?;
    let results: Vec<String> = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        .map(|b| content_text(b.get("content")))
        .collect();
    if results.is_empty() {
        None
    } else {
        Some(results.join("\n"))
    }
}

/// Parses a Messages request.
pub fn parse(obj: &Map<String, Value>) -> Result<Prompt, String> {
    let model = model(obj)?;
    let stream = flag(obj, "stream")?;
    let mut input_words = match obj.get("system") {
        None | Some(Value::Null) => 0,
        Some(v @ (Value::String(_) | Value::Array(_))) => count_words(&content_text(Some(v))),
        Some(_) => return Err("field `system` must be a string or an array".to_owned()),
    };
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| "field `messages` must be a non-empty array".to_owned())?;
    let mut user_text = String::new();
    let mut tool_result = None;
    for (i, message) in messages.iter().enumerate() {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("messages[{i}].role must be a string"))?;
        let content = message.get("content");
        if !matches!(content, Some(Value::String(_) | Value::Array(_))) {
            return Err(format!(
                "messages[{i}].content must be a string or an array"
            ));
        }
        let text = text_blocks(content);
        let results = tool_results(content);
        input_words = input_words.saturating_add(count_words(&text));
        if let Some(r) = &results {
            input_words = input_words.saturating_add(count_words(r));
        }
        tool_result = None;
        if role == "user" {
            match results {
                Some(r) if text.trim().is_empty() => tool_result = Some(r),
                _ => user_text = text,
            }
        }
    }
    let first_tool = opt_array(obj, "tools")?
        .iter()
        .find_map(|t| t.get("name")?.as_str())
        .map(str::to_owned);
    Ok(Prompt {
        model,
        stream,
        include_usage: false,
        n: 1,
        first_tool,
        user_text,
        tool_result,
        input_words,
    })
}

/// Anthropic's error shape for `status`.
pub fn error_body(status: u16, message: &str) -> Value {
    let kind = match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

fn message_id(reply: &Reply) -> String {
    make_id("msg_", reply.seq, "")
}

fn tool_use_id(reply: &Reply, k: usize) -> String {
    make_id("toolu_", reply.seq, &format!("_{k}"))
}

fn stop_reason(content: &Content) -> &'static str {
    match content {
        Content::Text(_) => "end_turn",
        Content::ToolCalls(_) => "tool_use",
    }
}

fn message(reply: &Reply, content: Vec<Value>, stop: Value, usage: Value) -> Value {
    json!({
        "id": message_id(reply),
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage,
    })
}

/// The non-streamed `message` body.
pub fn render_json(reply: &Reply) -> Value {
    let blocks: Vec<Value> = match &reply.content {
        Content::Text(text) => vec![json!({"type": "text", "text": text})],
        Content::ToolCalls(calls) => calls
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let input: Value =
                    serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
                json!({"type": "tool_use", "id": tool_use_id(reply, k), "name": c.name, "input": input})
            })
            .collect(),
    };
    message(
        reply,
        blocks,
        Value::from(stop_reason(&reply.content)),
        json!({"input_tokens": reply.usage.input, "output_tokens": reply.usage.output}),
    )
}

/// The whole Messages SSE stream.
pub fn render_sse(reply: &Reply) -> Vec<u8> {
    let mut sse = Sse::default();
    sse.event(
        "message_start",
        &json!({"type": "message_start", "message": message(
            reply,
            Vec::new(),
            Value::Null,
            json!({"input_tokens": reply.usage.input, "output_tokens": 1}),
        )}),
    );
    // (start block, delta type, delta field, fragments) per content block.
    let blocks: Vec<(Value, &str, &str, Vec<&str>)> = match &reply.content {
        Content::Text(text) => vec![(
            json!({"type": "text", "text": ""}),
            "text_delta",
            "text",
            split_deltas(text),
        )],
        Content::ToolCalls(calls) => calls
            .iter()
            .enumerate()
            .map(|(k, c)| {
                (
                    json!({"type": "tool_use", "id": tool_use_id(reply, k), "name": c.name, "input": {}}),
                    "input_json_delta",
                    "partial_json",
                    split_deltas(&c.arguments),
                )
            })
            .collect(),
    };
    for (index, (start, delta_type, field, fragments)) in blocks.iter().enumerate() {
        sse.event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        );
        if index == 0 {
            sse.event("ping", &json!({"type": "ping"}));
        }
        for fragment in fragments {
            let mut delta = Map::new();
            delta.insert("type".to_owned(), Value::from(*delta_type));
            delta.insert((*field).to_owned(), Value::from(*fragment));
            sse.event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            );
        }
        sse.event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        );
    }
    sse.event(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(&reply.content), "stop_sequence": null},
            "usage": {"output_tokens": reply.usage.output},
        }),
    );
    sse.event("message_stop", &json!({"type": "message_stop"}));
    sse.finish()
}
