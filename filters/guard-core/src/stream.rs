//! Decoding of each API's SSE events into [`Delta`]s (text per channel, tool-call starts,
//! channel ends, usage, model, end of stream, provider errors), and a bounded
//! [`StreamAssembler`] that folds deltas into the answer the client would see.
//!
//! Channels: every piece of streamed text belongs to a [`ChannelKey`] (choice + channel).
//! - OpenAI Chat Completions: `choices[].index` is the choice; `delta.content` → `Content`,
//!   `delta.reasoning_content` / `delta.reasoning` → `Reasoning`, `delta.refusal` → `Refusal`,
//!   `delta.tool_calls[].function.arguments` → `ToolArgs { index: tool_calls[].index }`. A
//!   `finish_reason` ends every channel of its choice.
//! - Anthropic Messages: choice 0; text blocks → `Content`, thinking blocks → `Reasoning`,
//!   `tool_use` (and server / MCP tool use) blocks → `ToolArgs { index: block index }`;
//!   `content_block_stop` ends the block's channel.
//! - OpenAI Responses: choice 0; `output_text` → `Content`, `refusal` → `Refusal`, reasoning
//!   summary / reasoning text → `Reasoning`, function-call arguments → `ToolArgs { index:
//!   output_index }`; the matching `*.done` event ends the channel.
//!
//! Empty text fragments produce no `Delta::Text`.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use guard_core::api::ApiShape;
//! use guard_core::sse::SseParser;
//! use guard_core::stream::{StreamAssembler, StreamDecoder};
//!
//! let body = b"data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n\
//!              data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
//! let mut parser = SseParser::new(1 << 20);
//! let mut decoder = StreamDecoder::new(ApiShape::OpenAiChat);
//! let mut asm = StreamAssembler::new(1 << 20);
//! let mut events = Vec::new();
//! parser.push(body, &mut |e| events.push(e))?;
//! let mut deltas = Vec::new();
//! for ev in &events {
//!     decoder.decode(ev, &mut deltas)?;
//! }
//! for d in &deltas {
//!     asm.apply(d)?;
//! }
//! let result = asm.result();
//! assert_eq!(result.choices[0].content, "Hi");
//! assert_eq!(result.choices[0].finish_reason.as_deref(), Some("stop"));
//! assert!(result.done);
//! # Ok(())
//! # }
//! ```

use crate::api::ApiShape;
use crate::body::Usage;
use crate::error::{Error, Result};
use crate::sse::SseEvent;
use serde::Serialize;
use serde_json::Value;

/// Bound on distinct choices, open channels and tool calls per stream (an upstream could
/// otherwise make us allocate by sending huge indices).
pub const MAX_CHANNELS: usize = 256;

/// What kind of text a channel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Content,
    Reasoning,
    Refusal,
    /// Arguments of tool call `index` (OpenAI `tool_calls[].index`, Anthropic block index,
    /// Responses `output_index`).
    ToolArgs {
        index: usize,
    },
}

/// One stream of text inside a response: a choice and a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ChannelKey {
    pub choice: usize,
    pub channel: Channel,
}

impl ChannelKey {
    pub fn new(choice: usize, channel: Channel) -> Self {
        ChannelKey { choice, channel }
    }
}

/// One decoded piece of a streamed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// A content / reasoning / refusal / tool-call argument fragment.
    Text { key: ChannelKey, text: String },
    /// A tool call begins (or its id / name arrive).
    ToolCallStart {
        choice: usize,
        index: usize,
        id: Option<String>,
        name: Option<String>,
    },
    /// This channel will get no more text (`content_block_stop`, `response.output_text.done`,
    /// `finish_reason`, ...).
    ChannelEnd { key: ChannelKey },
    /// Why a choice stopped (OpenAI `finish_reason`, Anthropic `stop_reason`, Responses
    /// `incomplete_details.reason` or else the response `status`).
    Finish { choice: usize, reason: String },
    /// Usage as reported (cumulative where the API reports it so: the last one wins).
    Usage(Usage),
    /// The model that answers (reported once, and again only if it changes).
    Model(String),
    /// The stream's terminal event (`[DONE]`, `message_stop`, `response.completed`,
    /// `response.incomplete`, `response.failed`).
    Done,
    /// A provider error event.
    Error { message: String },
}

