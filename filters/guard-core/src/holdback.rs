//! The streaming hold-back primitive: streamed text reaches the client only once every
//! registered [`StreamScanner`] has cleared it, and only the bytes that could still be part of
//! a match are held (bounded per channel).
//!
//! [`HoldBack`] is a pipeline per channel: text enters the first scanner's pending buffer; what
//! that scanner declares final moves (possibly rewritten) into the next scanner's pending
//! buffer, and what the last scanner declares final is released. So every scanner sees text
//! already rewritten by the scanners before it, and never text it has already released.
//!
//! [`StreamRewriter`] re-emits a whole SSE stream with every text delta routed through a
//! [`HoldBack`]:
//! - An event whose text is unchanged and fully released goes out as its exact input bytes, so
//!   with scanners that hold and alter nothing the output is byte-identical to the input.
//! - An event whose text changed is re-serialized (all other fields kept) as
//!   `event: <type>\n` (if it had one), `id: <last id>\n` (if any), `data: <json>\n\n`.
//! - When nothing of a delta is released: OpenAI chat chunks go out with the text field set to
//!   `""` (the chunk may carry other choices, a role or tool-call ids); Anthropic
//!   `content_block_delta` and Responses `*.delta` events are dropped (the held text goes out in
//!   a later delta).
//! - Before the event that ends a channel (`finish_reason`, `content_block_stop`, a Responses
//!   `*.done`, or a terminal event: `[DONE]`, `message_stop`, `response.completed` /
//!   `.incomplete` / `.failed`, an error event) the channel is flushed (scanners called with
//!   `end = true`) and the flushed text goes out as a synthetic delta event shaped like the last
//!   delta event of that channel (a Responses synthetic delta repeats that event's
//!   `sequence_number`). When the ending event itself carries text for the channel, that text
//!   is pushed with `end = true` and the event carries all of it.
//! - Responses events that repeat full texts (`response.output_text.done`, `.refusal.done`,
//!   `.reasoning_summary_text.done`, `.reasoning_text.done`, `.function_call_arguments.done`,
//!   `response.content_part.done`, `response.reasoning_summary_part.done`,
//!   `response.output_item.done`, and the `output` of `response.completed` / `.incomplete` /
//!   `.failed`) get those texts replaced by what was released for that part, bounded by
//!   `max_event_bytes` in total.
//! - Other events pass through as raw bytes; comment and other non-dispatched blocks are
//!   forwarded as soon as they are complete.
//! - At the end of the stream an unterminated last event is still scanned (some clients act on
//!   it); if it is unchanged its bytes go out as they came.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use guard_core::api::ApiShape;
//! use guard_core::holdback::{StreamRewriter, StreamScanner};
//! use guard_core::stream::ChannelKey;
//!
//! /// Upper-cases everything (holds nothing).
//! struct Upper;
//! impl StreamScanner for Upper {
//!     fn scan(&mut self, _key: ChannelKey, pending: &mut String, _end: bool) -> usize {
//!         *pending = pending.to_uppercase();
//!         pending.len()
//!     }
//! }
//!
//! let mut rw = StreamRewriter::new(ApiShape::OpenAiChat, 1 << 20, 1 << 16);
//! let mut out = Vec::new();
//! let mut upper = Upper;
//! let input = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n";
//! rw.push(input, &mut [&mut upper], &mut out)?;
//! rw.finish(&mut [&mut upper], &mut out)?;
//! assert_eq!(
//!     String::from_utf8(out)?,
//!     "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"HI\"}}]}\n\ndata: [DONE]\n\n"
//! );
//! # Ok(())
//! # }
//! ```

use crate::api::ApiShape;
use crate::error::{Error, ErrorKind, Result};
use crate::sse::{SseEvent, SseParser};
use crate::stream::{Channel, ChannelKey, Delta, StreamDecoder, TextLoc, MAX_CHANNELS};
use serde_json::{json, Value};

