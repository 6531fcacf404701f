//! Tool-call removal from whole streamed answers (`stream_edit`): each shape's edited stream is
//! decoded and assembled as a client would, the untouched events are checked byte for byte, and
//! the streams that cannot be edited fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::type_complexity
)]

use guard_core::api::ApiShape::{
    self, AnthropicMessages as Anthropic, OpenAiChat as Chat, OpenAiResponses as Responses,
};
use guard_core::sse::{SseEvent, SseParser};
use guard_core::stream::{Assembled, AssembledToolCall, StreamAssembler, StreamDecoder};
use guard_core::stream_edit::{remove_streamed_tool_calls, GUARD_MESSAGE_ID};
use guard_core::ErrorKind;
use serde_json::{json, Value};

const MSG: &str = "The tool call was refused by policy.";
const MAX: usize = 1 << 20;

// ---------------------------------------------------------------- helpers

/// The events of a stream as a client would parse them (the tail flushed as the filters do).
fn events(bytes: &[u8]) -> Vec<SseEvent> {
    let mut p = SseParser::new(MAX);
    let mut out = Vec::new();
    p.push(bytes, &mut |e| out.push(e)).unwrap();
    p.flush_unterminated(&mut |e| out.push(e)).unwrap();
    out
}

/// Decode and assemble; every event must be JSON (or `[DONE]`).
fn assemble(shape: ApiShape, bytes: &[u8]) -> Assembled {
    let mut decoder = StreamDecoder::new(shape);
    let mut asm = StreamAssembler::new(MAX);
    let mut deltas = Vec::new();
    for ev in events(bytes) {
        if ev.data.trim() != "[DONE]" {
            serde_json::from_str::<Value>(&ev.data)
                .unwrap_or_else(|e| panic!("not json: {:?}: {e}", ev.data));
        }
        decoder.decode(&ev, &mut deltas).unwrap();
    }
    for d in &deltas {
        asm.apply(d).unwrap();
    }
    asm.into_result()
}

fn edit(shape: ApiShape, events: &[String], calls: &[(usize, usize)]) -> Vec<u8> {
    remove_streamed_tool_calls(shape, events.concat().as_bytes(), MAX, calls, MSG)
        .unwrap_or_else(|e| panic!("{shape:?} {calls:?}: {e}"))
}

fn call(index: usize, id: &str, name: &str, arguments: &str) -> AssembledToolCall {
    AssembledToolCall {
        index,
        id: Some(id.into()),
        name: Some(name.into()),
        arguments: arguments.into(),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

fn rfind(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .rposition(|w| w == needle)
        .unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// The stream starts with `events[..head]` and ends with `events[tail..]`, byte for byte.
fn assert_untouched(out: &[u8], events: &[String], head: usize, tail: usize, name: &str) {
    let prefix = events[..head].concat();
    let suffix = events[tail..].concat();
    assert!(
        out.starts_with(prefix.as_bytes()),
        "{name}: head changed\n{}",
        String::from_utf8_lossy(out)
    );
    assert!(
        out.ends_with(suffix.as_bytes()),
        "{name}: tail changed\n{}",
        String::from_utf8_lossy(out)
    );
}

fn assert_gone(out: &[u8], words: &[&str], name: &str) {
    for w in words {
        assert!(
            !contains(out, w.as_bytes()),
            "{name}: {w} still in\n{}",
            String::from_utf8_lossy(out)
        );
    }
}

fn crlf(events: &[String]) -> Vec<String> {
    events.iter().map(|e| e.replace('\n', "\r\n")).collect()
}

// ---------------------------------------------------------------- OpenAI Chat

fn chunk(choices: Value) -> String {
    chunk_usage(choices, Value::Null)
}

fn chunk_usage(choices: Value, usage: Value) -> String {
    let v = json!({"id": "chatcmpl-9x", "object": "chat.completion.chunk", "created": 1741569952,
        "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_06737a9306",
        "choices": choices, "usage": usage});
    format!("data: {v}\n\n")
}

fn delta(d: Value) -> String {
    chunk(json!([{"index": 0, "delta": d, "logprobs": null, "finish_reason": null}]))
}

fn tool(index: usize, id: Option<&str>, name: Option<&str>, args: &str) -> Value {
    let mut v = json!({"index": index, "function": {"arguments": args}});
    if let Some(id) = id {
        v["id"] = json!(id);
        v["type"] = json!("function");
    }
    if let Some(name) = name {
        v["function"]["name"] = json!(name);
    }
    v
}

/// Text, then two tool calls (one chunk carries both), finish, usage chunk, `[DONE]`.
fn chat_text_two_calls() -> Vec<String> {
    vec![
        delta(json!({"role": "assistant", "content": ""})),
        format!(": keep-alive\n\n{}", delta(json!({"content": "Let me "}))),
        delta(json!({"content": "check."})),
        delta(json!({"tool_calls": [tool(0, Some("call_W"), Some("get_weather"), "")]})),
        delta(json!({"tool_calls": [tool(0, None, None, "{\"city\":")]})),
        delta(json!({"tool_calls": [
            tool(0, None, None, "\"Paris\"}"),
            tool(1, Some("call_T"), Some("get_time"), "")
        ]})),
        delta(json!({"tool_calls": [tool(1, None, None, "{\"tz\":\"CET\"}")]})),
        chunk(json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "tool_calls"}])),
        chunk_usage(
            json!([]),
            json!({"prompt_tokens": 81, "completion_tokens": 46, "total_tokens": 127}),
        ),
        "data: [DONE]\n\n".to_string(),
    ]
}