/// One step of a [`TextLoc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocStep {
    Key(&'static str),
    Index(usize),
}

const MAX_LOC: usize = 7;

/// Where a text fragment sits in an event's JSON (fixed size: no allocation per event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TextLoc {
    steps: [LocStep; MAX_LOC],
    len: usize,
}

impl TextLoc {
    fn new(steps: &[LocStep]) -> Self {
        let mut loc = TextLoc {
            steps: [LocStep::Index(0); MAX_LOC],
            len: 0,
        };
        for (slot, step) in loc.steps.iter_mut().zip(steps) {
            *slot = *step;
            loc.len = loc.len.saturating_add(1);
        }
        loc
    }

    fn steps(&self) -> &[LocStep] {
        self.steps.get(..self.len).unwrap_or_default()
    }

    pub(crate) fn key_at(&self, i: usize) -> Option<&'static str> {
        match self.steps().get(i) {
            Some(LocStep::Key(k)) => Some(k),
            _ => None,
        }
    }

    pub(crate) fn index_at(&self, i: usize) -> Option<usize> {
        match self.steps().get(i) {
            Some(LocStep::Index(n)) => Some(*n),
            _ => None,
        }
    }

    pub(crate) fn get_mut<'a>(&self, root: &'a mut Value) -> Option<&'a mut Value> {
        let mut cur = root;
        for step in self.steps() {
            cur = match step {
                LocStep::Key(k) => cur.get_mut(*k)?,
                LocStep::Index(i) => cur.get_mut(*i)?,
            };
        }
        Some(cur)
    }
}

/// Decodes one stream's SSE events into deltas; one per stream (it keeps the open channels,
/// the model and, for Anthropic, the input tokens of `message_start`).
#[derive(Debug)]
pub struct StreamDecoder {
    shape: ApiShape,
    model: String,
    /// OpenAI chat: channels with text and no `finish_reason` yet (sorted).
    open: Vec<ChannelKey>,
    /// Anthropic: open content blocks (block index, channel).
    blocks: Vec<(usize, Channel)>,
    /// Anthropic: input tokens from `message_start`.
    input_tokens: u64,
    locs: Vec<(usize, TextLoc)>,
}

impl StreamDecoder {
    pub fn new(shape: ApiShape) -> Self {
        StreamDecoder {
            shape,
            model: String::new(),
            open: Vec::new(),
            blocks: Vec::new(),
            input_tokens: 0,
            locs: Vec::new(),
        }
    }

    pub fn shape(&self) -> ApiShape {
        self.shape
    }

    /// Decode one event, appending its deltas to `out`. Fails with `Unparsable` when the data is
    /// not JSON (except the OpenAI `[DONE]` marker) and `TooLarge` past [`MAX_CHANNELS`].
    pub fn decode(&mut self, ev: &SseEvent, out: &mut Vec<Delta>) -> Result<()> {
        let mut locs = std::mem::take(&mut self.locs);
        locs.clear();
        let res = self.decode_located(ev, out, &mut locs).map(|_| ());
        self.locs = locs;
        res
    }

    /// Decode one event; for every `Delta::Text` pushed, `locs` gets (its index in `out`, where
    /// its text sits in the returned JSON). Returns the parsed JSON (`None` for `[DONE]`).
    pub(crate) fn decode_located(
        &mut self,
        ev: &SseEvent,
        out: &mut Vec<Delta>,
        locs: &mut Vec<(usize, TextLoc)>,
    ) -> Result<Option<Value>> {
        if is_done_marker(&ev.data) {
            self.open.clear();
            out.push(Delta::Done);
            return Ok(None);
        }
        let v: Value = serde_json::from_str(&ev.data).map_err(|e| {
            Error::unparsable(format!(
                "{} sse event {:?} data is not json: {e}",
                self.shape.as_str(),
                ev.event.as_deref().unwrap_or("message")
            ))
        })?;
        match self.shape {
            ApiShape::OpenAiChat => self.decode_chat(&v, out, locs)?,
            ApiShape::AnthropicMessages => {
                self.decode_anthropic(ev.event.as_deref(), &v, out, locs)?
            }
            ApiShape::OpenAiResponses => self.decode_responses(ev.event.as_deref(), &v, out, locs),
        }
        Ok(Some(v))
    }

