//! Removal of tool calls from a whole buffered streamed (SSE) answer, the streamed twin of
//! [`crate::body::ResponseBody::remove_tool_calls`]: the calls leave the stream and a
//! deterministic assistant text says why, in the API's own event vocabulary.
//!
//! Every event that needs no change is copied as its exact `raw` bytes (comments, `id:` lines,
//! line endings included). A changed event keeps its non-`data` lines (`event:`, `id:`,
//! comments) and gets one `data:` line with the edited JSON in place of its old `data:` lines.
//! New events are written `event: <type>\ndata: <json>\n\n` (Chat: `data: <json>\n\n`). An
//! event dropped takes the comment lines just before it along.
//!
//! - OpenAI Chat Completions: `delta.tool_calls[]` entries of a removed `index` leave their
//!   chunk; the choice's remaining calls are renumbered densely (0.. in order of first
//!   appearance) and `tool_calls` goes when empty; a chunk that carried removed entries and is
//!   left with nothing (empty deltas, no `finish_reason`, no `logprobs`, no `usage`) is dropped.
//!   Before the chunk with the choice's `finish_reason` comes one chunk (that chunk's `id`,
//!   `object`, `created`, `model`, `system_fingerprint`) whose `delta.content` is the message,
//!   after `"\n\n"` when the choice streamed content before; when the finish chunk itself carries
//!   content, the text is appended to that content instead (so it stays last). The
//!   `finish_reason` becomes `stop` when the choice has no call left.
//! - Anthropic Messages: the `content_block_*` events of a removed block index are dropped, later
//!   blocks are renumbered down, a text block (start, one `text_delta`, stop) at the next free
//!   index comes before `message_delta`, whose `stop_reason` becomes `end_turn` when no
//!   `tool_use` block is left.
//! - OpenAI Responses: every event of a removed `output_index` is dropped, later output indexes
//!   are renumbered down; before `response.completed` / `response.incomplete` come the events of
//!   a new assistant message item (`output_item.added`, `content_part.added`, one
//!   `output_text.delta`, `output_text.done`, `content_part.done`, `output_item.done`, item id
//!   [`GUARD_MESSAGE_ID`]); the terminal event's `response.output` loses the removed items (by
//!   position) and gains the message item (the shape `remove_tool_calls` appends, plus its
//!   `id`). The new events take the terminal event's `sequence_number` onwards and the terminal
//!   event moves past them, so numbers stay unique and increasing (dropped events leave gaps).
//!   A `response.failed` stream is not edited.
//!
//! The whole body goes through one [`SseParser`]; an unterminated last event is handled as
//! [`SseParser::flush_unterminated`] dispatches it (and terminated if it has to be rewritten),
//! and bytes that form no event are copied at the end. The work is linear in the body size.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use guard_core::api::ApiShape;
//! use guard_core::stream_edit::remove_streamed_tool_calls;
//!
//! let body = concat!(
//!     "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":",
//!     "[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"pay\",\"arguments\":\"{}\"}}]},",
//!     "\"finish_reason\":null}]}\n\n",
//!     "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
//!     "data: [DONE]\n\n",
//! );
//! let edited = remove_streamed_tool_calls(ApiShape::OpenAiChat, body.as_bytes(), 1 << 20, &[(0, 0)], "Refused.")?;
//! let text = String::from_utf8(edited)?;
//! assert!(!text.contains("call_1"));
//! assert!(text.contains(r#""delta":{"content":"Refused."}"#));
//! assert!(text.contains(r#""finish_reason":"stop""#));
//! assert!(text.ends_with("data: [DONE]\n\n"));
//! # Ok(())
//! # }
//! ```

use crate::api::ApiShape;
use crate::error::{Error, ErrorKind, Result};
use crate::sse::{SseEvent, SseParser};
use crate::stream::{is_done_marker, MAX_CHANNELS};
use serde_json::{json, Map, Value};

