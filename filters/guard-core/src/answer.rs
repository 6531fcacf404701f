//! Deterministic answers in the request's API shape: what a fallback (docs/fallback.md) sends
//! instead of a failed or refused model answer.
//!
//! - [`whole`]: a complete non-streamed answer (OpenAI Chat Completions `chat.completion`,
//!   OpenAI Responses `response`, Anthropic Messages `message`) whose only text is the given one.
//! - [`stream`]: the same answer as a complete SSE stream, event for event as the provider
//!   sends it (Chat chunks and `[DONE]`; Anthropic `message_start` … `message_stop`; Responses
//!   `response.created` … `response.completed` with sequence numbers).
//! - [`StreamEnding`]: the rest of a stream already under way. It observes the bytes the client
//!   has received ([`StreamEnding::observe`]) and [`StreamEnding::finish`] writes the events that
//!   end it properly with the given text: open Anthropic blocks and Responses items are closed,
//!   the text arrives as a new delta (Chat), block (Anthropic) or message item (Responses), and
//!   the stream ends with the API's own terminal events (`finish_reason: "stop"` + `[DONE]`,
//!   `message_delta` `end_turn` + `message_stop`, `response.completed`). Ids, model and creation
//!   time are taken from what the client already saw, so SDKs accumulate one consistent answer.
//!   [`stream`] is a [`StreamEnding`] that observed nothing.
//!
//! Ids are derived from the request id (`chatcmpl-guard-<rid>`, `msg_guard_<rid>`,
//! `resp_guard_<rid>`); usage is zero (no model ran). Everything is deterministic given the
//! [`AnswerMeta`].
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use guard_core::answer::{self, AnswerMeta};
//! use guard_core::api::ApiShape;
//! use guard_core::body::ResponseBody;
//!
//! let meta = AnswerMeta { api: ApiShape::AnthropicMessages, model: "claude", request_id: "r1", created: 1 };
//! let body = answer::whole(&meta, "Try again later.");
//! let resp = ResponseBody::parse(ApiShape::AnthropicMessages, &body)?;
//! assert_eq!(resp.segments()[0].text, "Try again later.");
//! # Ok(())
//! # }
//! ```

use crate::api::ApiShape;
use crate::sse::SseParser;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// What an answer is made for.
#[derive(Debug, Clone, Copy)]
pub struct AnswerMeta<'a> {
    pub api: ApiShape,
    /// The request's model (`guard-fallback` when empty).
    pub model: &'a str,
    /// The request id (ids of the answer are derived from it).
    pub request_id: &'a str,
    /// Unix seconds (`created` / `created_at`).
    pub created: u64,
}

/// The model name of an answer whose request named none.
pub const FALLBACK_MODEL: &str = "guard-fallback";

/// Most bytes of one observed event (a larger one is skipped, not tracked).
const MAX_OBSERVED_EVENT: usize = 1 << 20;
/// Most bytes of streamed text kept to close open Responses items, and of [`StreamEnding::excerpt`].
const MAX_TRACKED_TEXT: usize = 1 << 20;
const MAX_EXCERPT: usize = 8 * 1024;

impl AnswerMeta<'_> {
    fn model(&self) -> &str {
        if self.model.is_empty() {
            FALLBACK_MODEL
        } else {
            self.model
        }
    }

    /// The request id as an id suffix: `[A-Za-z0-9_-]`, at most 64 chars.
    fn rid(&self) -> String {
        let s: String = self
            .request_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(64)
            .collect();
        if s.is_empty() {
            "0".to_string()
        } else {
            s
        }
    }

    fn chat_id(&self) -> String {
        format!("chatcmpl-guard-{}", self.rid())
    }
    fn message_id(&self) -> String {
        format!("msg_guard_{}", self.rid())
    }
    fn response_id(&self) -> String {
        format!("resp_guard_{}", self.rid())
    }
}

/// A complete non-streamed answer with `text` as its only content.
pub fn whole(meta: &AnswerMeta<'_>, text: &str) -> Vec<u8> {
    let v = match meta.api {
        ApiShape::OpenAiChat => json!({
            "id": meta.chat_id(),
            "object": "chat.completion",
            "created": meta.created,
            "model": meta.model(),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null,
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }),
        ApiShape::AnthropicMessages => json!({
            "id": meta.message_id(),
            "type": "message",
            "role": "assistant",
            "model": meta.model(),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }),
        ApiShape::OpenAiResponses => {
            let mut r =
                responses_base(&meta.response_id(), meta.created, meta.model(), "completed");
            if let Some(o) = r.as_object_mut() {
                o.insert(
                    "output".into(),
                    json!([message_item(&meta.message_id(), text, "completed")]),
                );
                o.insert("usage".into(), responses_usage());
            }
            r
        }
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The same answer as a complete SSE stream.
pub fn stream(meta: &AnswerMeta<'_>, text: &str) -> Vec<u8> {
    StreamEnding::new(meta).finish(text)
}

fn responses_base(id: &str, created: u64, model: &str, status: &str) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": null,
        "incomplete_details": null,
        "model": model,
        "output": [],
        "usage": null,
    })
}