/// A streaming scanner (injection, PII, schema, ...), called on each channel's pending text.
pub trait StreamScanner {
    /// `pending` = text of this channel not yet released (already rewritten by earlier scanners). The scanner may rewrite
    /// `pending` in place (e.g. redact) and returns how many leading bytes are final (may be released now). Must be a
    /// char boundary <= pending.len(); when `end` is true it must return pending.len(). Values that are not char
    /// boundaries or exceed the length are clamped down by HoldBack (never panic).
    fn scan(&mut self, key: ChannelKey, pending: &mut String, end: bool) -> usize;
}

#[derive(Debug)]
struct ChannelHold {
    key: ChannelKey,
    /// One pending buffer per scanner.
    stages: Vec<String>,
}

impl ChannelHold {
    fn held(&self) -> usize {
        self.stages
            .iter()
            .fold(0usize, |n, s| n.saturating_add(s.len()))
    }
}

/// Per-channel pending text, bounded by `max_hold_bytes` per channel (the sum over the
/// scanners' pending buffers) and by [`MAX_CHANNELS`] open channels. A channel is open from its
/// first non-empty push until a push with `end = true`.
#[derive(Debug)]
pub struct HoldBack {
    max_hold_bytes: usize,
    channels: Vec<ChannelHold>,
}

impl HoldBack {
    pub fn new(max_hold_bytes: usize) -> Self {
        HoldBack {
            max_hold_bytes,
            channels: Vec::new(),
        }
    }

    /// Append text for the channel, run scanners in order, return the released text (possibly empty) in `released` (reuse buffer, cleared first).
    /// If after scanning the held text still exceeds max_hold_bytes -> Err(ErrorKind::TooLarge) (the filter applies its failure policy).
    pub fn push(
        &mut self,
        key: ChannelKey,
        text: &str,
        end: bool,
        scanners: &mut [&mut dyn StreamScanner],
        released: &mut String,
    ) -> Result<()> {
        released.clear();
        let pos = match self.channels.iter().position(|c| c.key == key) {
            Some(pos) => pos,
            None if text.is_empty() => return Ok(()),
            None if self.channels.len() >= MAX_CHANNELS => {
                return Err(Error::too_large(format!(
                    "hold-back has more than {MAX_CHANNELS} open channels (at choice {} {:?})",
                    key.choice, key.channel
                )))
            }
            None => {
                self.channels.push(ChannelHold {
                    key,
                    stages: Vec::new(),
                });
                self.channels.len().saturating_sub(1)
            }
        };
        if text.is_empty() && !end {
            return Ok(());
        }
        let Some(ch) = self.channels.get_mut(pos) else {
            return Ok(());
        };
        while ch.stages.len() < scanners.len() {
            ch.stages.push(String::new());
        }
        released.push_str(text);
        for (i, stage) in ch.stages.iter_mut().enumerate() {
            stage.push_str(released);
            released.clear();
            let n = match scanners.get_mut(i) {
                Some(scanner) if !stage.is_empty() || end => {
                    let n = scanner.scan(key, stage, end);
                    if end {
                        stage.len()
                    } else {
                        floor_char_boundary(stage, n)
                    }
                }
                Some(_) => 0,
                // Fewer scanners than before: the extra stages just pass text on.
                None => stage.len(),
            };
            released.push_str(stage.get(..n).unwrap_or_default());
            stage.drain(..n);
        }
        if end {
            self.channels.swap_remove(pos);
            return Ok(());
        }
        let held = ch.held();
        if held > self.max_hold_bytes {
            return Err(Error::too_large(format!(
                "hold-back of {held} bytes on choice {} {:?} exceeds the limit of {} bytes",
                key.choice, key.channel, self.max_hold_bytes
            )));
        }
        Ok(())
    }

    /// Bytes held for the channel.
    pub fn held(&self, key: ChannelKey) -> usize {
        self.channels
            .iter()
            .find(|c| c.key == key)
            .map_or(0, ChannelHold::held)
    }