/// The item id of the assistant message added to an OpenAI Responses stream.
pub const GUARD_MESSAGE_ID: &str = "msg_guard";

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// Remove tool calls from a whole buffered SSE answer and say why in a text part, keeping every
/// other event byte for byte. `calls` = (choice, index) as the
/// [`StreamDecoder`](crate::stream::StreamDecoder) / [`StreamAssembler`](crate::stream::StreamAssembler)
/// name them ([`AssembledToolCall::index`](crate::stream::AssembledToolCall): OpenAI Chat
/// `tool_calls[].index`, Anthropic content block index, Responses `output_index`).
///
/// Returns the new stream bytes, or an error when the stream cannot be edited faithfully:
/// `TooLarge` (an event over `max_event_bytes`, or more than [`MAX_CHANNELS`] calls or tool
/// indexes), `Unparsable` (an event whose data is not JSON; a Chat choice with removals that
/// never finishes; an Anthropic stream without `message_delta`; a Responses stream without
/// `response.completed` / `response.incomplete`, or whose terminal event has no
/// `response.output`), `BadLocation` (a call that is not in the stream, or a choice other than 0
/// for Anthropic and Responses). An empty `calls` returns the body unchanged.
pub fn remove_streamed_tool_calls(
    shape: ApiShape,
    body: &[u8],
    max_event_bytes: usize,
    calls: &[(usize, usize)],
    message: &str,
) -> Result<Vec<u8>> {
    if calls.is_empty() {
        return Ok(body.to_vec());
    }
    let mut targets = calls.to_vec();
    targets.sort_unstable();
    targets.dedup();
    if targets.len() > MAX_CHANNELS {
        return Err(Error::too_large(format!(
            "{} tool calls to remove exceed the limit of {MAX_CHANNELS}",
            targets.len()
        )));
    }
    let editor = match shape {
        ApiShape::OpenAiChat => Editor::Chat(ChatEdit::new(&targets)),
        ApiShape::AnthropicMessages => Editor::Anthropic(BlockEdit::new(shape, &targets)?),
        ApiShape::OpenAiResponses => Editor::Responses(BlockEdit::new(shape, &targets)?),
    };
    let mut run = Run {
        editor,
        message,
        out: Vec::with_capacity(
            body.len()
                .saturating_add(message.len())
                .saturating_add(1024),
        ),
        first: true,
        error: None,
    };
    let mut parser = SseParser::new(max_event_bytes);
    parser.push(body, &mut |ev| run.event(&ev, false))?;
    parser.flush_unterminated(&mut |ev| run.event(&ev, true))?;
    if let Some(e) = run.error {
        return Err(e);
    }
    run.out.extend_from_slice(&parser.take_pending_raw());
    run.editor.finish()?;
    Ok(run.out)
}

/// One pass over the events: the shape's editor plus the output.
struct Run<'m> {
    editor: Editor,
    message: &'m str,
    out: Vec<u8>,
    /// Whether no event was handled yet (its raw bytes may start with the stream's BOM).
    first: bool,
    /// The first failure; later events are ignored.
    error: Option<Error>,
}

impl Run<'_> {
    fn event(&mut self, ev: &SseEvent, flushed: bool) {
        if self.error.is_some() {
            return;
        }
        let mut raw = ev.raw.as_slice();
        if std::mem::take(&mut self.first) {
            if let Some(rest) = raw.strip_prefix(&BOM) {
                self.out.extend_from_slice(&BOM);
                raw = rest;
            }
        }
        let mut emit = Emit {
            out: &mut self.out,
            raw,
            flushed,
        };
        let res = match parse(ev) {
            Ok(None) => {
                emit.keep();
                Ok(())
            }
            Ok(Some(v)) => match &mut self.editor {
                Editor::Chat(e) => e.event(v, self.message, &mut emit),
                Editor::Anthropic(e) => e.anthropic_event(ev, v, self.message, &mut emit),
                Editor::Responses(e) => e.responses_event(ev, v, self.message, &mut emit),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            self.error = Some(e);
        }
    }
}