#[test]
fn chat_removes_calls() {
    let weather = call(0, "call_W", "get_weather", "{\"city\":\"Paris\"}");
    // (name, calls, kept calls (renumbered), finish, untouched head events, gone words)
    type Case = (
        &'static str,
        Vec<(usize, usize)>,
        Vec<AssembledToolCall>,
        &'static str,
        usize,
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "remove first, second renumbered",
            vec![(0, 0)],
            vec![call(0, "call_T", "get_time", "{\"tz\":\"CET\"}")],
            "tool_calls",
            3,
            vec!["call_W", "get_weather", "Paris"],
        ),
        (
            "remove second",
            vec![(0, 1)],
            vec![weather.clone()],
            "tool_calls",
            5,
            vec!["call_T", "get_time", "CET"],
        ),
        (
            "remove both",
            vec![(0, 1), (0, 0), (0, 1)],
            vec![],
            "stop",
            3,
            vec!["call_W", "call_T", "tool_calls"],
        ),
    ];
    for (variant, input) in [
        ("lf", chat_text_two_calls()),
        ("crlf", crlf(&chat_text_two_calls())),
    ] {
        for (name, calls, kept, finish, head, gone) in &cases {
            let name = format!("{variant} {name}");
            let out = edit(Chat, &input, calls);
            let got = assemble(Chat, &out);
            let ch = &got.choices[0];
            assert_eq!(ch.content, format!("Let me check.\n\n{MSG}"), "{name}");
            assert_eq!(&ch.tool_calls, kept, "{name}");
            assert_eq!(ch.finish_reason.as_deref(), Some(*finish), "{name}");
            assert!(got.done, "{name}");
            assert_eq!(got.usage.map(|u| u.output_tokens), Some(46), "{name}");
            assert_untouched(&out, &input, *head, input.len() - 2, &name);
            assert_gone(&out, gone, &name);
            // The message chunk comes right before the finish chunk.
            let evs = events(&out);
            let pos = evs
                .iter()
                .position(|e| {
                    serde_json::from_str::<Value>(&e.data)
                        .is_ok_and(|v| v["choices"][0]["finish_reason"].is_string())
                })
                .unwrap();
            assert!(evs[pos - 1].data.contains(MSG), "{name}");
        }
    }
}