    /// Channels that hold text, sorted.
    pub fn channels_with_pending(&self) -> Vec<ChannelKey> {
        let mut keys: Vec<ChannelKey> = self
            .channels
            .iter()
            .filter(|c| c.held() > 0)
            .map(|c| c.key)
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Open channels (pushed to and not yet ended), sorted.
    pub fn open_channels(&self) -> Vec<ChannelKey> {
        let mut keys = Vec::new();
        self.open_channels_into(&mut keys);
        keys
    }

    fn open_channels_into(&self, keys: &mut Vec<ChannelKey>) {
        keys.clear();
        keys.extend(self.channels.iter().map(|c| c.key));
        keys.sort_unstable();
    }
}

fn floor_char_boundary(s: &str, n: usize) -> usize {
    let mut n = n.min(s.len());
    while n > 0 && !s.is_char_boundary(n) {
        n = n.saturating_sub(1);
    }
    n
}

/// The last delta event seen on a channel, used to shape the synthetic delta of a flush.
#[derive(Debug)]
struct Template {
    key: ChannelKey,
    event: Option<String>,
    data: String,
    loc: TextLoc,
    /// Anthropic: the content block index.
    block: usize,
    /// Responses: the part the text belongs to.
    part: Option<PartKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartKind {
    Text,
    Refusal,
    Args,
    Summary,
    ReasoningText,
}

/// A Responses text part: output item, kind, content / summary index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartKey {
    output: usize,
    kind: PartKind,
    sub: usize,
}

fn index_of(v: &Value, key: &str) -> usize {
    v.get(key)
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
}

/// The part a Responses `*.delta` / `*.done` text event belongs to.
fn part_key(v: &Value) -> Option<PartKey> {
    let ty = v.get("type").and_then(Value::as_str)?;
    let base = ty
        .strip_suffix(".delta")
        .or_else(|| ty.strip_suffix(".done"))?;
    let (kind, sub) = match base {
        "response.output_text" => (PartKind::Text, index_of(v, "content_index")),
        "response.refusal" => (PartKind::Refusal, index_of(v, "content_index")),
        "response.function_call_arguments" => (PartKind::Args, 0),
        "response.reasoning_summary_text" => (PartKind::Summary, index_of(v, "summary_index")),
        "response.reasoning_text" => (PartKind::ReasoningText, index_of(v, "content_index")),
        _ => return None,
    };
    Some(PartKey {
        output: index_of(v, "output_index"),
        kind,
        sub,
    })
}

/// Responses: the text released so far for each part, bounded in total.
#[derive(Debug)]
struct Parts {
    items: Vec<(PartKey, String)>,
    bytes: usize,
    max_bytes: usize,
}

impl Parts {
    fn append(&mut self, key: PartKey, text: &str) -> Result<()> {
        if text.is_empty() && self.items.iter().any(|(k, _)| *k == key) {
            return Ok(());
        }
        self.bytes = self.bytes.saturating_add(text.len());
        if self.bytes > self.max_bytes {
            return Err(Error::too_large(format!(
                "released text of {} bytes to restate in responses done events exceeds the limit of {} bytes",
                self.bytes, self.max_bytes
            )));
        }
        let full = self.items.len() >= MAX_CHANNELS;
        match self.items.iter_mut().find(|(k, _)| *k == key) {
            Some((_, s)) => s.push_str(text),
            None if full => {
                return Err(Error::too_large(format!(
                    "responses stream has more than {MAX_CHANNELS} text parts"
                )))
            }
            None => self.items.push((key, text.to_string())),
        }
        Ok(())
    }

    /// Replace the string at `slot` by the released text of `key`, if both exist; whether it
    /// changed.
    fn restate(&self, slot: Option<&mut Value>, key: PartKey) -> bool {
        let Some(released) = self.items.iter().find(|(k, _)| *k == key).map(|(_, s)| s) else {
            return false;
        };
        match slot {
            Some(Value::String(s)) if s != released => {
                s.clone_from(released);
                true
            }
            _ => false,
        }
    }