    fn model(&mut self, model: Option<&str>, out: &mut Vec<Delta>) {
        if let Some(m) = model {
            if !m.is_empty() && m != self.model {
                self.model.clear();
                self.model.push_str(m);
                out.push(Delta::Model(m.to_string()));
            }
        }
    }

    fn decode_chat(
        &mut self,
        v: &Value,
        out: &mut Vec<Delta>,
        locs: &mut Vec<(usize, TextLoc)>,
    ) -> Result<()> {
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            out.push(Delta::Error {
                message: error_message(err),
            });
            return Ok(());
        }
        self.model(v.get("model").and_then(Value::as_str), out);
        if let Some(choices) = v.get("choices").and_then(Value::as_array) {
            for (pos, ch) in choices.iter().enumerate() {
                let choice = index_of(ch, "index").unwrap_or(pos);
                if let Some(delta) = ch.get("delta") {
                    const FIELDS: [(&str, Channel); 4] = [
                        ("reasoning_content", Channel::Reasoning),
                        ("reasoning", Channel::Reasoning),
                        ("content", Channel::Content),
                        ("refusal", Channel::Refusal),
                    ];
                    for (field, channel) in FIELDS {
                        if let Some(text) = delta
                            .get(field)
                            .and_then(Value::as_str)
                            .filter(|s| !s.is_empty())
                        {
                            let key = ChannelKey::new(choice, channel);
                            self.open_chat(key)?;
                            locs.push((
                                out.len(),
                                TextLoc::new(&[
                                    LocStep::Key("choices"),
                                    LocStep::Index(pos),
                                    LocStep::Key("delta"),
                                    LocStep::Key(field),
                                ]),
                            ));
                            out.push(Delta::Text {
                                key,
                                text: text.to_string(),
                            });
                        }
                    }
                    if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                        for (tpos, call) in calls.iter().enumerate() {
                            let index = index_of(call, "index").unwrap_or(tpos);
                            let func = call.get("function");
                            let id = call.get("id").and_then(Value::as_str);
                            let name = func.and_then(|f| f.get("name")).and_then(Value::as_str);
                            if id.is_some() || name.is_some() {
                                out.push(Delta::ToolCallStart {
                                    choice,
                                    index,
                                    id: id.map(str::to_string),
                                    name: name.map(str::to_string),
                                });
                            }
                            let args = func
                                .and_then(|f| f.get("arguments"))
                                .and_then(Value::as_str);
                            if let Some(text) = args.filter(|s| !s.is_empty()) {
                                let key = ChannelKey::new(choice, Channel::ToolArgs { index });
                                self.open_chat(key)?;
                                locs.push((
                                    out.len(),
                                    TextLoc::new(&[
                                        LocStep::Key("choices"),
                                        LocStep::Index(pos),
                                        LocStep::Key("delta"),
                                        LocStep::Key("tool_calls"),
                                        LocStep::Index(tpos),
                                        LocStep::Key("function"),
                                        LocStep::Key("arguments"),
                                    ]),
                                ));
                                out.push(Delta::Text {
                                    key,
                                    text: text.to_string(),
                                });
                            }
                        }
                    }
                }
                if let Some(reason) = ch.get("finish_reason").and_then(Value::as_str) {
                    self.open.retain(|key| {
                        if key.choice == choice {
                            out.push(Delta::ChannelEnd { key: *key });
                            false
                        } else {
                            true
                        }
                    });
                    out.push(Delta::Finish {
                        choice,
                        reason: reason.to_string(),
                    });
                }
            }
        }
        if let Some(u) = v
            .get("usage")
            .and_then(|u| usage_of(u, "prompt_tokens", "completion_tokens"))
        {
            out.push(Delta::Usage(u));
        }
        Ok(())
    }

    fn open_chat(&mut self, key: ChannelKey) -> Result<()> {
        if let Err(at) = self.open.binary_search(&key) {
            if self.open.len() >= MAX_CHANNELS {
                return Err(too_many_channels(key));
            }
            self.open.insert(at, key);
        }
        Ok(())
    }

    fn decode_anthropic(
        &mut self,
        event: Option<&str>,
        v: &Value,
        out: &mut Vec<Delta>,
        locs: &mut Vec<(usize, TextLoc)>,
    ) -> Result<()> {
        let ty = v
            .get("type")
            .and_then(Value::as_str)
            .or(event)
            .unwrap_or_default();
        match ty {
            "message_start" => {
                let msg = v.get("message");
                self.model(
                    msg.and_then(|m| m.get("model")).and_then(Value::as_str),
                    out,
                );
                if let Some(u) = msg.and_then(|m| m.get("usage")).filter(|u| u.is_object()) {
                    self.input_tokens = u64_of(u, "input_tokens").unwrap_or(0);
                    out.push(Delta::Usage(Usage {
                        input_tokens: self.input_tokens,
                        output_tokens: u64_of(u, "output_tokens").unwrap_or(0),
                        reasoning_tokens: 0,
                    }));
                }
            }
            "content_block_start" => {
                let index = index_of(v, "index").unwrap_or(0);
                let block = v.get("content_block");
                let block_type = block
                    .and_then(|b| b.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let (channel, field) = match block_type {
                    "text" => (Channel::Content, "text"),
                    "thinking" => (Channel::Reasoning, "thinking"),
                    "tool_use" | "server_tool_use" | "mcp_tool_use" => {
                        out.push(Delta::ToolCallStart {
                            choice: 0,
                            index,
                            id: block
                                .and_then(|b| b.get("id"))
                                .and_then(Value::as_str)
                                .map(str::to_string),
                            name: block
                                .and_then(|b| b.get("name"))
                                .and_then(Value::as_str)
                                .map(str::to_string),
                        });
                        (Channel::ToolArgs { index }, "")
                    }
                    _ => return Ok(()),
                };
                let full = self.blocks.len() >= MAX_CHANNELS;
                match self.blocks.iter_mut().find(|(i, _)| *i == index) {
                    Some(slot) => slot.1 = channel,
                    None if full => return Err(too_many_channels(ChannelKey::new(0, channel))),
                    None => self.blocks.push((index, channel)),
                }
                if !field.is_empty() {
                    if let Some(text) = block
                        .and_then(|b| b.get(field))
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                    {
                        locs.push((
                            out.len(),
                            TextLoc::new(&[LocStep::Key("content_block"), LocStep::Key(field)]),
                        ));
                        out.push(Delta::Text {
                            key: ChannelKey::new(0, channel),
                            text: text.to_string(),
                        });
                    }
                }
            }
            "content_block_delta" => {
                let index = index_of(v, "index").unwrap_or(0);
                let delta = v.get("delta");
                let (field, inferred) =
                    match delta.and_then(|d| d.get("type")).and_then(Value::as_str) {
                        Some("text_delta") => ("text", Channel::Content),
                        Some("thinking_delta") => ("thinking", Channel::Reasoning),
                        Some("input_json_delta") => ("partial_json", Channel::ToolArgs { index }),
                        // signature_delta, citations_delta, ...: no text to scan.
                        _ => return Ok(()),
                    };
                let channel = self
                    .blocks
                    .iter()
                    .find(|(i, _)| *i == index)
                    .map(|(_, c)| *c)
                    .unwrap_or(inferred);
                if let Some(text) = delta
                    .and_then(|d| d.get(field))
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                {
                    locs.push((
                        out.len(),
                        TextLoc::new(&[LocStep::Key("delta"), LocStep::Key(field)]),
                    ));
                    out.push(Delta::Text {
                        key: ChannelKey::new(0, channel),
                        text: text.to_string(),
                    });
                }
            }
            "content_block_stop" => {
                let index = index_of(v, "index").unwrap_or(0);
                if let Some(pos) = self.blocks.iter().position(|(i, _)| *i == index) {
                    let (_, channel) = self.blocks.swap_remove(pos);
                    out.push(Delta::ChannelEnd {
                        key: ChannelKey::new(0, channel),
                    });
                }
            }
            "message_delta" => {
                if let Some(reason) = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    out.push(Delta::Finish {
                        choice: 0,
                        reason: reason.to_string(),
                    });
                }
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    if let Some(input) = u64_of(u, "input_tokens") {
                        self.input_tokens = input;
                    }
                    out.push(Delta::Usage(Usage {
                        input_tokens: self.input_tokens,
                        output_tokens: u64_of(u, "output_tokens").unwrap_or(0),
                        reasoning_tokens: 0,
                    }));
                }
            }
            "message_stop" => {
                self.blocks.clear();
                out.push(Delta::Done);
            }
            "error" => out.push(Delta::Error {
                message: error_message(v.get("error").unwrap_or(v)),
            }),
            // ping and anything newer.
            _ => {}
        }
        Ok(())
    }

    fn decode_responses(
        &mut self,
        event: Option<&str>,
        v: &Value,
        out: &mut Vec<Delta>,
        locs: &mut Vec<(usize, TextLoc)>,
    ) {
        let ty = v
            .get("type")
            .and_then(Value::as_str)
            .or(event)
            .unwrap_or_default();
        let output_index = index_of(v, "output_index").unwrap_or(0);
        let text_channel = match ty {
            "response.output_text.delta" | "response.output_text.done" => Some(Channel::Content),
            "response.refusal.delta" | "response.refusal.done" => Some(Channel::Refusal),
            "response.reasoning_summary_text.delta"
            | "response.reasoning_summary_text.done"
            | "response.reasoning_text.delta"
            | "response.reasoning_text.done" => Some(Channel::Reasoning),
            "response.function_call_arguments.delta" | "response.function_call_arguments.done" => {
                Some(Channel::ToolArgs {
                    index: output_index,
                })
            }
            _ => None,
        };
        if let Some(channel) = text_channel {
            let key = ChannelKey::new(0, channel);
            if ty.ends_with(".delta") {
                if let Some(text) = v
                    .get("delta")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                {
                    locs.push((out.len(), TextLoc::new(&[LocStep::Key("delta")])));
                    out.push(Delta::Text {
                        key,
                        text: text.to_string(),
                    });
                }
            } else {
                out.push(Delta::ChannelEnd { key });
            }
            return;
        }
        match ty {
            "response.created" | "response.in_progress" => {
                self.model(
                    v.get("response")
                        .and_then(|r| r.get("model"))
                        .and_then(Value::as_str),
                    out,
                );
            }
            "response.output_item.added" => {
                let item = v.get("item");
                let item_type = item.and_then(|i| i.get("type")).and_then(Value::as_str);
                if matches!(item_type, Some("function_call" | "custom_tool_call")) {
                    let str_field = |k: &str| item.and_then(|i| i.get(k)).and_then(Value::as_str);
                    out.push(Delta::ToolCallStart {
                        choice: 0,
                        index: output_index,
                        id: str_field("call_id")
                            .or_else(|| str_field("id"))
                            .map(str::to_string),
                        name: str_field("name").map(str::to_string),
                    });
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                let resp = v.get("response");
                self.model(
                    resp.and_then(|r| r.get("model")).and_then(Value::as_str),
                    out,
                );
                if let Some(u) = resp
                    .and_then(|r| r.get("usage"))
                    .and_then(|u| usage_of(u, "input_tokens", "output_tokens"))
                {
                    out.push(Delta::Usage(u));
                }
                if ty == "response.failed" {
                    let message = resp
                        .and_then(|r| r.get("error"))
                        .filter(|e| !e.is_null())
                        .map(error_message)
                        .unwrap_or_else(|| "response failed".to_string());
                    out.push(Delta::Error { message });
                } else {
                    let reason = resp
                        .and_then(|r| r.get("incomplete_details"))
                        .and_then(|d| d.get("reason"))
                        .and_then(Value::as_str)
                        .or_else(|| resp.and_then(|r| r.get("status")).and_then(Value::as_str));
                    if let Some(reason) = reason {
                        out.push(Delta::Finish {
                            choice: 0,
                            reason: reason.to_string(),
                        });
                    }
                }
                out.push(Delta::Done);
            }
            "error" => {
                let err = v.get("error").filter(|e| e.is_object()).unwrap_or(v);
                out.push(Delta::Error {
                    message: error_message(err),
                });
            }
            _ => {}
        }
    }
}