#[test]
fn chat_only_a_tool_call() {
    let input = vec![
        delta(json!({"role": "assistant", "content": null,
            "tool_calls": [tool(0, Some("call_P"), Some("pay"), "")], "refusal": null})),
        delta(json!({"tool_calls": [tool(0, None, None, "{\"amount\":")]})),
        delta(json!({"tool_calls": [tool(0, None, None, "900}")]})),
        chunk(json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "tool_calls"}])),
        "data: [DONE]".to_string(), // unterminated: kept as it came
    ];
    let out = edit(Chat, &input, &[(0, 0)]);
    let got = assemble(Chat, &out);
    assert_eq!(got.choices[0].content, MSG);
    assert!(got.choices[0].tool_calls.is_empty());
    assert_eq!(got.choices[0].finish_reason.as_deref(), Some("stop"));
    assert!(got.done);
    assert_gone(&out, &["call_P", "amount", "tool_calls"], "only call");
    // The role chunk stays (without its call), the argument chunks go.
    let evs = events(&out);
    assert_eq!(evs.len(), 4);
    assert_eq!(
        serde_json::from_str::<Value>(&evs[0].data).unwrap()["choices"][0]["delta"],
        json!({"role": "assistant", "content": null, "refusal": null})
    );
    assert!(out.ends_with(b"data: [DONE]"));
}

#[test]
fn chat_content_in_finish_chunk_and_unterminated_finish() {
    let input = vec![
        delta(json!({"role": "assistant", "content": "Paying"})),
        delta(json!({"tool_calls": [tool(0, Some("call_P"), Some("pay"), "{}")]})),
        // Content and finish in one chunk, and no blank line after it.
        chunk(json!([{"index": 0, "delta": {"content": " now."}, "finish_reason": "tool_calls"}]))
            .trim_end()
            .to_string(),
    ];
    let out = edit(Chat, &input, &[(0, 0)]);
    let got = assemble(Chat, &out);
    assert_eq!(got.choices[0].content, format!("Paying now.\n\n{MSG}"));
    assert_eq!(got.choices[0].finish_reason.as_deref(), Some("stop"));
    assert!(out.ends_with(b"\n\n"), "the rewritten tail is terminated");
    assert_eq!(events(&out).len(), 2);
}

#[test]
fn chat_two_choices_only_one_edited() {
    let c = |i: usize, d: Value, f: Value| json!({"index": i, "delta": d, "finish_reason": f});
    let input = vec![
        chunk(json!([c(
            0,
            json!({"role": "assistant", "content": "A"}),
            Value::Null
        )])),
        chunk(json!([c(
            1,
            json!({"role": "assistant", "content": "B"}),
            Value::Null
        )])),
        chunk(json!([c(
            1,
            json!({"tool_calls": [tool(0, Some("call_X"), Some("x"), "{}")]}),
            Value::Null
        )])),
        chunk(json!([c(
            0,
            json!({"tool_calls": [tool(0, Some("call_Y"), Some("y"), "{}")]}),
            Value::Null
        )])),
        chunk(json!([
            c(0, json!({}), json!("tool_calls")),
            c(1, json!({}), json!("tool_calls"))
        ])),
        "data: [DONE]\n\n".to_string(),
    ];
    let out = edit(Chat, &input, &[(1, 0)]);
    let got = assemble(Chat, &out);
    assert_eq!(got.choices[0].content, "A");
    assert_eq!(
        got.choices[0].tool_calls,
        vec![call(0, "call_Y", "y", "{}")]
    );
    assert_eq!(got.choices[0].finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(got.choices[1].content, format!("B\n\n{MSG}"));
    assert!(got.choices[1].tool_calls.is_empty());
    assert_eq!(got.choices[1].finish_reason.as_deref(), Some("stop"));
    assert!(contains(&out, input[3].as_bytes()));
    assert_gone(&out, &["call_X"], "n2");
}

// ---------------------------------------------------------------- Anthropic

fn ev(ty: &str, v: Value) -> String {
    format!("event: {ty}\ndata: {v}\n\n")
}

fn block_start(i: usize, block: Value) -> String {
    ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": i, "content_block": block}),
    )
}

fn block_delta(i: usize, d: Value) -> String {
    ev(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": i, "delta": d}),
    )
}

fn block_stop(i: usize) -> String {
    ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": i}),
    )
}

fn json_delta(s: &str) -> Value {
    json!({"type": "input_json_delta", "partial_json": s})
}

fn tool_use(id: &str, name: &str) -> Value {
    json!({"type": "tool_use", "id": id, "name": name, "input": {}})
}