    fn restate_item(&self, output: usize, item: &mut Value) -> bool {
        let key = |kind, sub| PartKey { output, kind, sub };
        let mut changed = false;
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                if let Some(content) = item.get_mut("content").and_then(Value::as_array_mut) {
                    for (ci, c) in content.iter_mut().enumerate() {
                        let (kind, field) = match c.get("type").and_then(Value::as_str) {
                            Some("output_text") => (PartKind::Text, "text"),
                            Some("refusal") => (PartKind::Refusal, "refusal"),
                            _ => continue,
                        };
                        changed |= self.restate(c.get_mut(field), key(kind, ci));
                    }
                }
            }
            Some("function_call") => {
                changed |= self.restate(item.get_mut("arguments"), key(PartKind::Args, 0))
            }
            Some("reasoning") => {
                for (list, kind) in [
                    ("summary", PartKind::Summary),
                    ("content", PartKind::ReasoningText),
                ] {
                    if let Some(parts) = item.get_mut(list).and_then(Value::as_array_mut) {
                        for (i, p) in parts.iter_mut().enumerate() {
                            changed |= self.restate(p.get_mut("text"), key(kind, i));
                        }
                    }
                }
            }
            _ => {}
        }
        changed
    }

    /// Replace the full texts a Responses event repeats; whether anything changed.
    fn restate_event(&self, v: &mut Value) -> bool {
        if self.items.is_empty() {
            return false;
        }
        let ty = v.get("type").and_then(Value::as_str).unwrap_or_default();
        let output = index_of(v, "output_index");
        let field = match ty {
            "response.output_text.done"
            | "response.reasoning_summary_text.done"
            | "response.reasoning_text.done" => Some("text"),
            "response.refusal.done" => Some("refusal"),
            "response.function_call_arguments.done" => Some("arguments"),
            _ => None,
        };
        if let Some(field) = field {
            return match part_key(v) {
                Some(key) => self.restate(v.get_mut(field), key),
                None => false,
            };
        }
        match ty {
            "response.content_part.done" => {
                let ci = index_of(v, "content_index");
                let Some(part) = v.get_mut("part") else {
                    return false;
                };
                let (kind, field) = match part.get("type").and_then(Value::as_str) {
                    Some("output_text") => (PartKind::Text, "text"),
                    Some("refusal") => (PartKind::Refusal, "refusal"),
                    Some("reasoning_text") => (PartKind::ReasoningText, "text"),
                    _ => return false,
                };
                self.restate(
                    part.get_mut(field),
                    PartKey {
                        output,
                        kind,
                        sub: ci,
                    },
                )
            }
            "response.reasoning_summary_part.done" => {
                let si = index_of(v, "summary_index");
                let slot = v.get_mut("part").and_then(|p| p.get_mut("text"));
                self.restate(
                    slot,
                    PartKey {
                        output,
                        kind: PartKind::Summary,
                        sub: si,
                    },
                )
            }
            "response.output_item.done" => match v.get_mut("item") {
                Some(item) => self.restate_item(output, item),
                None => false,
            },
            "response.completed" | "response.incomplete" | "response.failed" => {
                let mut changed = false;
                if let Some(items) = v
                    .get_mut("response")
                    .and_then(|r| r.get_mut("output"))
                    .and_then(Value::as_array_mut)
                {
                    for (oi, item) in items.iter_mut().enumerate() {
                        changed |= self.restate_item(oi, item);
                    }
                }
                changed
            }
            _ => false,
        }
    }
}

fn write_event(event: Option<&str>, id: Option<&str>, v: &Value, out: &mut Vec<u8>) -> Result<()> {
    if let Some(e) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.as_bytes());
        out.push(b'\n');
    }
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut *out, v)
        .map_err(|e| Error::unparsable(format!("cannot serialize sse event: {e}")))?;
    out.extend_from_slice(b"\n\n");
    Ok(())
}

fn parse_json(data: &str) -> Result<Value> {
    serde_json::from_str(data)
        .map_err(|e| Error::unparsable(format!("sse event data is not json: {e}")))
}