fn responses_usage() -> Value {
    json!({"input_tokens": 0, "output_tokens": 0, "total_tokens": 0})
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message",
        "id": id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    })
}

/// One SSE event (`event:` line when named).
fn event(out: &mut Vec<u8>, name: Option<&str>, data: &Value) {
    if let Some(n) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(n.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&serde_json::to_vec(data).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
}

/// OpenAI Chat: what the client has seen of one choice.
#[derive(Debug, Default, Clone, Copy)]
struct ChatChoice {
    content: bool,
    finished: bool,
}

/// Anthropic: the message and its blocks as seen.
#[derive(Debug, Default)]
struct AnthropicSeen {
    started: bool,
    open: Vec<usize>,
    next_index: usize,
    delta_sent: bool,
}

/// Responses: one output item as seen.
#[derive(Debug, Default)]
struct RespItem {
    item: Value,
    done: bool,
    /// Text of each open content part (by content index).
    parts: BTreeMap<u64, String>,
    /// Content parts already closed (their final part object).
    closed_parts: BTreeMap<u64, Value>,
    arguments: String,
}

#[derive(Debug, Default)]
struct ResponsesSeen {
    /// The `response` object of `response.created` (the client's view of the response).
    response: Option<Value>,
    items: BTreeMap<u64, RespItem>,
    next_seq: u64,
    tracked: usize,
}

/// The rest of a stream already under way: see the module docs.
#[derive(Debug)]
pub struct StreamEnding {
    api: ApiShape,
    id: String,
    model: String,
    created: u64,
    message_id: String,
    parser: SseParser,
    /// The stream is over for the client (terminal event or error event seen): nothing can be
    /// added.
    over: bool,
    chat: BTreeMap<u64, ChatChoice>,
    chat_seen: bool,
    anthropic: AnthropicSeen,
    responses: ResponsesSeen,
    excerpt: String,
}

impl StreamEnding {
    pub fn new(meta: &AnswerMeta<'_>) -> Self {
        let id = match meta.api {
            ApiShape::OpenAiChat => meta.chat_id(),
            ApiShape::AnthropicMessages => meta.message_id(),
            ApiShape::OpenAiResponses => meta.response_id(),
        };
        StreamEnding {
            api: meta.api,
            id,
            model: meta.model().to_string(),
            created: meta.created,
            message_id: meta.message_id(),
            parser: SseParser::new(MAX_OBSERVED_EVENT),
            over: false,
            chat: BTreeMap::new(),
            chat_seen: false,
            anthropic: AnthropicSeen::default(),
            responses: ResponsesSeen::default(),
            excerpt: String::new(),
        }
    }

    /// Bytes the client has received (in order, any chunking).
    pub fn observe(&mut self, bytes: &[u8]) {
        let mut events = Vec::new();
        if self.parser.push(bytes, &mut |e| events.push(e)).is_err() {
            // An event over the bound: start afresh after it (it is not tracked).
            self.parser = SseParser::new(MAX_OBSERVED_EVENT);
        }
        for ev in events {
            self.observe_event(ev);
        }
    }

    fn observe_event(&mut self, ev: crate::sse::SseEvent) {
        if ev.data.trim() == "[DONE]" {
            self.over = true;
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return;
        };
        match self.api {
            ApiShape::OpenAiChat => self.observe_chat(&v),
            ApiShape::AnthropicMessages => self.observe_anthropic(ev.event.as_deref(), &v),
            ApiShape::OpenAiResponses => self.observe_responses(ev.event.as_deref(), &v),
        }
    }

    /// Observe `bytes` (the last bytes that may still go out) up to the stream's terminal
    /// events, and return how many of them come before those: send only that many, then
    /// [`StreamEnding::finish`], so that a refusal that arrives with the upstream's end (Chat's
    /// last `finish_reason` chunk and `[DONE]`, Anthropic's `message_delta` / `message_stop`,
    /// Responses' `response.completed`, an error event) still ends the stream with the text.
    /// Without a terminal event, all of `bytes` are observed and kept.
    pub fn observe_until_end(&mut self, bytes: &[u8]) -> usize {
        let before = self.parser.pending_len();
        let mut events = Vec::new();
        if self.parser.push(bytes, &mut |e| events.push(e)).is_err() {
            self.parser = SseParser::new(MAX_OBSERVED_EVENT);
            return bytes.len();
        }
        let mut offset = 0usize;
        for ev in events {
            if self.is_terminal(&ev) {
                self.parser = SseParser::new(MAX_OBSERVED_EVENT);
                return offset.saturating_sub(before).min(bytes.len());
            }
            offset = offset.saturating_add(ev.raw.len());
            self.observe_event(ev);
        }
        bytes.len()
    }

    /// Whether `ev` ends the stream for the client (checked before it is observed).
    fn is_terminal(&self, ev: &crate::sse::SseEvent) -> bool {
        if ev.data.trim() == "[DONE]" {
            return true;
        }
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return false;
        };
        let ty = v
            .get("type")
            .and_then(Value::as_str)
            .or(ev.event.as_deref())
            .unwrap_or_default();
        match self.api {
            ApiShape::OpenAiChat => {
                if v.get("error").is_some_and(|e| !e.is_null()) {
                    return true;
                }
                let Some(choices) = v.get("choices").and_then(Value::as_array) else {
                    return false;
                };
                // The chunk that finishes the last choice still open.
                let finishing: Vec<u64> = choices
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.get("finish_reason").is_some_and(|f| !f.is_null()))
                    .map(|(pos, c)| c.get("index").and_then(Value::as_u64).unwrap_or(pos as u64))
                    .collect();
                !finishing.is_empty()
                    && self
                        .chat
                        .iter()
                        .all(|(i, c)| c.finished || finishing.contains(i))
            }
            ApiShape::AnthropicMessages => {
                matches!(ty, "message_delta" | "message_stop" | "error")
            }
            ApiShape::OpenAiResponses => matches!(
                ty,
                "response.completed" | "response.incomplete" | "response.failed" | "error"
            ),
        }
    }

    /// Whether the client's stream already ended (a terminal or error event): then
    /// [`StreamEnding::finish`] adds nothing.
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// The answer text the client has seen so far (its last 8 KiB), for an escalation excerpt.
    pub fn excerpt(&self) -> &str {
        &self.excerpt
    }

    fn note_text(&mut self, text: &str) {
        self.excerpt.push_str(text);
        if self.excerpt.len() > MAX_EXCERPT {
            let mut cut = self.excerpt.len() - MAX_EXCERPT;
            while cut < self.excerpt.len() && !self.excerpt.is_char_boundary(cut) {
                cut += 1;
            }
            self.excerpt.drain(..cut);
        }
    }

    fn adopt_ids(&mut self, id: Option<&str>, model: Option<&str>, created: Option<u64>) {
        if let Some(id) = id.filter(|s| !s.is_empty()) {
            id.clone_into(&mut self.id);
        }
        if let Some(m) = model.filter(|s| !s.is_empty()) {
            m.clone_into(&mut self.model);
        }
        if let Some(c) = created {
            self.created = c;
        }
    }

    fn observe_chat(&mut self, v: &Value) {
        if v.get("error").is_some_and(|e| !e.is_null()) {
            self.over = true;
            return;
        }
        if !self.chat_seen {
            self.chat_seen = true;
            self.adopt_ids(
                v.get("id").and_then(Value::as_str),
                v.get("model").and_then(Value::as_str),
                v.get("created").and_then(Value::as_u64),
            );
        }
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            return;
        };
        for (pos, ch) in choices.iter().enumerate() {
            let index = ch
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(pos as u64);
            if self.chat.len() >= crate::stream::MAX_CHANNELS && !self.chat.contains_key(&index) {
                continue;
            }
            let text = ch
                .pointer("/delta/content")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            let finished = ch.get("finish_reason").is_some_and(|f| !f.is_null());
            let state = self.chat.entry(index).or_default();
            if text.is_some() {
                state.content = true;
            }
            if finished {
                state.finished = true;
            }
            if let Some(t) = text {
                self.note_text(&t);
            }
        }
    }

    fn observe_anthropic(&mut self, event: Option<&str>, v: &Value) {
        let ty = v
            .get("type")
            .and_then(Value::as_str)
            .or(event)
            .unwrap_or_default();
        let index = v
            .get("index")
            .and_then(Value::as_u64)
            .and_then(|i| usize::try_from(i).ok());
        match ty {
            "message_start" => {
                self.anthropic.started = true;
                let msg = v.get("message");
                self.adopt_ids(
                    msg.and_then(|m| m.get("id")).and_then(Value::as_str),
                    msg.and_then(|m| m.get("model")).and_then(Value::as_str),
                    None,
                );
            }
            "content_block_start" => {
                if let Some(i) = index {
                    let a = &mut self.anthropic;
                    if !a.open.contains(&i) && a.open.len() < crate::stream::MAX_CHANNELS {
                        a.open.push(i);
                    }
                    a.next_index = a.next_index.max(i.saturating_add(1));
                }
            }
            "content_block_delta" => {
                if let Some(t) = v.pointer("/delta/text").and_then(Value::as_str) {
                    self.note_text(t);
                }
            }
            "content_block_stop" => {
                if let Some(i) = index {
                    self.anthropic.open.retain(|o| *o != i);
                }
            }
            "message_delta" => self.anthropic.delta_sent = true,
            "message_stop" | "error" => self.over = true,
            _ => {}
        }
    }

    fn observe_responses(&mut self, event: Option<&str>, v: &Value) {
        let ty = v
            .get("type")
            .and_then(Value::as_str)
            .or(event)
            .unwrap_or_default();
        if let Some(n) = v.get("sequence_number").and_then(Value::as_u64) {
            self.responses.next_seq = self.responses.next_seq.max(n.saturating_add(1));
        }
        let out_index = v.get("output_index").and_then(Value::as_u64);
        let content_index = v.get("content_index").and_then(Value::as_u64).unwrap_or(0);
        match ty {
            "response.created" | "response.in_progress" => {
                if let Some(r) = v.get("response") {
                    if self.responses.response.is_none() {
                        self.adopt_ids(
                            r.get("id").and_then(Value::as_str),
                            r.get("model").and_then(Value::as_str),
                            r.get("created_at").and_then(Value::as_u64),
                        );
                    }
                    self.responses.response = Some(r.clone());
                }
            }
            "response.output_item.added" => {
                if let (Some(i), Some(item)) = (out_index, v.get("item")) {
                    if self.responses.items.len() < crate::stream::MAX_CHANNELS {
                        self.responses.items.insert(
                            i,
                            RespItem {
                                item: item.clone(),
                                ..RespItem::default()
                            },
                        );
                    }
                }
            }
            "response.content_part.added" => {
                if let Some(item) = out_index.and_then(|i| self.responses.items.get_mut(&i)) {
                    item.parts.insert(content_index, String::new());
                }
            }
            "response.output_text.delta" => {
                let delta = v.get("delta").and_then(Value::as_str).unwrap_or_default();
                let room = MAX_TRACKED_TEXT.saturating_sub(self.responses.tracked);
                if let Some(item) = out_index.and_then(|i| self.responses.items.get_mut(&i)) {
                    if delta.len() <= room {
                        item.parts.entry(content_index).or_default().push_str(delta);
                        self.responses.tracked += delta.len();
                    }
                }
                self.note_text(delta);
            }
            "response.content_part.done" => {
                if let Some(item) = out_index.and_then(|i| self.responses.items.get_mut(&i)) {
                    item.parts.remove(&content_index);
                    if let Some(p) = v.get("part") {
                        item.closed_parts.insert(content_index, p.clone());
                    }
                }
            }
            "response.function_call_arguments.delta" => {
                let delta = v.get("delta").and_then(Value::as_str).unwrap_or_default();
                let room = MAX_TRACKED_TEXT.saturating_sub(self.responses.tracked);
                if let Some(item) = out_index.and_then(|i| self.responses.items.get_mut(&i)) {
                    if delta.len() <= room {
                        item.arguments.push_str(delta);
                        self.responses.tracked += delta.len();
                    }
                }
            }
            "response.output_item.done" => {
                if let Some(i) = out_index {
                    let entry = self.responses.items.entry(i).or_default();
                    entry.done = true;
                    if let Some(item) = v.get("item") {
                        entry.item = item.clone();
                    }
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" | "error" => {
                self.over = true;
            }
            _ => {}
        }
    }

    /// The events that end the stream with `text` (empty when the stream is already over).
    pub fn finish(&mut self, text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        if self.over {
            return out;
        }
        // A partial event the client got (never from our filters, which emit whole events):
        // terminate it so that our events parse on their own.
        if self.parser.pending_len() > 0 {
            out.extend_from_slice(b"\n\n");
        }
        match self.api {
            ApiShape::OpenAiChat => self.finish_chat(text, &mut out),
            ApiShape::AnthropicMessages => self.finish_anthropic(text, &mut out),
            ApiShape::OpenAiResponses => self.finish_responses(text, &mut out),
        }
        self.over = true;
        out
    }

    fn chat_chunk(&self, index: u64, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": index,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish,
            }],
        })
    }

    fn finish_chat(&mut self, text: &str, out: &mut Vec<u8>) {
        let mut open: Vec<(u64, ChatChoice)> = self
            .chat
            .iter()
            .filter(|(_, c)| !c.finished)
            .map(|(i, c)| (*i, *c))
            .collect();
        if self.chat.is_empty() {
            // Nothing seen: the stream starts here, with the role.
            event(
                out,
                None,
                &self.chat_chunk(0, json!({"role": "assistant", "content": ""}), None),
            );
            open.push((0, ChatChoice::default()));
        }
        for (index, choice) in &open {
            let text = if choice.content {
                format!("\n\n{text}")
            } else {
                text.to_string()
            };
            event(
                out,
                None,
                &self.chat_chunk(*index, json!({"content": text}), None),
            );
            event(out, None, &self.chat_chunk(*index, json!({}), Some("stop")));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    fn finish_anthropic(&mut self, text: &str, out: &mut Vec<u8>) {
        let a = &mut self.anthropic;
        if !a.started {
            event(
                out,
                Some("message_start"),
                &json!({"type": "message_start", "message": {
                    "id": self.id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                }}),
            );
        }
        a.open.sort_unstable();
        for i in a.open.drain(..) {
            event(
                out,
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": i}),
            );
        }
        if !a.delta_sent {
            let i = a.next_index;
            event(
                out,
                Some("content_block_start"),
                &json!({"type": "content_block_start", "index": i,
                        "content_block": {"type": "text", "text": ""}}),
            );
            event(
                out,
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": i,
                        "delta": {"type": "text_delta", "text": text}}),
            );
            event(
                out,
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": i}),
            );
            event(
                out,
                Some("message_delta"),
                &json!({"type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                        "usage": {"output_tokens": 0}}),
            );
        }
        event(out, Some("message_stop"), &json!({"type": "message_stop"}));
    }

    fn responses_event(&mut self, out: &mut Vec<u8>, name: &str, fields: Value) {
        let mut ev = Map::new();
        ev.insert("type".into(), Value::from(name));
        ev.insert(
            "sequence_number".into(),
            Value::from(self.responses.next_seq),
        );
        if let Value::Object(mut f) = fields {
            ev.append(&mut f);
        }
        event(out, Some(name), &Value::Object(ev));
        self.responses.next_seq = self.responses.next_seq.saturating_add(1);
    }

    fn finish_responses(&mut self, text: &str, out: &mut Vec<u8>) {
        let base = match &self.responses.response {
            Some(r) => r.clone(),
            None => {
                let r = responses_base(&self.id, self.created, &self.model, "in_progress");
                self.responses_event(out, "response.created", json!({"response": r}));
                r
            }
        };
        // Close what is open, in output order.
        let open: Vec<u64> = self
            .responses
            .items
            .iter()
            .filter(|(_, it)| !it.done)
            .map(|(i, _)| *i)
            .collect();
        for i in open {
            let Some(mut it) = self.responses.items.remove(&i) else {
                continue;
            };
            let item_id = it
                .item
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let kind = it
                .item
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let parts = std::mem::take(&mut it.parts);
            for (ci, part_text) in parts {
                self.responses_event(
                    out,
                    "response.output_text.done",
                    json!({"item_id": item_id, "output_index": i, "content_index": ci,
                           "text": part_text, "logprobs": []}),
                );
                let part = json!({"type": "output_text", "text": part_text, "annotations": []});
                self.responses_event(
                    out,
                    "response.content_part.done",
                    json!({"item_id": item_id, "output_index": i, "content_index": ci,
                           "part": part}),
                );
                it.closed_parts.insert(ci, part);
            }
            if kind == "function_call" {
                self.responses_event(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id, "output_index": i, "arguments": it.arguments}),
                );
            }
            if let Some(obj) = it.item.as_object_mut() {
                obj.insert("status".into(), json!("completed"));
                if kind == "message" {
                    let content: Vec<Value> = it.closed_parts.values().cloned().collect();
                    obj.insert("content".into(), Value::Array(content));
                } else if kind == "function_call" {
                    obj.insert("arguments".into(), json!(it.arguments));
                }
            }
            self.responses_event(
                out,
                "response.output_item.done",
                json!({"output_index": i, "item": it.item}),
            );
            it.done = true;
            self.responses.items.insert(i, it);
        }
        // The text, as a new message item.
        let index = self
            .responses
            .items
            .keys()
            .next_back()
            .map_or(0, |i| i.saturating_add(1));
        let item_id = self.message_id.clone();
        self.responses_event(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": {
                "type": "message", "id": item_id, "status": "in_progress",
                "role": "assistant", "content": [],
            }}),
        );
        self.responses_event(
            out,
            "response.content_part.added",
            json!({"item_id": item_id, "output_index": index, "content_index": 0,
                   "part": {"type": "output_text", "text": "", "annotations": []}}),
        );
        self.responses_event(
            out,
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": index, "content_index": 0,
                   "delta": text, "logprobs": []}),
        );
        self.responses_event(
            out,
            "response.output_text.done",
            json!({"item_id": item_id, "output_index": index, "content_index": 0,
                   "text": text, "logprobs": []}),
        );
        self.responses_event(
            out,
            "response.content_part.done",
            json!({"item_id": item_id, "output_index": index, "content_index": 0,
                   "part": {"type": "output_text", "text": text, "annotations": []}}),
        );
        let item = message_item(&item_id, text, "completed");
        self.responses_event(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        let mut output: Vec<Value> = self
            .responses
            .items
            .values()
            .map(|it| it.item.clone())
            .collect();
        output.push(item);
        let mut done = base;
        if let Some(o) = done.as_object_mut() {
            o.insert("status".into(), json!("completed"));
            o.insert("output".into(), Value::Array(output));
            o.insert("usage".into(), responses_usage());
        }
        self.responses_event(out, "response.completed", json!({"response": done}));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;
    use crate::body::ResponseBody;
    use crate::segment::Source;
    use crate::stream::{Assembled, StreamAssembler, StreamDecoder};

    const APIS: [ApiShape; 3] = [
        ApiShape::OpenAiChat,
        ApiShape::OpenAiResponses,
        ApiShape::AnthropicMessages,
    ];

    fn meta(api: ApiShape) -> AnswerMeta<'static> {
        AnswerMeta {
            api,
            model: "m-1",
            request_id: "req/1 x",
            created: 1_700_000_000,
        }
    }

    /// Parse a stream back the way a client does, in `chunk`-byte pieces.
    fn assemble(api: ApiShape, body: &[u8], chunk: usize) -> Assembled {
        let mut parser = SseParser::new(1 << 20);
        let mut decoder = StreamDecoder::new(api);
        let mut asm = StreamAssembler::new(1 << 20);
        let mut events = Vec::new();
        for piece in body.chunks(chunk.max(1)) {
            parser.push(piece, &mut |e| events.push(e)).unwrap();
        }
        parser.finish(&mut |e| events.push(e)).unwrap();
        assert_eq!(parser.pending_len(), 0, "a trailing partial event");
        let mut deltas = Vec::new();
        for e in &events {
            deltas.clear();
            decoder.decode(e, &mut deltas).unwrap();
            for d in &deltas {
                asm.apply(d).unwrap();
            }
        }
        asm.into_result()
    }

    #[test]
    fn whole_answers_parse_as_answers_of_their_shape() {
        for api in APIS {
            let body = whole(&meta(api), "Sorry — try later.");
            let resp = ResponseBody::parse(api, &body).unwrap();
            assert!(!resp.is_error(), "{api:?}");
            let segs = resp.segments();
            assert_eq!(segs.len(), 1, "{api:?}");
            assert_eq!(segs[0].text, "Sorry — try later.");
            assert_eq!(segs[0].source, Source::Assistant);
            assert_eq!(resp.model(), Some("m-1"));
            assert!(resp.tool_calls().is_empty());
            let u = resp.usage().unwrap();
            assert_eq!((u.input_tokens, u.output_tokens), (0, 0));
            let v: Value = serde_json::from_slice(&body).unwrap();
            let id = v["id"].as_str().unwrap();
            assert!(id.ends_with("req1x"), "{id}");
        }
        // No model in the request.
        let m = AnswerMeta {
            model: "",
            ..meta(ApiShape::OpenAiChat)
        };
        let v: Value = serde_json::from_slice(&whole(&m, "x")).unwrap();
        assert_eq!(v["model"], FALLBACK_MODEL);
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn whole_streams_parse_back_for_any_chunking() {
        for api in APIS {
            let body = stream(&meta(api), "Sorry — try later.");
            for chunk in [1, 3, 7, body.len()] {
                let a = assemble(api, &body, chunk);
                assert!(a.done, "{api:?} not terminated");
                assert_eq!(a.error, None);
                assert_eq!(a.choices.len(), 1, "{api:?}");
                assert_eq!(a.choices[0].content, "Sorry — try later.", "{api:?}");
                assert!(a.choices[0].tool_calls.is_empty());
                assert_eq!(a.model.as_deref(), Some("m-1"));
                let want = match api {
                    ApiShape::OpenAiChat => "stop",
                    ApiShape::AnthropicMessages => "end_turn",
                    ApiShape::OpenAiResponses => "completed",
                };
                assert_eq!(a.choices[0].finish_reason.as_deref(), Some(want), "{api:?}");
            }
        }
    }

    #[test]
    fn responses_stream_is_sequenced_and_complete() {
        let body = stream(&meta(ApiShape::OpenAiResponses), "hi");
        let mut parser = SseParser::new(1 << 20);
        let mut events = Vec::new();
        parser.push(&body, &mut |e| events.push(e)).unwrap();
        let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        for (i, e) in events.iter().enumerate() {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(v["sequence_number"], i as u64);
            assert_eq!(v["type"], e.event.as_deref().unwrap());
        }
        let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
        let resp =
            ResponseBody::from_value(ApiShape::OpenAiResponses, last["response"].clone()).unwrap();
        assert_eq!(resp.segments()[0].text, "hi");
    }

    /// Streams as providers send them, cut after `keep` events.
    fn upstream(api: ApiShape) -> Vec<&'static str> {
        match api {
            ApiShape::OpenAiChat => vec![
                "data: {\"id\":\"chatcmpl-up\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
                "data: {\"id\":\"chatcmpl-up\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"The answer\"},\"finish_reason\":null}]}\n\n",
                "data: {\"id\":\"chatcmpl-up\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" is\"},\"finish_reason\":null}]}\n\n",
            ],
            ApiShape::AnthropicMessages => vec![
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_up\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":3,\"output_tokens\":0}}}\n\n",
                "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"The answer\"}}\n\n",
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" is\"}}\n\n",
            ],
            ApiShape::OpenAiResponses => vec![
                "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_up\",\"object\":\"response\",\"created_at\":5,\"status\":\"in_progress\",\"model\":\"gpt-x\",\"output\":[]}}\n\n",
                "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":1,\"output_index\":0,\"item\":{\"type\":\"message\",\"id\":\"msg_up\",\"status\":\"in_progress\",\"role\":\"assistant\",\"content\":[]}}\n\n",
                "event: response.content_part.added\ndata: {\"type\":\"response.content_part.added\",\"sequence_number\":2,\"item_id\":\"msg_up\",\"output_index\":0,\"content_index\":0,\"part\":{\"type\":\"output_text\",\"text\":\"\",\"annotations\":[]}}\n\n",
                "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":3,\"item_id\":\"msg_up\",\"output_index\":0,\"content_index\":0,\"delta\":\"The answer\"}\n\n",
                "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_up\",\"output_index\":0,\"content_index\":0,\"delta\":\" is\"}\n\n",
            ],
        }
    }

    #[test]
    fn an_ending_continues_a_stream_under_way_at_any_point() {
        for api in APIS {
            let events = upstream(api);
            for keep in 0..=events.len() {
                let prefix: Vec<u8> = events[..keep].concat().into_bytes();
                let mut ending = StreamEnding::new(&meta(api));
                // Observed in odd pieces, as chunks arrive.
                for piece in prefix.chunks(5) {
                    ending.observe(piece);
                }
                let tail = ending.finish("Withheld.");
                let mut all = prefix.clone();
                all.extend_from_slice(&tail);
                let a = assemble(api, &all, 11);
                assert!(a.done, "{api:?} keep {keep}: not terminated");
                assert_eq!(a.choices.len(), 1, "{api:?} keep {keep}");
                let seen: String = events[..keep]
                    .iter()
                    .filter_map(|e| {
                        if e.contains("\"The answer\"") {
                            Some("The answer")
                        } else if e.contains("\" is\"") {
                            Some(" is")
                        } else {
                            None
                        }
                    })
                    .collect();
                let want = if seen.is_empty() {
                    "Withheld.".to_string()
                } else if api == ApiShape::OpenAiChat {
                    format!("{seen}\n\nWithheld.")
                } else {
                    format!("{seen}Withheld.")
                };
                assert_eq!(a.choices[0].content, want, "{api:?} keep {keep}");
                // The ids the client already saw are kept (Anthropic names its message once).
                if keep > 0 && api != ApiShape::AnthropicMessages {
                    let id = match api {
                        ApiShape::OpenAiChat => "chatcmpl-up",
                        ApiShape::AnthropicMessages => "msg_up",
                        ApiShape::OpenAiResponses => "resp_up",
                    };
                    assert!(
                        String::from_utf8_lossy(&tail).contains(id),
                        "{api:?} keep {keep}"
                    );
                    assert_eq!(a.model.as_deref().unwrap_or(""), {
                        if api == ApiShape::AnthropicMessages {
                            "claude-x"
                        } else {
                            "gpt-x"
                        }
                    });
                }
                assert_eq!(ending.excerpt(), seen, "{api:?} keep {keep}");
                assert!(ending.finish("again").is_empty(), "finished once");
            }
        }
    }

    #[test]
    fn responses_ending_closes_open_items_with_their_text() {
        let events = upstream(ApiShape::OpenAiResponses);
        let prefix = events.concat();
        let mut ending = StreamEnding::new(&meta(ApiShape::OpenAiResponses));
        ending.observe(prefix.as_bytes());
        let tail = ending.finish("Withheld.");
        let mut parser = SseParser::new(1 << 20);
        let mut evs = Vec::new();
        parser.push(&tail, &mut |e| evs.push(e)).unwrap();
        let first: Value = serde_json::from_str(&evs[0].data).unwrap();
        assert_eq!(first["type"], "response.output_text.done");
        assert_eq!(first["text"], "The answer is");
        assert_eq!(first["sequence_number"], 5);
        let last: Value = serde_json::from_str(&evs.last().unwrap().data).unwrap();
        assert_eq!(last["type"], "response.completed");
        let out = &last["response"]["output"];
        assert_eq!(out.as_array().unwrap().len(), 2);
        assert_eq!(out[0]["id"], "msg_up");
        assert_eq!(out[0]["content"][0]["text"], "The answer is");
        assert_eq!(out[1]["content"][0]["text"], "Withheld.");
        assert_eq!(last["response"]["id"], "resp_up");
    }

    #[test]
    fn anthropic_ending_closes_open_blocks_first() {
        let events = upstream(ApiShape::AnthropicMessages);
        let mut ending = StreamEnding::new(&meta(ApiShape::AnthropicMessages));
        ending.observe(events.concat().as_bytes());
        let tail = String::from_utf8(ending.finish("W")).unwrap();
        let order: Vec<&str> = tail
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            order,
            [
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(tail.contains("\"index\":1"), "{tail}");
    }

    #[test]
    fn a_refusal_with_the_upstreams_end_still_ends_with_the_text() {
        let ends: [(ApiShape, &str); 3] = [
            (
                ApiShape::OpenAiChat,
                "data: {\"id\":\"chatcmpl-up\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
            ),
            (
                ApiShape::AnthropicMessages,
                "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            ),
            (
                ApiShape::OpenAiResponses,
                "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":5,\"response\":{\"id\":\"resp_up\",\"status\":\"completed\",\"output\":[]}}\n\n",
            ),
        ];
        for (api, end) in ends {
            let body = upstream(api).concat();
            for split in [0, 3, body.len()] {
                // Earlier chunks were observed; this callback's bytes carry the end.
                let mut e = StreamEnding::new(&meta(api));
                e.observe(&body.as_bytes()[..split]);
                let mut last = body.as_bytes()[split..].to_vec();
                last.extend_from_slice(end.as_bytes());
                let keep = e.observe_until_end(&last);
                // Anthropic's content_block_stop goes out; the terminal events do not.
                let terminal = match api {
                    ApiShape::AnthropicMessages => end.find("event: message_delta").unwrap(),
                    _ => 0,
                };
                assert_eq!(keep, body.len() - split + terminal, "{api:?} {split}");
                let mut all = body.as_bytes()[..split].to_vec();
                all.extend_from_slice(&last[..keep]);
                all.extend_from_slice(&e.finish("W."));
                let a = assemble(api, &all, 9);
                assert!(a.done, "{api:?}");
                assert!(
                    a.choices[0].content.ends_with("W."),
                    "{api:?}: {:?}",
                    a.choices[0].content
                );
            }
            // Without a terminal event everything is kept.
            let mut e = StreamEnding::new(&meta(api));
            assert_eq!(e.observe_until_end(body.as_bytes()), body.len());
        }
    }

    #[test]
    fn nothing_is_added_after_the_terminal_event() {
        let cases: [(ApiShape, &str); 4] = [
            (ApiShape::OpenAiChat, "data: [DONE]\n\n"),
            (
                ApiShape::OpenAiChat,
                "data: {\"error\":{\"message\":\"x\",\"code\":\"y\"}}\n\n",
            ),
            (
                ApiShape::AnthropicMessages,
                "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            ),
            (
                ApiShape::OpenAiResponses,
                "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{}}\n\n",
            ),
        ];
        for (api, s) in cases {
            let mut e = StreamEnding::new(&meta(api));
            e.observe(s.as_bytes());
            assert!(e.is_over());
            assert!(e.finish("x").is_empty(), "{api:?}");
        }
    }

    #[test]
    fn chat_choices_each_get_an_end() {
        let mut e = StreamEnding::new(&meta(ApiShape::OpenAiChat));
        e.observe(b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}},{\"index\":1,\"delta\":{\"content\":\"b\"}}]}\n\n");
        e.observe(b"data: {\"id\":\"c\",\"choices\":[{\"index\":1,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
        let tail = e.finish("W");
        let mut all = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}},{\"index\":1,\"delta\":{\"content\":\"b\"}}]}\n\ndata: {\"id\":\"c\",\"choices\":[{\"index\":1,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n".to_vec();
        all.extend_from_slice(&tail);
        let a = assemble(ApiShape::OpenAiChat, &all, 4);
        assert_eq!(a.choices[0].content, "a\n\nW");
        assert_eq!(a.choices[1].content, "b");
        assert_eq!(a.choices[0].finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn a_partial_event_is_terminated_before_the_ending() {
        let mut e = StreamEnding::new(&meta(ApiShape::OpenAiChat));
        e.observe(b"data: {\"id\":\"c\",\"choi");
        let tail = e.finish("W");
        assert!(tail.starts_with(b"\n\ndata: "));
    }
}