enum Editor {
    Chat(ChatEdit),
    Anthropic(BlockEdit),
    Responses(BlockEdit),
}

impl Editor {
    fn finish(&self) -> Result<()> {
        match self {
            Editor::Chat(e) => e.finish(),
            Editor::Anthropic(e) => e.finish("anthropic_messages stream has no message_delta"),
            Editor::Responses(e) => e.finish(
                "openai_responses stream has no response.completed or response.incomplete event",
            ),
        }
    }
}

/// The JSON of an event; `None` for the OpenAI `[DONE]` marker.
fn parse(ev: &SseEvent) -> Result<Option<Value>> {
    if is_done_marker(&ev.data) {
        return Ok(None);
    }
    serde_json::from_str(&ev.data).map(Some).map_err(|e| {
        Error::unparsable(format!(
            "sse event {:?} data is not json, the stream cannot be edited: {e}",
            ev.event.as_deref().unwrap_or("message")
        ))
    })
}

/// Where the current event's bytes go.
struct Emit<'a> {
    out: &'a mut Vec<u8>,
    /// The event's raw bytes (without the stream's BOM).
    raw: &'a [u8],
    /// Whether the event was dispatched at end of stream without its blank line.
    flushed: bool,
}

impl Emit<'_> {
    /// Copy the event unchanged.
    fn keep(&mut self) {
        self.out.extend_from_slice(self.raw);
    }

    /// Write the event with `v` as its data: its other lines stay as they are.
    fn rewrite(&mut self, v: &Value) -> Result<()> {
        let data = to_json(v)?;
        let mut wrote = false;
        let mut rest = self.raw;
        while !rest.is_empty() {
            let (line, end) = split_line(rest);
            let (content, rest_after) = rest.split_at(line.min(rest.len()));
            let (term, after) = rest_after.split_at(end.min(rest_after.len()));
            rest = after;
            if field_name(content) == b"data" {
                if !wrote {
                    wrote = true;
                    self.out.extend_from_slice(b"data: ");
                    self.out.extend_from_slice(data.as_bytes());
                    self.out
                        .extend_from_slice(if term.is_empty() { b"\n" } else { term });
                }
                continue;
            }
            self.out.extend_from_slice(content);
            self.out.extend_from_slice(term);
        }
        if !wrote {
            // Not reached for a dispatched event (it has data); keep the output well formed.
            self.out.extend_from_slice(b"data: ");
            self.out.extend_from_slice(data.as_bytes());
            self.out.extend_from_slice(b"\n");
        }
        if self.flushed {
            // End the event that arrived without its blank line.
            match self.out.last() {
                Some(&b) if b == b'\n' || b == b'\r' => self.out.push(b),
                _ => self.out.extend_from_slice(b"\n\n"),
            }
        }
        Ok(())
    }

    /// Write a new event before the current one.
    fn insert(&mut self, event: Option<&str>, v: &Value) -> Result<()> {
        if let Some(ty) = event {
            self.out.extend_from_slice(b"event: ");
            self.out.extend_from_slice(ty.as_bytes());
            self.out.push(b'\n');
        }
        self.out.extend_from_slice(b"data: ");
        self.out.extend_from_slice(to_json(v)?.as_bytes());
        self.out.extend_from_slice(b"\n\n");
        Ok(())
    }
}

/// (length of the line's content, length of its terminator: 0, 1 or 2).
fn split_line(bytes: &[u8]) -> (usize, usize) {
    match bytes.iter().position(|&b| b == b'\r' || b == b'\n') {
        None => (bytes.len(), 0),
        Some(i) => {
            let crlf =
                bytes.get(i) == Some(&b'\r') && bytes.get(i.saturating_add(1)) == Some(&b'\n');
            (i, if crlf { 2 } else { 1 })
        }
    }
}

