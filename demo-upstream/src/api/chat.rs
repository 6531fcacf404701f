//! OpenAI Chat Completions: request parsing, `chat.completion` bodies and
//! `chat.completion.chunk` SSE streams.
//!
//! Stream layout (per choice, choices interleaved round-robin, one choice per chunk):
//! a role chunk (`{"role":"assistant","content":""}`, or for tool calls
//! `{"role":"assistant","content":null,"tool_calls":[<first call header>]}`), content deltas of
//! 4-8 characters or tool-call argument fragments (each later call starts with its own header
//! fragment `{index,id,type,function:{name,arguments:""}}`), then a final chunk with an empty
//! delta and `finish_reason`. With `stream_options.include_usage: true` every chunk carries
//! `"usage": null` and a last chunk `{"choices":[],"usage":{...}}` precedes `data: [DONE]`.

use serde_json::{json, Map, Value};

use super::{check_content, content_text, flag, make_id, model, opt_array, Sse};
use crate::answer::{count_words, split_deltas, Content, Prompt, Reply};

/// Largest accepted `n`.
pub const MAX_N: u64 = 8;

/// Parses a Chat Completions request.
pub fn parse(obj: &Map<String, Value>) -> Result<Prompt, String> {
    let model = model(obj)?;
    let stream = flag(obj, "stream")?;
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(opts)) => {
            flag(opts, "include_usage").map_err(|e| format!("stream_options: {e}"))?
        }
        Some(_) => return Err("field `stream_options` must be an object".to_owned()),
    };
    let n = match obj.get("n") {
        None | Some(Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_N).contains(n))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("field `n` must be an integer in 1..={MAX_N}, got {v}"))?,
    };
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| "field `messages` must be a non-empty array".to_owned())?;
    let mut input_words = 0u64;
    let mut last_user: Option<&Value> = None;
    for (i, message) in messages.iter().enumerate() {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("messages[{i}].role must be a string"))?;
        check_content(message.get("content"), &format!("messages[{i}]"))?;
        input_words =
            input_words.saturating_add(count_words(&content_text(message.get("content"))));
        if role == "user" {
            last_user = Some(message);
        }
    }
    let tool_result = messages
        .last()
        .filter(|m| {
            matches!(
                m.get("role").and_then(Value::as_str),
                Some("tool" | "function")
            )
        })
        .map(|m| content_text(m.get("content")));
    let tools = opt_array(obj, "tools")?;
    let first_tool = tools
        .iter()
        .find_map(|t| t.get("function")?.get("name")?.as_str())
        .or_else(|| {
            opt_array(obj, "functions")
                .ok()?
                .iter()
                .find_map(|f| f.get("name")?.as_str())
        })
        .map(str::to_owned);
    Ok(Prompt {
        model,
        stream,
        include_usage,
        n,
        first_tool,
        user_text: content_text(last_user.and_then(|m| m.get("content"))),
        tool_result,
        input_words,
    })
}

fn completion_id(reply: &Reply) -> String {
    make_id("chatcmpl-", reply.seq, "")
}

fn call_id(reply: &Reply, choice: u32, call: usize) -> String {
    make_id("call_", reply.seq, &format!("_{choice}_{call}"))
}

fn finish_reason(content: &Content) -> &'static str {
    match content {
        Content::Text(_) => "stop",
        Content::ToolCalls(_) => "tool_calls",
    }
}

fn usage(reply: &Reply) -> Value {
    json!({
        "prompt_tokens": reply.usage.input,
        "completion_tokens": reply.usage.output,
        "total_tokens": reply.usage.total(),
    })
}

/// The `chat.completion` body.
pub fn render_json(reply: &Reply) -> Value {
    let choices: Vec<Value> = (0..reply.n)
        .map(|i| {
            let message = match &reply.content {
                Content::Text(text) => json!({"role": "assistant", "content": text, "refusal": null}),
                Content::ToolCalls(calls) => {
                    let calls: Vec<Value> = calls
                        .iter()
                        .enumerate()
                        .map(|(k, c)| {
                            json!({
                                "id": call_id(reply, i, k),
                                "type": "function",
                                "function": {"name": c.name, "arguments": c.arguments},
                            })
                        })
                        .collect();
                    json!({"role": "assistant", "content": null, "tool_calls": calls, "refusal": null})
                }
            };
            json!({
                "index": i,
                "message": message,
                "logprobs": null,
                "finish_reason": finish_reason(&reply.content),
            })
        })
        .collect();
    json!({
        "id": completion_id(reply),
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "choices": choices,
        "usage": usage(reply),
    })
}

/// The deltas of one choice, in order (without the final `finish_reason` chunk).
fn choice_deltas(reply: &Reply, choice: u32) -> Vec<Value> {
    let mut deltas = Vec::new();
    match &reply.content {
        Content::Text(text) => {
            deltas.push(json!({"role": "assistant", "content": "", "refusal": null}));
            for piece in split_deltas(text) {
                deltas.push(json!({"content": piece}));
            }
        }
        Content::ToolCalls(calls) => {
            for (k, call) in calls.iter().enumerate() {
                let header = json!({
                    "index": k,
                    "id": call_id(reply, choice, k),
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                });
                if k == 0 {
                    deltas.push(json!({
                        "role": "assistant", "content": null, "tool_calls": [header], "refusal": null,
                    }));
                } else {
                    deltas.push(json!({"tool_calls": [header]}));
                }
                for piece in split_deltas(&call.arguments) {
                    deltas.push(json!({
                        "tool_calls": [{"index": k, "function": {"arguments": piece}}],
                    }));
                }
            }
        }
    }
    deltas
}

/// The whole `chat.completion.chunk` stream, ending with `data: [DONE]`.
pub fn render_sse(reply: &Reply) -> Vec<u8> {
    let id = completion_id(reply);
    let chunk = |choices: Value| -> Value {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": reply.created,
            "model": reply.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if reply.include_usage {
            if let Some(obj) = c.as_object_mut() {
                obj.insert("usage".to_owned(), Value::Null);
            }
        }
        c
    };
    let mut sse = Sse::default();
    let per_choice: Vec<Vec<Value>> = (0..reply.n).map(|i| choice_deltas(reply, i)).collect();
    let longest = per_choice.iter().map(Vec::len).max().unwrap_or(0);
    for step in 0..longest {
        for (i, deltas) in (0u32..).zip(&per_choice) {
            if let Some(delta) = deltas.get(step) {
                sse.data(&chunk(json!([{
                    "index": i, "delta": delta, "logprobs": null, "finish_reason": null,
                }])));
            }
        }
    }
    for i in 0..reply.n {
        sse.data(&chunk(json!([{
            "index": i, "delta": {}, "logprobs": null,
            "finish_reason": finish_reason(&reply.content),
        }])));
    }
    if reply.include_usage {
        sse.data(&json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": reply.created,
            "model": reply.model,
            "system_fingerprint": null,
            "choices": [],
            "usage": usage(reply),
        }));
    }
    sse.done();
    sse.finish()
}