/// Whether an event's data is the OpenAI end-of-stream marker.
pub(crate) fn is_done_marker(data: &str) -> bool {
    data.trim() == "[DONE]"
}

/// Whether this event is the OpenAI chat chunk with `choices: []` and a `usage` object (the
/// extra chunk that `stream_options.include_usage` adds before `[DONE]`).
pub fn is_usage_only_chunk(shape: ApiShape, ev: &SseEvent) -> bool {
    if shape != ApiShape::OpenAiChat || !ev.data.contains("\"usage\"") {
        return false;
    }
    let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
        return false;
    };
    v.get("choices")
        .and_then(Value::as_array)
        .is_some_and(|c| c.is_empty())
        && v.get("usage").is_some_and(Value::is_object)
}

fn index_of(v: &Value, key: &str) -> Option<usize> {
    v.get(key)
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
}

fn u64_of(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Reasoning tokens where the provider reports them (OpenAI Chat
/// `completion_tokens_details.reasoning_tokens`, Responses `output_tokens_details.reasoning_tokens`).
pub(crate) fn reasoning_tokens(u: &Value) -> u64 {
    ["completion_tokens_details", "output_tokens_details"]
        .iter()
        .find_map(|k| {
            u.get(*k)
                .and_then(|d| d.get("reasoning_tokens"))
                .and_then(Value::as_u64)
        })
        .unwrap_or(0)
}

fn usage_of(u: &Value, input: &str, output: &str) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    Some(Usage {
        input_tokens: u64_of(u, input).unwrap_or(0),
        output_tokens: u64_of(u, output).unwrap_or(0),
        reasoning_tokens: reasoning_tokens(u),
    })
}

fn error_message(err: &Value) -> String {
    match err {
        Value::String(s) => s.clone(),
        _ => err
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| err.to_string()),
    }
}