/// The SSE field name of a line (empty for a comment).
fn field_name(line: &[u8]) -> &[u8] {
    match line.iter().position(|&b| b == b':') {
        Some(colon) => line.get(..colon).unwrap_or_default(),
        None => line,
    }
}

fn to_json(v: &Value) -> Result<String> {
    serde_json::to_string(v)
        .map_err(|e| Error::unparsable(format!("edited sse event cannot be written: {e}")))
}

fn index_of(v: &Value, key: &str) -> Option<usize> {
    v.get(key)
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
}

/// The event type: the JSON `type`, else the SSE `event:` field (as the decoder reads it).
fn event_type(ev: &SseEvent, v: &Value) -> String {
    v.get("type")
        .and_then(Value::as_str)
        .or(ev.event.as_deref())
        .unwrap_or_default()
        .to_string()
}

fn not_found(choice: usize, index: usize) -> Error {
    Error::new(
        ErrorKind::BadLocation,
        format!("tool call {index} of choice {choice} is not in the stream"),
    )
}

/// Set `obj[key] = value` when it differs; returns whether it changed.
fn set(obj: &mut Value, key: &str, value: Value) -> bool {
    let Some(o) = obj.as_object_mut() else {
        return false;
    };
    if o.get(key) == Some(&value) {
        return false;
    }
    o.insert(key.to_string(), value);
    true
}

// ---------------------------------------------------------------------------------------------
// OpenAI Chat Completions.

/// One choice that loses calls.
#[derive(Debug)]
struct ChatChoice {
    choice: usize,
    /// Sorted tool-call indexes to remove, and whether each was seen.
    removed: Vec<(usize, bool)>,
    /// Kept tool-call indexes: (original, new), new = order of first appearance.
    kept: Vec<(usize, usize)>,
    had_content: bool,
    finished: bool,
}

impl ChatChoice {
    /// Whether `index` is removed (and mark it seen).
    fn remove(&mut self, index: usize) -> bool {
        match self.removed.binary_search_by_key(&index, |r| r.0) {
            Ok(pos) => {
                if let Some(r) = self.removed.get_mut(pos) {
                    r.1 = true;
                }
                true
            }
            Err(_) => false,
        }
    }

    /// The new index of a kept call.
    fn renumber(&mut self, index: usize) -> Result<usize> {
        if let Some((_, new)) = self.kept.iter().find(|(old, _)| *old == index) {
            return Ok(*new);
        }
        let new = self.kept.len();
        if new >= MAX_CHANNELS {
            return Err(Error::too_large(format!(
                "choice {} streams more than {MAX_CHANNELS} tool calls",
                self.choice
            )));
        }
        self.kept.push((index, new));
        Ok(new)
    }
}

#[derive(Debug)]
struct ChatEdit {
    /// Sorted by choice.
    choices: Vec<ChatChoice>,
}

impl ChatEdit {
    fn new(targets: &[(usize, usize)]) -> Self {
        let mut choices: Vec<ChatChoice> = Vec::new();
        for &(choice, index) in targets {
            match choices.last_mut() {
                Some(c) if c.choice == choice => c.removed.push((index, false)),
                _ => choices.push(ChatChoice {
                    choice,
                    removed: vec![(index, false)],
                    kept: Vec::new(),
                    had_content: false,
                    finished: false,
                }),
            }
        }
        ChatEdit { choices }
    }

    fn choice_mut(&mut self, choice: usize) -> Option<&mut ChatChoice> {
        let pos = self
            .choices
            .binary_search_by_key(&choice, |c| c.choice)
            .ok()?;
        self.choices.get_mut(pos)
    }