/// An OpenAI chat chunk carrying only `text` for `key`, shaped like `template` (the last chunk
/// with text on that channel; `loc` is where that text was).
fn synth_chat(template: &mut Value, key: ChannelKey, loc: TextLoc, text: &str) -> Option<()> {
    let pos = loc.index_at(1)?;
    let field = loc.key_at(3)?;
    let choices = template.get_mut("choices")?.as_array_mut()?;
    let mut choice = std::mem::take(choices.get_mut(pos)?);
    let delta = match key.channel {
        Channel::ToolArgs { index } => {
            json!({"tool_calls": [{"index": index, "function": {"arguments": text}}]})
        }
        _ => {
            let mut m = serde_json::Map::new();
            m.insert(field.to_string(), Value::String(text.to_string()));
            Value::Object(m)
        }
    };
    let obj = choice.as_object_mut()?;
    obj.insert("delta".to_string(), delta);
    for k in ["finish_reason", "logprobs"] {
        if let Some(x) = obj.get_mut(k) {
            *x = Value::Null;
        }
    }
    *choices = vec![choice];
    Some(())
}

/// Re-emits an SSE stream with every text delta routed through HoldBack.
#[derive(Debug)]
pub struct StreamRewriter {
    shape: ApiShape,
    parser: SseParser,
    decoder: StreamDecoder,
    hold: HoldBack,
    templates: Vec<Template>,
    parts: Parts,
    // Scratch buffers reused across events.
    events: Vec<SseEvent>,
    deltas: Vec<Delta>,
    locs: Vec<(usize, TextLoc)>,
    ends: Vec<ChannelKey>,
    keys: Vec<ChannelKey>,
    released: String,
}

impl StreamRewriter {
    pub fn new(shape: ApiShape, max_event_bytes: usize, max_hold_bytes: usize) -> Self {
        StreamRewriter {
            shape,
            parser: SseParser::new(max_event_bytes),
            decoder: StreamDecoder::new(shape),
            hold: HoldBack::new(max_hold_bytes),
            templates: Vec::new(),
            parts: Parts {
                items: Vec::new(),
                bytes: 0,
                max_bytes: max_event_bytes,
            },
            events: Vec::new(),
            deltas: Vec::new(),
            locs: Vec::new(),
            ends: Vec::new(),
            keys: Vec::new(),
            released: String::new(),
        }
    }

    /// Feed a body chunk; append the bytes to send to the client to `out`.
    pub fn push(
        &mut self,
        chunk: &[u8],
        scanners: &mut [&mut dyn StreamScanner],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let res = self
            .parser
            .push(chunk, &mut |e| events.push(e))
            .and_then(|()| {
                events
                    .iter()
                    .try_for_each(|ev| self.process(ev, scanners, out, false))
            });
        events.clear();
        self.events = events;
        res?;
        self.parser.take_skipped_raw(out);
        Ok(())
    }

    /// End of stream: flush everything held (scanners called with end=true) then any pending raw bytes.
    pub fn finish(
        &mut self,
        scanners: &mut [&mut dyn StreamScanner],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let res = self
            .parser
            .flush_unterminated(&mut |e| events.push(e))
            .and_then(|()| {
                events
                    .iter()
                    .try_for_each(|ev| match self.process(ev, scanners, out, true) {
                        // A truncated last event no client can parse either: flush, then pass it on.
                        Err(e) if e.kind() == ErrorKind::Unparsable => {
                            self.flush_all(scanners, out)?;
                            out.extend_from_slice(&ev.raw);
                            Ok(())
                        }
                        other => other,
                    })
            });
        events.clear();
        self.events = events;
        res?;
        self.flush_all(scanners, out)?;
        out.extend_from_slice(&self.parser.take_pending_raw());
        Ok(())
    }

    /// Bytes held for the channel.
    pub fn held(&self, key: ChannelKey) -> usize {
        self.hold.held(key)
    }