fn too_many_channels(key: ChannelKey) -> Error {
    Error::too_large(format!(
        "stream opens more than {MAX_CHANNELS} channels (at choice {} {:?})",
        key.choice, key.channel
    ))
}

/// The answer as the client would assemble it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Assembled {
    pub model: Option<String>,
    /// Indexed by choice.
    pub choices: Vec<AssembledChoice>,
    pub usage: Option<Usage>,
    /// Whether the terminal event arrived.
    pub done: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct AssembledChoice {
    pub content: String,
    pub reasoning: String,
    pub refusal: String,
    /// In order of first appearance.
    pub tool_calls: Vec<AssembledToolCall>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct AssembledToolCall {
    pub index: usize,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

/// Folds deltas into an [`Assembled`] answer, bounded by `max_bytes` of text (content,
/// reasoning, refusal, arguments, ids, names, model, error): `TooLarge` past it, and past
/// [`MAX_CHANNELS`] choices or tool calls.
#[derive(Debug)]
pub struct StreamAssembler {
    max_bytes: usize,
    used: usize,
    out: Assembled,
}

impl StreamAssembler {
    pub fn new(max_bytes: usize) -> Self {
        StreamAssembler {
            max_bytes,
            used: 0,
            out: Assembled::default(),
        }
    }

    pub fn apply(&mut self, d: &Delta) -> Result<()> {
        match d {
            Delta::Text { key, text } => {
                self.charge(text.len())?;
                let choice = self.choice(key.choice)?;
                match key.channel {
                    Channel::Content => choice.content.push_str(text),
                    Channel::Reasoning => choice.reasoning.push_str(text),
                    Channel::Refusal => choice.refusal.push_str(text),
                    Channel::ToolArgs { index } => {
                        tool_call(choice, index)?.arguments.push_str(text)
                    }
                }
            }
            Delta::ToolCallStart {
                choice,
                index,
                id,
                name,
            } => {
                let n = id
                    .as_ref()
                    .map_or(0, String::len)
                    .saturating_add(name.as_ref().map_or(0, String::len));
                self.charge(n)?;
                let call = tool_call(self.choice(*choice)?, *index)?;
                if id.is_some() {
                    call.id.clone_from(id);
                }
                if name.is_some() {
                    call.name.clone_from(name);
                }
            }
            Delta::ChannelEnd { .. } => {}
            Delta::Finish { choice, reason } => {
                self.charge(reason.len())?;
                self.choice(*choice)?.finish_reason = Some(reason.clone());
            }
            Delta::Usage(u) => self.out.usage = Some(*u),
            Delta::Model(m) => {
                self.charge(m.len())?;
                self.out.model = Some(m.clone());
            }
            Delta::Done => self.out.done = true,
            Delta::Error { message } => {
                self.charge(message.len())?;
                self.out.error = Some(message.clone());
            }
        }
        Ok(())
    }

    pub fn result(&self) -> &Assembled {
        &self.out
    }

    pub fn into_result(self) -> Assembled {
        self.out
    }

    fn charge(&mut self, n: usize) -> Result<()> {
        self.used = self.used.saturating_add(n);
        if self.used > self.max_bytes {
            return Err(Error::too_large(format!(
                "assembled stream of {} bytes exceeds the limit of {} bytes",
                self.used, self.max_bytes
            )));
        }
        Ok(())
    }

    fn choice(&mut self, choice: usize) -> Result<&mut AssembledChoice> {
        if choice >= MAX_CHANNELS {
            return Err(Error::too_large(format!(
                "choice index {choice} exceeds the limit of {MAX_CHANNELS}"
            )));
        }
        if self.out.choices.len() <= choice {
            self.out
                .choices
                .resize_with(choice.saturating_add(1), AssembledChoice::default);
        }
        self.out
            .choices
            .get_mut(choice)
            .ok_or_else(|| Error::too_large(format!("choice index {choice} out of range")))
    }
}

fn tool_call(choice: &mut AssembledChoice, index: usize) -> Result<&mut AssembledToolCall> {
    let pos = match choice.tool_calls.iter().position(|c| c.index == index) {
        Some(pos) => pos,
        None => {
            if choice.tool_calls.len() >= MAX_CHANNELS {
                return Err(Error::too_large(format!(
                    "more than {MAX_CHANNELS} tool calls (at index {index})"
                )));
            }
            choice.tool_calls.push(AssembledToolCall {
                index,
                ..AssembledToolCall::default()
            });
            choice.tool_calls.len().saturating_sub(1)
        }
    };
    choice
        .tool_calls
        .get_mut(pos)
        .ok_or_else(|| Error::too_large(format!("tool call index {index} out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_string),
            data: data.to_string(),
            id: None,
            raw: Vec::new(),
        }
    }

    fn decode_all(shape: ApiShape, events: &[SseEvent]) -> Result<Vec<Delta>> {
        let mut d = StreamDecoder::new(shape);
        let mut out = Vec::new();
        for e in events {
            d.decode(e, &mut out)?;
        }
        Ok(out)
    }

    fn text(choice: usize, channel: Channel, t: &str) -> Delta {
        Delta::Text {
            key: ChannelKey::new(choice, channel),
            text: t.to_string(),
        }
    }

    #[test]
    fn decode_cases() {
        let content = Channel::Content;
        let cases: Vec<(&str, ApiShape, Vec<SseEvent>, Vec<Delta>)> = vec![
            (
                "chat content, finish, usage chunk, done",
                ApiShape::OpenAiChat,
                vec![
                    ev(
                        None,
                        r#"{"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}"#,
                    ),
                    ev(
                        None,
                        r#"{"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}"#,
                    ),
                    ev(
                        None,
                        r#"{"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
                    ),
                    ev(
                        None,
                        r#"{"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
                    ),
                    ev(None, "[DONE]"),
                ],
                vec![
                    Delta::Model("m".into()),
                    text(0, content, "Hi"),
                    Delta::ChannelEnd {
                        key: ChannelKey::new(0, content),
                    },
                    Delta::Finish {
                        choice: 0,
                        reason: "stop".into(),
                    },
                    Delta::Usage(Usage {
                        input_tokens: 3,
                        output_tokens: 1,
                        reasoning_tokens: 0,
                    }),
                    Delta::Done,
                ],
            ),
            (
                "chat error object",
                ApiShape::OpenAiChat,
                vec![ev(
                    None,
                    r#"{"error":{"message":"boom","type":"server_error"}}"#,
                )],
                vec![Delta::Error {
                    message: "boom".into(),
                }],
            ),
            (
                "anthropic usage combines input and output",
                ApiShape::AnthropicMessages,
                vec![
                    ev(
                        Some("message_start"),
                        r#"{"type":"message_start","message":{"model":"c","usage":{"input_tokens":9,"output_tokens":1}}}"#,
                    ),
                    ev(
                        Some("message_delta"),
                        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}"#,
                    ),
                    ev(Some("message_stop"), r#"{"type":"message_stop"}"#),
                ],
                vec![
                    Delta::Model("c".into()),
                    Delta::Usage(Usage {
                        input_tokens: 9,
                        output_tokens: 1,
                        reasoning_tokens: 0,
                    }),
                    Delta::Finish {
                        choice: 0,
                        reason: "end_turn".into(),
                    },
                    Delta::Usage(Usage {
                        input_tokens: 9,
                        output_tokens: 5,
                        reasoning_tokens: 0,
                    }),
                    Delta::Done,
                ],
            ),
            (
                "anthropic error",
                ApiShape::AnthropicMessages,
                vec![ev(
                    Some("error"),
                    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                )],
                vec![Delta::Error {
                    message: "Overloaded".into(),
                }],
            ),
            (
                "responses error event",
                ApiShape::OpenAiResponses,
                vec![ev(
                    Some("error"),
                    r#"{"type":"error","code":"server_error","message":"bad","param":null,"sequence_number":3}"#,
                )],
                vec![Delta::Error {
                    message: "bad".into(),
                }],
            ),
            (
                "responses failed",
                ApiShape::OpenAiResponses,
                vec![ev(
                    Some("response.failed"),
                    r#"{"type":"response.failed","response":{"status":"failed","error":{"code":"server_error","message":"nope"},"usage":null}}"#,
                )],
                vec![
                    Delta::Error {
                        message: "nope".into(),
                    },
                    Delta::Done,
                ],
            ),
        ];
        for (name, shape, events, want) in cases {
            assert_eq!(decode_all(shape, &events).unwrap(), want, "{name}");
        }
    }

    #[test]
    fn not_json_is_unparsable() {
        for shape in ApiShape::ALL {
            let err = decode_all(shape, &[ev(None, "{nope")]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unparsable, "{shape:?}");
        }
    }

    #[test]
    fn channel_bound() {
        let events: Vec<SseEvent> = (0..=MAX_CHANNELS)
            .map(|i| {
                ev(
                    None,
                    &format!(r#"{{"choices":[{{"index":{i},"delta":{{"content":"x"}}}}]}}"#),
                )
            })
            .collect();
        let err = decode_all(ApiShape::OpenAiChat, &events).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        let mut asm = StreamAssembler::new(1 << 20);
        let err = asm
            .apply(&text(MAX_CHANNELS, Channel::Content, "x"))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
    }

    #[test]
    fn assembler_bound() {
        let cases = [
            ("limit 0", 0, false),
            ("exactly fits", 4, true),
            ("one over", 3, false),
        ];
        for (name, max, ok) in cases {
            let mut asm = StreamAssembler::new(max);
            let res = asm.apply(&text(0, Channel::Content, "abcd"));
            assert_eq!(res.is_ok(), ok, "{name}");
            if let Err(e) = res {
                assert_eq!(e.kind(), ErrorKind::TooLarge, "{name}");
            }
        }
    }

    #[test]
    fn usage_only_chunk() {
        let cases = [
            (
                ApiShape::OpenAiChat,
                r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
                true,
            ),
            (
                ApiShape::OpenAiChat,
                r#"{"choices":[{"index":0,"delta":{}}],"usage":{"prompt_tokens":1}}"#,
                false,
            ),
            (
                ApiShape::OpenAiChat,
                r#"{"choices":[],"usage":null}"#,
                false,
            ),
            (ApiShape::OpenAiChat, "[DONE]", false),
            (
                ApiShape::AnthropicMessages,
                r#"{"choices":[],"usage":{}}"#,
                false,
            ),
        ];
        for (shape, data, want) in cases {
            assert_eq!(is_usage_only_chunk(shape, &ev(None, data)), want, "{data}");
        }
    }
}