    fn event(&mut self, mut v: Value, message: &str, emit: &mut Emit<'_>) -> Result<()> {
        let mut changed = false;
        let mut dropped = false;
        // (choice, text) of the message chunks to insert before this one.
        let mut inserts: Vec<(usize, String)> = Vec::new();
        if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
            for (pos, ch) in choices.iter_mut().enumerate() {
                let choice = index_of(ch, "index").unwrap_or(pos);
                let Some(st) = self.choice_mut(choice) else {
                    continue;
                };
                let mut content_here = false;
                if let Some(delta) = ch.get_mut("delta").and_then(Value::as_object_mut) {
                    if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
                        let old = std::mem::take(calls);
                        for (tpos, mut call) in old.into_iter().enumerate() {
                            let index = index_of(&call, "index").unwrap_or(tpos);
                            if st.remove(index) {
                                dropped = true;
                                changed = true;
                                continue;
                            }
                            let new = st.renumber(index)?;
                            if index_of(&call, "index") != Some(new) {
                                changed |= set(&mut call, "index", Value::from(new));
                            }
                            calls.push(call);
                        }
                        if calls.is_empty() {
                            delta.remove("tool_calls");
                        }
                    }
                    content_here = delta
                        .get("content")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty());
                }
                let finishing = ch.get("finish_reason").is_some_and(Value::is_string);
                if finishing {
                    if !st.finished {
                        let text = if st.had_content || content_here {
                            format!("\n\n{message}")
                        } else {
                            message.to_string()
                        };
                        let in_place = ch
                            .get_mut("delta")
                            .and_then(|d| d.get_mut("content"))
                            .filter(|_| content_here);
                        match in_place {
                            Some(Value::String(s)) => {
                                s.push_str(&text);
                                changed = true;
                            }
                            _ => inserts.push((choice, text)),
                        }
                    }
                    st.finished = true;
                    if st.kept.is_empty() {
                        changed |= set(ch, "finish_reason", Value::from("stop"));
                    }
                }
                st.had_content |= content_here;
            }
        }
        for (choice, text) in &inserts {
            let mut chunk = Map::new();
            for key in ["id", "object", "created", "model", "system_fingerprint"] {
                if let Some(x) = v.get(key) {
                    chunk.insert(key.to_string(), x.clone());
                }
            }
            chunk.insert(
                "choices".into(),
                json!([{"index": choice, "delta": {"content": text}, "finish_reason": null}]),
            );
            emit.insert(None, &Value::Object(chunk))?;
        }
        if dropped && chat_chunk_is_empty(&v) {
            Ok(())
        } else if changed {
            emit.rewrite(&v)
        } else {
            emit.keep();
            Ok(())
        }
    }

    fn finish(&self) -> Result<()> {
        for c in &self.choices {
            if let Some((index, _)) = c.removed.iter().find(|r| !r.1) {
                return Err(not_found(c.choice, *index));
            }
            if !c.finished {
                return Err(Error::unparsable(format!(
                    "openai_chat stream ends without a finish_reason for choice {}, the stream \
                     cannot be edited",
                    c.choice
                )));
            }
        }
        Ok(())
    }
}

/// Whether a chunk carries nothing a client would act on: every choice has an empty delta, no
/// `finish_reason` and no `logprobs`, and there is no `usage`.
fn chat_chunk_is_empty(v: &Value) -> bool {
    let meaningful = |x: &Value| match x {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    };
    let choices_empty = v
        .get("choices")
        .and_then(Value::as_array)
        .is_none_or(|choices| {
            choices.iter().all(|ch| {
                ch.get("delta")
                    .and_then(Value::as_object)
                    .is_none_or(|d| !d.values().any(meaningful))
                    && !ch.get("finish_reason").is_some_and(meaningful)
                    && !ch.get("logprobs").is_some_and(meaningful)
            })
        });
    choices_empty && !v.get("usage").is_some_and(meaningful)
}

// ---------------------------------------------------------------------------------------------
// Anthropic Messages and OpenAI Responses: one list of blocks / output items (choice 0).

