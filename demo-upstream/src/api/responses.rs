//! OpenAI Responses: request parsing, `response` bodies and the typed SSE event stream.
//!
//! Stream layout: `response.created`, `response.in_progress`, then per output item
//! `response.output_item.added`, for a message `response.content_part.added`,
//! `response.output_text.delta`..., `response.output_text.done`, `response.content_part.done`,
//! for a function call `response.function_call_arguments.delta`...,
//! `response.function_call_arguments.done`, then `response.output_item.done`; finally
//! `response.completed` carrying the full response with `usage`. Every event has both `event:`
//! and `data:` lines and a `sequence_number` counting from 0.

use serde_json::{json, Map, Value};

use super::{check_content, content_text, flag, make_id, model, opt_array, Sse};
use crate::answer::{count_words, split_deltas, Content, Prompt, Reply};

/// Parses a Responses request.
pub fn parse(obj: &Map<String, Value>) -> Result<Prompt, String> {
    let model = model(obj)?;
    let stream = flag(obj, "stream")?;
    let mut input_words = match obj.get("instructions") {
        None | Some(Value::Null) => 0,
        Some(Value::String(s)) => count_words(s),
        Some(_) => return Err("field `instructions` must be a string".to_owned()),
    };
    let mut user_text = String::new();
    let mut tool_result = None;
    match obj.get("input") {
        Some(Value::String(s)) => {
            input_words = input_words.saturating_add(count_words(s));
            user_text = s.clone();
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let item = item
                    .as_object()
                    .ok_or_else(|| format!("input[{i}] must be an object"))?;
                let kind = item
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("message");
                let text = match kind {
                    "function_call_output" => content_text(item.get("output")),
                    "message" => {
                        check_content(item.get("content"), &format!("input[{i}]"))?;
                        content_text(item.get("content"))
                    }
                    _ => String::new(),
                };
                input_words = input_words.saturating_add(count_words(&text));
                tool_result = None;
                if kind == "function_call_output" {
                    tool_result = Some(text);
                } else if kind == "message"
                    && item.get("role").and_then(Value::as_str) == Some("user")
                {
                    user_text = text;
                }
            }
        }
        _ => return Err("field `input` must be a string or an array".to_owned()),
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

fn response_id(reply: &Reply) -> String {
    make_id("resp_", reply.seq, "")
}

fn message_id(reply: &Reply) -> String {
    make_id("msg_", reply.seq, "")
}

fn call_item_id(reply: &Reply, k: usize) -> String {
    make_id("fc_", reply.seq, &format!("_{k}"))
}

fn call_id(reply: &Reply, k: usize) -> String {
    make_id("call_", reply.seq, &format!("_{k}"))
}

fn usage(reply: &Reply) -> Value {
    json!({
        "input_tokens": reply.usage.input,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": reply.usage.output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": reply.usage.total(),
    })
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

/// The output items, in their final (completed) form.
fn output_items(reply: &Reply) -> Vec<Value> {
    match &reply.content {
        Content::Text(text) => vec![json!({
            "type": "message",
            "id": message_id(reply),
            "status": "completed",
            "role": "assistant",
            "content": [text_part(text)],
        })],
        Content::ToolCalls(calls) => calls
            .iter()
            .enumerate()
            .map(|(k, c)| {
                json!({
                    "type": "function_call",
                    "id": call_item_id(reply, k),
                    "call_id": call_id(reply, k),
                    "name": c.name,
                    "arguments": c.arguments,
                    "status": "completed",
                })
            })
            .collect(),
    }
}

fn response(reply: &Reply, status: &str, output: Vec<Value>, usage: Value) -> Value {
    json!({
        "id": response_id(reply),
        "object": "response",
        "created_at": reply.created,
        "status": status,
        "error": null,
        "incomplete_details": null,
        "model": reply.model,
        "output": output,
        "parallel_tool_calls": true,
        "usage": usage,
    })
}

/// The non-streamed `response` body.
pub fn render_json(reply: &Reply) -> Value {
    response(reply, "completed", output_items(reply), usage(reply))
}

/// Writes events with increasing `sequence_number`s.
struct Events {
    sse: Sse,
    seq: u64,
}

impl Events {
    fn emit(&mut self, name: &str, mut fields: Value) {
        let mut event = Map::new();
        event.insert("type".to_owned(), Value::from(name));
        event.insert("sequence_number".to_owned(), Value::from(self.seq));
        if let Some(obj) = fields.as_object_mut() {
            event.append(obj);
        }
        self.sse.event(name, &Value::Object(event));
        self.seq = self.seq.saturating_add(1);
    }
}

/// The whole Responses SSE stream.
pub fn render_sse(reply: &Reply) -> Vec<u8> {
    let mut ev = Events {
        sse: Sse::default(),
        seq: 0,
    };
    let pending = response(reply, "in_progress", Vec::new(), Value::Null);
    ev.emit("response.created", json!({"response": pending}));
    ev.emit("response.in_progress", json!({"response": pending}));
    let items = output_items(reply);
    match &reply.content {
        Content::Text(text) => {
            let item_id = message_id(reply);
            ev.emit(
                "response.output_item.added",
                json!({"output_index": 0, "item": {
                    "type": "message", "id": item_id, "status": "in_progress",
                    "role": "assistant", "content": [],
                }}),
            );
            ev.emit(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": text_part("")}),
            );
            for piece in split_deltas(text) {
                ev.emit(
                    "response.output_text.delta",
                    json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []}),
                );
            }
            ev.emit(
                "response.output_text.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
            );
            ev.emit(
                "response.content_part.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": text_part(text)}),
            );
            if let Some(item) = items.first() {
                ev.emit(
                    "response.output_item.done",
                    json!({"output_index": 0, "item": item}),
                );
            }
        }
        Content::ToolCalls(calls) => {
            for (k, call) in calls.iter().enumerate() {
                let item_id = call_item_id(reply, k);
                ev.emit(
                    "response.output_item.added",
                    json!({"output_index": k, "item": {
                        "type": "function_call", "id": item_id, "call_id": call_id(reply, k),
                        "name": call.name, "arguments": "", "status": "in_progress",
                    }}),
                );
                for piece in split_deltas(&call.arguments) {
                    ev.emit(
                        "response.function_call_arguments.delta",
                        json!({"item_id": item_id, "output_index": k, "delta": piece}),
                    );
                }
                ev.emit(
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id, "output_index": k, "name": call.name, "arguments": call.arguments}),
                );
                if let Some(item) = items.get(k) {
                    ev.emit(
                        "response.output_item.done",
                        json!({"output_index": k, "item": item}),
                    );
                }
            }
        }
    }
    ev.emit(
        "response.completed",
        json!({"response": response(reply, "completed", items, usage(reply))}),
    );
    ev.sse.finish()
}