fn anthropic_text_two_calls() -> Vec<String> {
    vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1",
            "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
            "stop_reason": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        ),
        block_start(0, json!({"type": "text", "text": ""})),
        ev("ping", json!({"type": "ping"})),
        block_delta(0, json!({"type": "text_delta", "text": "Let me check."})),
        block_stop(0),
        block_start(1, tool_use("toolu_W", "get_weather")),
        block_delta(1, json_delta("")),
        block_delta(1, json_delta("{\"city\":")),
        block_delta(1, json_delta("\"Paris\"}")),
        block_stop(1),
        // An id line and a comment before a block that may be renumbered.
        format!(
            ": keep-alive\n\nid: 7\n{}",
            block_start(2, tool_use("toolu_T", "get_time"))
        ),
        block_delta(2, json_delta("{\"tz\":\"CET\"}")),
        block_stop(2),
        ev(
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": 89}}),
        ),
        ev("message_stop", json!({"type": "message_stop"})),
    ]
}

#[test]
fn anthropic_removes_blocks() {
    type Case = (
        &'static str,
        Vec<(usize, usize)>,
        Vec<AssembledToolCall>,
        &'static str,
        usize,
        usize,
        Vec<&'static str>,
    );
    // (name, calls, kept calls, stop reason, text block index, untouched head, gone words)
    let cases: Vec<Case> = vec![
        (
            "remove first, second renumbered",
            vec![(0, 1)],
            vec![call(1, "toolu_T", "get_time", "{\"tz\":\"CET\"}")],
            "tool_use",
            2,
            5,
            vec!["toolu_W", "get_weather", "Paris"],
        ),
        (
            "remove second",
            vec![(0, 2)],
            vec![call(1, "toolu_W", "get_weather", "{\"city\":\"Paris\"}")],
            "tool_use",
            2,
            10,
            vec!["toolu_T", "get_time", "CET"],
        ),
        (
            "remove both",
            vec![(0, 2), (0, 1)],
            vec![],
            "end_turn",
            1,
            5,
            vec!["toolu_W", "toolu_T", "\"tool_use\""],
        ),
    ];
    for (variant, input) in [
        ("lf", anthropic_text_two_calls()),
        ("crlf", crlf(&anthropic_text_two_calls())),
    ] {
        for (name, calls, kept, stop, text_at, head, gone) in &cases {
            let name = format!("{variant} {name}");
            let out = edit(Anthropic, &input, calls);
            let got = assemble(Anthropic, &out);
            let ch = &got.choices[0];
            assert_eq!(ch.content, format!("Let me check.{MSG}"), "{name}");
            assert_eq!(&ch.tool_calls, kept, "{name}");
            assert_eq!(ch.finish_reason.as_deref(), Some(*stop), "{name}");
            assert!(got.done, "{name}");
            assert_eq!(got.usage.map(|u| u.output_tokens), Some(89), "{name}");
            let tail = if *stop == "tool_use" { 13 } else { 14 };
            assert_untouched(&out, &input, *head, tail, &name);
            assert_gone(&out, gone, &name);
            let evs = events(&out);
            let text_start = evs
                .iter()
                .find(|e| e.data.contains("\"type\":\"text\"") && !e.data.contains("index\":0"))
                .unwrap();
            let v: Value = serde_json::from_str(&text_start.data).unwrap();
            assert_eq!(v["index"], json!(text_at), "{name}");
            if calls == &vec![(0, 1)] {
                // The renumbered block kept its id line and the comment before it.
                let moved = evs.iter().find(|e| e.data.contains("toolu_T")).unwrap();
                assert!(contains(&moved.raw, b": keep-alive"), "{name}");
                assert!(contains(&moved.raw, b"id: 7"), "{name}");
                assert!(moved.data.contains("\"index\":1"), "{name}");
            }
        }
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/sse/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn anthropic_fixture_only_tool_call() {
    let input = fixture("anthropic_tools_thinking.sse");
    let before = assemble(Anthropic, &input);
    let out = remove_streamed_tool_calls(Anthropic, &input, MAX, &[(0, 2)], MSG).unwrap();
    let got = assemble(Anthropic, &out);
    let ch = &got.choices[0];
    assert_eq!(ch.reasoning, before.choices[0].reasoning);
    assert_eq!(ch.content, format!("Let me check the weather.{MSG}"));
    assert!(ch.tool_calls.is_empty());
    assert_eq!(ch.finish_reason.as_deref(), Some("end_turn"));
    assert!(got.done);
    assert!(out.ends_with(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    // Everything before the tool block (thinking and text blocks) is untouched.
    let tool_at = find(&input, b"\"index\":2,");
    let head = &input[..rfind(&input[..tool_at], b"event:")];
    assert!(out.starts_with(head));
}

// ---------------------------------------------------------------- OpenAI Responses

#[test]
fn responses_fixture_only_tool_call() {
    let input = fixture("responses_tools.sse");
    let out = remove_streamed_tool_calls(Responses, &input, MAX, &[(0, 2)], MSG).unwrap();
    let got = assemble(Responses, &out);
    let ch = &got.choices[0];
    assert_eq!(ch.content, format!("Let me check.{MSG}"));
    assert!(ch.tool_calls.is_empty());
    assert_eq!(ch.finish_reason.as_deref(), Some("completed"));
    assert!(got.done);
    assert_gone(
        &out,
        &["fc_68af3b20b7c48190", "call_Xa1b2C3d4E5f6G7h"],
        "responses fixture",
    );
    // The output of the final response: reasoning, message, then the guard's message.
    let evs = events(&out);
    let last: Value = serde_json::from_str(&evs.last().unwrap().data).unwrap();
    assert_eq!(last["type"], "response.completed");
    let output = last["response"]["output"].as_array().unwrap();
    assert_eq!(output.len(), 3);
    assert_eq!(output[2]["id"], GUARD_MESSAGE_ID);
    assert_eq!(output[2]["content"][0]["text"], MSG);
    assert_responses_sequence(&evs);
    // Untouched head: everything up to the function call item.
    let head_end = rfind(&input[..find(&input, b"\"output_index\":2")], b"event:");
    assert!(out.starts_with(&input[..head_end]));
}

/// Sequence numbers strictly increase, and the added message's events are in place.
fn assert_responses_sequence(evs: &[SseEvent]) {
    let seqs: Vec<u64> = evs
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["sequence_number"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let types: Vec<String> = evs
        .iter()
        .rev()
        .take(7)
        .rev()
        .map(|e| e.event.clone().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
}

fn rev(ty: &str, seq: u64, mut v: Value) -> String {
    v["type"] = json!(ty);
    v["sequence_number"] = json!(seq);
    // Keep `type` and `sequence_number` first, as OpenAI does.
    let mut o = serde_json::Map::new();
    o.insert("type".into(), json!(ty));
    o.insert("sequence_number".into(), json!(seq));
    for (k, x) in v.as_object().unwrap() {
        o.entry(k.clone()).or_insert_with(|| x.clone());
    }
    ev(ty, Value::Object(o))
}

fn fc_item(id: &str, call_id: &str, name: &str, args: &str, status: &str) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "arguments": args,
        "call_id": call_id, "name": name})
}

fn responses_text_two_calls() -> Vec<String> {
    let msg_item = |status: &str, text: Option<&str>| {
        let content = text.map_or(
            json!([]),
            |t| json!([{"type": "output_text", "annotations": [], "text": t}]),
        );
        json!({"id": "msg_1", "type": "message", "status": status, "content": content,
            "role": "assistant"})
    };
    let response = |status: &str, output: Value| {
        json!({"id": "resp_1", "object": "response", "status": status, "model": "gpt-4.1",
            "output": output, "usage": if status == "completed" {
                json!({"input_tokens": 10, "output_tokens": 20, "total_tokens": 30})
            } else { Value::Null }})
    };
    let w_done = fc_item(
        "fc_W",
        "call_W",
        "get_weather",
        "{\"city\":\"Paris\"}",
        "completed",
    );
    let t_done = fc_item(
        "fc_T",
        "call_T",
        "get_time",
        "{\"tz\":\"CET\"}",
        "completed",
    );
    vec![
        rev(
            "response.created",
            0,
            json!({"response": response("in_progress", json!([]))}),
        ),
        rev(
            "response.output_item.added",
            1,
            json!({"output_index": 0, "item": msg_item("in_progress", None)}),
        ),
        rev(
            "response.output_text.delta",
            2,
            json!({"item_id": "msg_1", "output_index": 0,
            "content_index": 0, "delta": "Let me check."}),
        ),
        rev(
            "response.output_text.done",
            3,
            json!({"item_id": "msg_1", "output_index": 0,
            "content_index": 0, "text": "Let me check."}),
        ),
        rev(
            "response.output_item.done",
            4,
            json!({"output_index": 0,
            "item": msg_item("completed", Some("Let me check."))}),
        ),
        rev(
            "response.output_item.added",
            5,
            json!({"output_index": 1,
            "item": fc_item("fc_W", "call_W", "get_weather", "", "in_progress")}),
        ),
        rev(
            "response.function_call_arguments.delta",
            6,
            json!({"item_id": "fc_W",
            "output_index": 1, "delta": "{\"city\":\"Paris\"}"}),
        ),
        rev(
            "response.function_call_arguments.done",
            7,
            json!({"item_id": "fc_W",
            "output_index": 1, "arguments": "{\"city\":\"Paris\"}"}),
        ),
        rev(
            "response.output_item.done",
            8,
            json!({"output_index": 1, "item": w_done}),
        ),
        rev(
            "response.output_item.added",
            9,
            json!({"output_index": 2,
            "item": fc_item("fc_T", "call_T", "get_time", "", "in_progress")}),
        ),
        rev(
            "response.function_call_arguments.delta",
            10,
            json!({"item_id": "fc_T",
            "output_index": 2, "delta": "{\"tz\":\"CET\"}"}),
        ),
        rev(
            "response.function_call_arguments.done",
            11,
            json!({"item_id": "fc_T",
            "output_index": 2, "arguments": "{\"tz\":\"CET\"}"}),
        ),
        rev(
            "response.output_item.done",
            12,
            json!({"output_index": 2, "item": t_done}),
        ),
        rev(
            "response.completed",
            13,
            json!({"response": response("completed",
            json!([msg_item("completed", Some("Let me check.")), w_done, t_done]))}),
        ),
    ]
}

#[test]
fn responses_removes_items() {
    type Case = (
        &'static str,
        Vec<(usize, usize)>,
        Vec<AssembledToolCall>,
        Vec<&'static str>,
        usize,
        Vec<&'static str>,
    );
    // (name, calls, kept calls, final output item ids, untouched head, gone words)
    let cases: Vec<Case> = vec![
        (
            "remove first, second renumbered",
            vec![(0, 1)],
            vec![call(1, "call_T", "get_time", "{\"tz\":\"CET\"}")],
            vec!["msg_1", "fc_T", GUARD_MESSAGE_ID],
            5,
            vec!["call_W", "fc_W", "Paris"],
        ),
        (
            "remove second",
            vec![(0, 2)],
            vec![call(1, "call_W", "get_weather", "{\"city\":\"Paris\"}")],
            vec!["msg_1", "fc_W", GUARD_MESSAGE_ID],
            9,
            vec!["call_T", "fc_T", "CET"],
        ),
        (
            "remove both",
            vec![(0, 1), (0, 2)],
            vec![],
            vec!["msg_1", GUARD_MESSAGE_ID],
            5,
            vec!["call_W", "call_T", "function_call"],
        ),
    ];
    for (variant, input) in [
        ("lf", responses_text_two_calls()),
        ("crlf", crlf(&responses_text_two_calls())),
    ] {
        for (name, calls, kept, ids, head, gone) in &cases {
            let name = format!("{variant} {name}");
            let out = edit(Responses, &input, calls);
            let got = assemble(Responses, &out);
            let ch = &got.choices[0];
            assert_eq!(ch.content, format!("Let me check.{MSG}"), "{name}");
            assert_eq!(&ch.tool_calls, kept, "{name}");
            assert_eq!(ch.finish_reason.as_deref(), Some("completed"), "{name}");
            assert!(got.done, "{name}");
            assert_eq!(got.usage.map(|u| u.output_tokens), Some(20), "{name}");
            assert_untouched(&out, &input, *head, input.len(), &name);
            assert_gone(&out, gone, &name);
            let evs = events(&out);
            assert_responses_sequence(&evs);
            let last: Value = serde_json::from_str(&evs.last().unwrap().data).unwrap();
            let got_ids: Vec<&str> = last["response"]["output"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap())
                .collect();
            assert_eq!(&got_ids, ids, "{name}");
            // Every output_index points at the item's place in the final output.
            for e in &evs {
                let v: Value = serde_json::from_str(&e.data).unwrap();
                if let Some(i) = v["output_index"].as_u64() {
                    let id = v["item"]["id"].as_str().or(v["item_id"].as_str()).unwrap();
                    assert_eq!(got_ids[i as usize], id, "{name}: {}", e.data);
                }
            }
        }
    }
}

// ---------------------------------------------------------------- failures

#[test]
fn streams_that_cannot_be_edited() {
    let chat = chat_text_two_calls();
    let anthropic = anthropic_text_two_calls();
    let responses = responses_text_two_calls();
    let failed = {
        let mut r = responses.clone();
        let last = r.pop().unwrap();
        r.push(
            last.replace("response.completed", "response.failed")
                .replace(
                    "\"status\":\"completed\",\"model\"",
                    "\"status\":\"failed\",\"model\"",
                ),
        );
        r
    };
    // (name, shape, stream, calls, max event bytes, error kind)
    let cases: Vec<(
        &str,
        ApiShape,
        String,
        Vec<(usize, usize)>,
        usize,
        ErrorKind,
    )> = vec![
        (
            "chat without finish_reason",
            Chat,
            chat[..7].concat(),
            vec![(0, 0)],
            MAX,
            ErrorKind::Unparsable,
        ),
        (
            "chat call not in the stream",
            Chat,
            chat.concat(),
            vec![(0, 0), (0, 5)],
            MAX,
            ErrorKind::BadLocation,
        ),
        (
            "chat choice not in the stream",
            Chat,
            chat.concat(),
            vec![(3, 0)],
            MAX,
            ErrorKind::BadLocation,
        ),
        (
            "chat event not json",
            Chat,
            format!(
                "{}data: {{\"choices\":\n\n{}",
                chat[..3].concat(),
                chat[3..].concat()
            ),
            vec![(0, 0)],
            MAX,
            ErrorKind::Unparsable,
        ),
        (
            "chat event over the limit",
            Chat,
            chat.concat(),
            vec![(0, 0)],
            100,
            ErrorKind::TooLarge,
        ),
        (
            "anthropic without message_delta",
            Anthropic,
            anthropic[..13].concat(),
            vec![(0, 1)],
            MAX,
            ErrorKind::Unparsable,
        ),
        (
            "anthropic has one choice",
            Anthropic,
            anthropic.concat(),
            vec![(1, 1)],
            MAX,
            ErrorKind::BadLocation,
        ),
        (
            "anthropic block not in the stream",
            Anthropic,
            anthropic.concat(),
            vec![(0, 9)],
            MAX,
            ErrorKind::BadLocation,
        ),
        (
            "responses without terminal event",
            Responses,
            responses[..13].concat(),
            vec![(0, 1)],
            MAX,
            ErrorKind::Unparsable,
        ),
        (
            "responses failed",
            Responses,
            failed.concat(),
            vec![(0, 1)],
            MAX,
            ErrorKind::Unparsable,
        ),
        (
            "responses terminal without output",
            Responses,
            format!(
                "{}{}",
                responses[..13].concat(),
                rev(
                    "response.completed",
                    13,
                    json!({"response": {"status": "completed"}})
                )
            ),
            vec![(0, 1)],
            MAX,
            ErrorKind::Unparsable,
        ),
    ];
    for (name, shape, body, calls, max, kind) in cases {
        let err =
            remove_streamed_tool_calls(shape, body.as_bytes(), max, &calls, MSG).expect_err(name);
        assert_eq!(err.kind(), kind, "{name}: {err}");
    }
}

#[test]
fn no_calls_keeps_the_stream() {
    for (shape, body) in [
        (Chat, chat_text_two_calls().concat()),
        (Anthropic, anthropic_text_two_calls().concat()),
        (Responses, responses_text_two_calls().concat()),
    ] {
        let out = remove_streamed_tool_calls(shape, body.as_bytes(), MAX, &[], MSG).unwrap();
        assert_eq!(out, body.as_bytes(), "{shape:?}");
    }
}

#[test]
fn bom_and_trailing_bytes_kept() {
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend_from_slice(anthropic_text_two_calls().concat().as_bytes());
    body.extend_from_slice(b": bye\n");
    let out = remove_streamed_tool_calls(Anthropic, &body, MAX, &[(0, 1)], MSG).unwrap();
    assert!(out.starts_with(b"\xEF\xBB\xBFevent: message_start\n"));
    assert!(out.ends_with(b"data: {\"type\":\"message_stop\"}\n\n: bye\n"));
    assert_eq!(assemble(Anthropic, &out).choices[0].tool_calls.len(), 1);
}

#[test]
fn long_stream_of_fragments() {
    // Many argument chunks of a removed call and of a kept one.
    let mut input = vec![delta(json!({"role": "assistant", "content": "x"}))];
    input.push(delta(
        json!({"tool_calls": [tool(0, Some("call_A"), Some("a"), "")]}),
    ));
    input.push(delta(
        json!({"tool_calls": [tool(1, Some("call_B"), Some("b"), "")]}),
    ));
    for _ in 0..5_000 {
        input.push(delta(json!({"tool_calls": [tool(0, None, None, "0")]})));
        input.push(delta(json!({"tool_calls": [tool(1, None, None, "1")]})));
    }
    input.push(chunk(
        json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
    ));
    let out = edit(Chat, &input, &[(0, 0)]);
    let got = assemble(Chat, &out);
    assert_eq!(got.choices[0].tool_calls.len(), 1);
    assert_eq!(got.choices[0].tool_calls[0].index, 0);
    assert_eq!(got.choices[0].tool_calls[0].arguments.len(), 5_000);
}

/// Found by the `stream_edit` fuzz target: a Responses argument fragment without
/// `output_index` is read by the decoder as item 0's, so approval-gate judges it with call 0;
/// removing call 0 left that fragment (and a start event without the index) in the stream.
#[test]
fn regression_fuzz_responses_call_event_without_output_index() {
    let added = fc_item("fc_W", "call_W", "get_weather", "", "in_progress");
    let done = fc_item(
        "fc_W",
        "call_W",
        "get_weather",
        "{\"city\":\"Paris\"}",
        "completed",
    );
    let events = vec![
        rev(
            "response.created",
            0,
            json!({"response": {"id": "resp_1", "status": "in_progress", "output": []}}),
        ),
        rev("response.output_item.added", 1, json!({"item": added})),
        rev(
            "response.function_call_arguments.delta",
            2,
            json!({"item_id": "fc_W", "output_index": 0, "delta": "{\"city\":"}),
        ),
        rev(
            "response.function_call_arguments.delta",
            3,
            json!({"item_id": "fc_W", "delta": "\"Paris\"}"}),
        ),
        rev(
            "response.output_item.done",
            4,
            json!({"output_index": 0, "item": done}),
        ),
        rev(
            "response.completed",
            5,
            json!({"response": {"id": "resp_1", "status": "completed", "output": [done]}}),
        ),
    ];
    let before = assemble(Responses, events.concat().as_bytes());
    assert_eq!(before.choices[0].tool_calls.len(), 1);
    assert_eq!(
        before.choices[0].tool_calls[0].arguments,
        "{\"city\":\"Paris\"}"
    );
    let out = edit(Responses, &events, &[(0, 0)]);
    let after = assemble(Responses, &out);
    assert!(
        after.choices[0].tool_calls.is_empty(),
        "{:?}",
        after.choices[0].tool_calls
    );
    assert_gone(&out, &["Paris", "call_W"], "no output_index");
    assert_eq!(after.choices[0].content, MSG);
}