    fn process(
        &mut self,
        ev: &SseEvent,
        scanners: &mut [&mut dyn StreamScanner],
        out: &mut Vec<u8>,
        last: bool,
    ) -> Result<()> {
        self.deltas.clear();
        self.locs.clear();
        self.ends.clear();
        let value = self
            .decoder
            .decode_located(ev, &mut self.deltas, &mut self.locs)?;
        let terminal = last
            || self
                .deltas
                .iter()
                .any(|d| matches!(d, Delta::Done | Delta::Error { .. }));
        self.ends.extend(self.deltas.iter().filter_map(|d| match d {
            Delta::ChannelEnd { key } => Some(*key),
            _ => None,
        }));

        // Channels that end here without text in this event: flush them first.
        let mut keys = std::mem::take(&mut self.keys);
        if terminal {
            self.hold.open_channels_into(&mut keys);
        } else {
            keys.clear();
            keys.extend_from_slice(&self.ends);
        }
        let mut flushed = Ok(());
        for &k in &keys {
            if !self.has_text(k) {
                flushed = self.flush_channel(k, scanners, out);
                if flushed.is_err() {
                    break;
                }
            }
        }
        self.keys = keys;
        flushed?;

        let Some(mut v) = value else {
            out.extend_from_slice(&ev.raw);
            return Ok(());
        };
        let pure_delta = {
            let ty = v.get("type").and_then(Value::as_str).unwrap_or_default();
            match self.shape {
                ApiShape::OpenAiChat => false,
                ApiShape::AnthropicMessages => ty == "content_block_delta",
                ApiShape::OpenAiResponses => ty.ends_with(".delta"),
            }
        };
        let mut modified = false;
        let mut drop = false;
        for li in 0..self.locs.len() {
            let Some(&(di, loc)) = self.locs.get(li) else {
                break;
            };
            let Some(Delta::Text { key, text }) = self.deltas.get(di) else {
                continue;
            };
            let key = *key;
            let later = self.locs.get(li.saturating_add(1)..).unwrap_or_default().iter().any(
                |(dj, _)| matches!(self.deltas.get(*dj), Some(Delta::Text { key: k, .. }) if *k == key),
            );
            let end = !later && (terminal || self.ends.contains(&key));
            self.hold
                .push(key, text, end, scanners, &mut self.released)?;
            if !end {
                save_template(&mut self.templates, self.shape, key, ev, &v, loc);
            }
            if self.released != *text {
                modified = true;
                if let Some(slot) = loc.get_mut(&mut v) {
                    *slot = Value::String(self.released.clone());
                }
                if pure_delta && self.released.is_empty() {
                    drop = true;
                }
            }
            if self.shape == ApiShape::OpenAiResponses {
                if let Some(part) = part_key(&v) {
                    self.parts.append(part, &self.released)?;
                }
            }
        }
        if self.shape == ApiShape::OpenAiResponses {
            modified |= self.parts.restate_event(&mut v);
        }
        if drop {
            return Ok(());
        }
        if modified {
            write_event(ev.event.as_deref(), ev.id.as_deref(), &v, out)
        } else {
            out.extend_from_slice(&ev.raw);
            Ok(())
        }
    }

    fn has_text(&self, key: ChannelKey) -> bool {
        self.locs.iter().any(
            |(di, _)| matches!(self.deltas.get(*di), Some(Delta::Text { key: k, .. }) if *k == key),
        )
    }

    fn flush_all(
        &mut self,
        scanners: &mut [&mut dyn StreamScanner],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let mut keys = std::mem::take(&mut self.keys);
        self.hold.open_channels_into(&mut keys);
        let res = keys
            .iter()
            .try_for_each(|k| self.flush_channel(*k, scanners, out));
        self.keys = keys;
        res
    }