#[derive(Debug)]
struct BlockEdit {
    /// Sorted block indexes (Anthropic) or output indexes (Responses) to remove, and whether each
    /// was seen.
    removed: Vec<(usize, bool)>,
    /// One past the highest kept (renumbered) index seen.
    next_index: usize,
    /// Anthropic: whether a kept block is a `tool_use`.
    tool_use_left: bool,
    /// Whether the text was added (before `message_delta` / the terminal event).
    added: bool,
}

impl BlockEdit {
    fn new(shape: ApiShape, targets: &[(usize, usize)]) -> Result<Self> {
        let mut removed = Vec::with_capacity(targets.len());
        for &(choice, index) in targets {
            if choice != 0 {
                return Err(Error::new(
                    ErrorKind::BadLocation,
                    format!(
                        "{} streams have one choice, not choice {choice} (tool call {index})",
                        shape.as_str()
                    ),
                ));
            }
            removed.push((index, false));
        }
        Ok(BlockEdit {
            removed,
            next_index: 0,
            tool_use_left: false,
            added: false,
        })
    }

    /// `Some(new index)` for a kept index, `None` for a removed one (marked seen).
    fn map(&mut self, index: usize) -> Option<usize> {
        match self.removed.binary_search_by_key(&index, |r| r.0) {
            Ok(pos) => {
                if let Some(r) = self.removed.get_mut(pos) {
                    r.1 = true;
                }
                None
            }
            Err(below) => Some(index.saturating_sub(below)),
        }
    }

    fn finish(&self, missing_end: &str) -> Result<()> {
        if let Some((index, _)) = self.removed.iter().find(|r| !r.1) {
            return Err(not_found(0, *index));
        }
        if !self.added {
            return Err(Error::unparsable(format!(
                "{missing_end}, the stream cannot be edited"
            )));
        }
        Ok(())
    }

    fn anthropic_event(
        &mut self,
        ev: &SseEvent,
        mut v: Value,
        message: &str,
        emit: &mut Emit<'_>,
    ) -> Result<()> {
        let ty = event_type(ev, &v);
        match ty.as_str() {
            "content_block_start" | "content_block_delta" | "content_block_stop" => {
                let index = index_of(&v, "index").unwrap_or(0);
                let Some(new) = self.map(index) else {
                    return Ok(());
                };
                if ty == "content_block_start" {
                    self.next_index = self.next_index.max(new.saturating_add(1));
                    let block_type = v
                        .get("content_block")
                        .and_then(|b| b.get("type"))
                        .and_then(Value::as_str);
                    self.tool_use_left |= block_type == Some("tool_use");
                }
                if index_of(&v, "index") != Some(new) && set(&mut v, "index", Value::from(new)) {
                    return emit.rewrite(&v);
                }
                emit.keep();
                Ok(())
            }
            "message_delta" => {
                if !self.added {
                    self.added = true;
                    let i = self.next_index;
                    emit.insert(
                        Some("content_block_start"),
                        &json!({"type": "content_block_start", "index": i,
                                "content_block": {"type": "text", "text": ""}}),
                    )?;
                    emit.insert(
                        Some("content_block_delta"),
                        &json!({"type": "content_block_delta", "index": i,
                                "delta": {"type": "text_delta", "text": message}}),
                    )?;
                    emit.insert(
                        Some("content_block_stop"),
                        &json!({"type": "content_block_stop", "index": i}),
                    )?;
                }
                if !self.tool_use_left {
                    if let Some(o) = v.as_object_mut() {
                        let delta = o.entry("delta").or_insert_with(|| json!({}));
                        if set(delta, "stop_reason", Value::from("end_turn")) {
                            return emit.rewrite(&v);
                        }
                    }
                }
                emit.keep();
                Ok(())
            }
            _ => {
                emit.keep();
                Ok(())
            }
        }
    }