    /// End the channel and emit what the scanners release as a synthetic delta event.
    fn flush_channel(
        &mut self,
        key: ChannelKey,
        scanners: &mut [&mut dyn StreamScanner],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.hold
            .push(key, "", true, scanners, &mut self.released)?;
        if self.released.is_empty() {
            return Ok(());
        }
        let text = self.released.as_str();
        let Some(t) = self.templates.iter().find(|t| t.key == key) else {
            // Only text from a delta event can be pending, and every such event leaves a template.
            return Ok(());
        };
        match self.shape {
            ApiShape::OpenAiChat => {
                let mut v = parse_json(&t.data)?;
                if synth_chat(&mut v, key, t.loc, text).is_none() {
                    v = json!({"choices": [{"index": key.choice, "delta": {"content": text}}]});
                }
                write_event(t.event.as_deref(), None, &v, out)
            }
            ApiShape::AnthropicMessages => {
                let (delta_type, field) = match key.channel {
                    Channel::Content | Channel::Refusal => ("text_delta", "text"),
                    Channel::Reasoning => ("thinking_delta", "thinking"),
                    Channel::ToolArgs { .. } => ("input_json_delta", "partial_json"),
                };
                let v = json!({"type": "content_block_delta", "index": t.block, "delta": {"type": delta_type, field: text}});
                write_event(Some("content_block_delta"), None, &v, out)
            }
            ApiShape::OpenAiResponses => {
                let mut v = parse_json(&t.data)?;
                if let Some(slot) = t.loc.get_mut(&mut v) {
                    *slot = Value::String(text.to_string());
                }
                write_event(t.event.as_deref(), None, &v, out)?;
                if let Some(part) = t.part {
                    self.parts.append(part, text)?;
                }
                Ok(())
            }
        }
    }
}

fn save_template(
    templates: &mut Vec<Template>,
    shape: ApiShape,
    key: ChannelKey,
    ev: &SseEvent,
    v: &Value,
    loc: TextLoc,
) {
    let block = index_of(v, "index");
    let part = if shape == ApiShape::OpenAiResponses {
        part_key(v)
    } else {
        None
    };
    let t = match templates.iter_mut().find(|t| t.key == key) {
        Some(t) => t,
        None => {
            templates.push(Template {
                key,
                event: None,
                data: String::new(),
                loc,
                block,
                part,
            });
            let Some(t) = templates.last_mut() else {
                return;
            };
            t
        }
    };
    match (&mut t.event, ev.event.as_deref()) {
        (Some(e), Some(new)) => {
            e.clear();
            e.push_str(new);
        }
        (slot, new) => *slot = new.map(str::to_string),
    }
    t.data.clear();
    t.data.push_str(&ev.data);
    t.loc = loc;
    t.block = block;
    t.part = part;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Releases everything.
    struct Pass;
    impl StreamScanner for Pass {
        fn scan(&mut self, _: ChannelKey, pending: &mut String, _: bool) -> usize {
            pending.len()
        }
    }

    /// Holds everything until the end.
    struct HoldAll;
    impl StreamScanner for HoldAll {
        fn scan(&mut self, _: ChannelKey, pending: &mut String, end: bool) -> usize {
            if end {
                pending.len()
            } else {
                0
            }
        }
    }

    /// Returns a fixed, possibly bad, value.
    struct Returns(usize);
    impl StreamScanner for Returns {
        fn scan(&mut self, _: ChannelKey, _: &mut String, _: bool) -> usize {
            self.0
        }
    }

    /// Replaces `word` with `with`, holding a trailing prefix of `word`; records what it saw.
    struct Replace {
        word: &'static str,
        with: &'static str,
        seen: String,
    }
    impl StreamScanner for Replace {
        fn scan(&mut self, _: ChannelKey, pending: &mut String, end: bool) -> usize {
            self.seen.push_str(pending);
            self.seen.push('|');
            if pending.contains(self.word) {
                *pending = pending.replace(self.word, self.with);
            }
            if end {
                return pending.len();
            }
            let keep = (1..self.word.len())
                .rev()
                .find(|&n| pending.ends_with(&self.word[..n]))
                .unwrap_or(0);
            pending.len() - keep
        }
    }

    const K: ChannelKey = ChannelKey {
        choice: 0,
        channel: Channel::Content,
    };

    #[test]
    fn pipeline_of_scanners() {
        let mut hb = HoldBack::new(64);
        let mut a = Replace {
            word: "ab",
            with: "cd",
            seen: String::new(),
        };
        let mut b = Replace {
            word: "cd",
            with: "X",
            seen: String::new(),
        };
        let mut rel = String::new();
        let mut got = String::new();
        for (text, end) in [("xa", false), ("b a", false), ("", false), ("bz", true)] {
            hb.push(K, text, end, &mut [&mut a, &mut b], &mut rel)
                .unwrap();
            got.push_str(&rel);
        }
        // Scanner b sees a's rewrite, so "ab" -> "cd" -> "X".
        assert_eq!(got, "xX Xz");
        assert_eq!(hb.held(K), 0);
        assert!(hb.open_channels().is_empty());
        // a never sees released text again.
        assert_eq!(a.seen, "xa|ab a|abz|");
    }

    #[test]
    fn clamps_bad_return_values() {
        let cases: Vec<(&str, usize, &str, &str)> = vec![
            ("past the end", 99, "héllo", "héllo"),
            ("inside a char", 2, "héllo", "h"),
            ("zero", 0, "héllo", ""),
        ];
        for (name, n, text, want) in cases {
            let mut hb = HoldBack::new(64);
            let mut s = Returns(n);
            let mut rel = String::new();
            hb.push(K, text, false, &mut [&mut s], &mut rel).unwrap();
            assert_eq!(rel, want, "{name}");
            assert_eq!(hb.held(K), text.len() - want.len(), "{name}");
            // end releases everything whatever the scanner returns.
            hb.push(K, "", true, &mut [&mut s], &mut rel).unwrap();
            assert_eq!(rel, &text[want.len()..], "{name}");
        }
    }

    #[test]
    fn hold_limit() {
        let cases = [
            ("limit 0", 0, false),
            ("exactly fits", 4, true),
            ("one over", 3, false),
        ];
        for (name, max, ok) in cases {
            let mut hb = HoldBack::new(max);
            let mut s = HoldAll;
            let mut rel = String::new();
            let res = hb.push(K, "abcd", false, &mut [&mut s], &mut rel);
            assert_eq!(res.is_ok(), ok, "{name}");
            if let Err(e) = res {
                assert_eq!(e.kind(), ErrorKind::TooLarge, "{name}");
            }
        }
        // Without scanners nothing is held.
        let mut hb = HoldBack::new(0);
        let mut rel = String::new();
        hb.push(K, "abcd", false, &mut [], &mut rel).unwrap();
        assert_eq!(rel, "abcd");
    }

    #[test]
    fn channels_are_separate_and_bounded() {
        let mut hb = HoldBack::new(64);
        let mut s = HoldAll;
        let mut rel = String::new();
        let k2 = ChannelKey::new(1, Channel::ToolArgs { index: 3 });
        hb.push(k2, "x", false, &mut [&mut s], &mut rel).unwrap();
        hb.push(K, "yy", false, &mut [&mut s], &mut rel).unwrap();
        assert_eq!(hb.channels_with_pending(), vec![K, k2]);
        assert_eq!((hb.held(K), hb.held(k2)), (2, 1));
        hb.push(K, "", true, &mut [&mut s], &mut rel).unwrap();
        assert_eq!(rel, "yy");
        assert_eq!(hb.channels_with_pending(), vec![k2]);
        let mut hb = HoldBack::new(64);
        for i in 0..MAX_CHANNELS {
            hb.push(
                ChannelKey::new(i, Channel::Content),
                "x",
                false,
                &mut [&mut s],
                &mut rel,
            )
            .unwrap();
        }
        let err = hb
            .push(
                ChannelKey::new(MAX_CHANNELS, Channel::Content),
                "x",
                false,
                &mut [&mut s],
                &mut rel,
            )
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
    }

    #[test]
    fn pass_releases_at_once() {
        let mut hb = HoldBack::new(0);
        let mut p = Pass;
        let mut rel = String::new();
        hb.push(K, "abc", false, &mut [&mut p], &mut rel).unwrap();
        assert_eq!(rel, "abc");
    }
}