    fn responses_event(
        &mut self,
        ev: &SseEvent,
        mut v: Value,
        message: &str,
        emit: &mut Emit<'_>,
    ) -> Result<()> {
        let ty = event_type(ev, &v);
        // The events the decoder reads as a call's start or arguments belong to item 0 when
        // they lack `output_index` (as the decoder reads them), so they go with that item.
        let call_event = matches!(
            ty.as_str(),
            "response.output_item.added"
                | "response.function_call_arguments.delta"
                | "response.function_call_arguments.done"
        );
        let index = index_of(&v, "output_index").or(call_event.then_some(0));
        if let Some(index) = index {
            let Some(new) = self.map(index) else {
                return Ok(());
            };
            if ty == "response.output_item.added" {
                self.next_index = self.next_index.max(new.saturating_add(1));
            }
            if new != index && set(&mut v, "output_index", Value::from(new)) {
                return emit.rewrite(&v);
            }
            emit.keep();
            return Ok(());
        }
        match ty.as_str() {
            "response.completed" | "response.incomplete" if !self.added => {
                self.responses_terminal(&ty, v, message, emit)
            }
            "response.failed" => Err(Error::unparsable(
                "openai_responses stream failed (response.failed), the stream cannot be edited",
            )),
            _ => {
                emit.keep();
                Ok(())
            }
        }
    }

    fn responses_terminal(
        &mut self,
        ty: &str,
        mut v: Value,
        message: &str,
        emit: &mut Emit<'_>,
    ) -> Result<()> {
        let Some(output) = v
            .get_mut("response")
            .and_then(|r| r.get_mut("output"))
            .and_then(Value::as_array_mut)
        else {
            return Err(Error::unparsable(format!(
                "openai_responses {ty} event has no response.output, the stream cannot be edited"
            )));
        };
        for (index, _) in self.removed.iter().rev() {
            if *index < output.len() {
                output.remove(*index);
            }
        }
        let at = output.len();
        let part = json!({"type": "output_text", "annotations": [], "text": message});
        let item = json!({
            "id": GUARD_MESSAGE_ID, "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": message, "annotations": []}]
        });
        output.push(item.clone());
        let mut seq = v.get("sequence_number").and_then(Value::as_u64);
        let mut events = [
            (
                "response.output_item.added",
                json!({"output_index": at, "item": {
                    "id": GUARD_MESSAGE_ID, "type": "message", "role": "assistant",
                    "status": "in_progress", "content": []}}),
            ),
            (
                "response.content_part.added",
                json!({"item_id": GUARD_MESSAGE_ID, "output_index": at, "content_index": 0,
                       "part": {"type": "output_text", "annotations": [], "text": ""}}),
            ),
            (
                "response.output_text.delta",
                json!({"item_id": GUARD_MESSAGE_ID, "output_index": at, "content_index": 0,
                       "delta": message}),
            ),
            (
                "response.output_text.done",
                json!({"item_id": GUARD_MESSAGE_ID, "output_index": at, "content_index": 0,
                       "text": message}),
            ),
            (
                "response.content_part.done",
                json!({"item_id": GUARD_MESSAGE_ID, "output_index": at, "content_index": 0,
                       "part": part}),
            ),
            (
                "response.output_item.done",
                json!({"output_index": at, "item": item}),
            ),
        ];
        for (name, body) in &mut events {
            let mut e = Map::new();
            e.insert("type".into(), Value::from(*name));
            if let Some(n) = seq {
                e.insert("sequence_number".into(), Value::from(n));
                seq = Some(n.saturating_add(1));
            }
            if let Value::Object(fields) = std::mem::take(body) {
                e.extend(fields);
            }
            emit.insert(Some(name), &Value::Object(e))?;
        }
        if let Some(n) = seq {
            set(&mut v, "sequence_number", Value::from(n));
        }
        self.added = true;
        emit.rewrite(&v)
    }
}
