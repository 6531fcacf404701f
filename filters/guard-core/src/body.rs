//! Request and non-streamed response bodies of the three LLM APIs, held as `serde_json::Value`
//! (with `preserve_order`, so unknown fields and field order survive a rewrite), and viewed as a
//! list of located text [`Segment`]s, declared tools, the structured-output schema and the tool
//! calls the model made.
//!
//! One walker per API shape visits every place that holds text. The same walker validates a body
//! at parse time (a known text-bearing field of the wrong type is [`ErrorKind::Unparsable`], with
//! the JSON Pointer of the field in the message) and collects segments and tool calls later, so
//! what is validated and what is scanned cannot drift apart. Where a body holds an unknown part or
//! block type, its `text` string (if any) is still scanned: a new provider feature must not become
//! a blind spot.
//!
//! Segment indices: `message` is the index of the message (Chat, Anthropic) or input / output item
//! (Responses) that holds the text, `None` for top-level fields (`system`, `instructions`, a
//! string `input`) and for Chat / Anthropic responses (one answer per choice); `choice` is the
//! position in Chat `choices`, `None` elsewhere.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use guard_core::api::ApiShape;
//! use guard_core::body::RequestBody;
//!
//! let raw = br#"{"model":"m","messages":[{"role":"user","content":"my mail is a@b.c"}],"x":1}"#;
//! let mut req = RequestBody::parse(ApiShape::OpenAiChat, raw)?;
//! let path = req.segments()[0].path.clone();
//! assert_eq!(path.to_string(), "/messages/0/content");
//! req.set_text(&path, "my mail is [EMAIL]")?;
//! assert_eq!(
//!     req.to_bytes(),
//!     br#"{"model":"m","messages":[{"role":"user","content":"my mail is [EMAIL]"}],"x":1}"#
//! );
//! # Ok(())
//! # }
//! ```

use crate::api::ApiShape;
use crate::error::{Error, ErrorKind, Result};
use crate::segment::{JsonPath, Segment, Source, Step};
use serde::Serialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;

type Obj = Map<String, Value>;

/// Token counts of one exchange. For Anthropic, `input_tokens` includes cache writes and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Reasoning tokens (part of the output) where the provider reports them; 0 otherwise.
    pub reasoning_tokens: u64,
}

/// A tool the caller declared, with the JSON Schema of its arguments when it has one (custom /
/// free-form tools and provider-side tools have none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToolDecl<'a> {
    pub name: &'a str,
    pub schema: Option<&'a Value>,
}

/// The arguments of a tool call, as the API carries them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ToolArgs<'a> {
    /// OpenAI: a JSON-encoded string (`function.arguments`), or free text for custom tools.
    Text(&'a str),
    /// Anthropic: the `tool_use.input` value itself.
    Json(&'a Value),
}

/// A tool call made by the model (in a response, or in the history of a request).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall<'a> {
    /// Position in Chat `choices`; `None` for the other shapes and for requests.
    pub choice: Option<usize>,
    /// Index of the message / item that holds the call; `None` in Chat and Anthropic responses.
    pub message: Option<usize>,
    /// Ordinal of the call: within its message (Chat, Anthropic; parallel calls count 0, 1, ..)
    /// or within the body (Responses, where each call is an item of its own).
    pub index: usize,
    /// The call id (`id`, or `call_id` for Responses), which tool results refer to.
    pub id: Option<&'a str>,
    /// The tool name; empty if the body does not say.
    pub name: &'a str,
    pub arguments: ToolArgs<'a>,
    /// Location of the arguments (the string, or Anthropic's `input` value).
    pub path: JsonPath,
}

/// A request body of one of the API shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestBody {
    shape: ApiShape,
    json: Value,
}

impl RequestBody {
    /// Parse and validate a request body. Fails with [`ErrorKind::Unparsable`] on non-UTF-8
    /// bytes, bad JSON (including nesting deeper than serde_json's recursion limit), a top level
    /// that is not an object, or a known field of the wrong type.
    pub fn parse(shape: ApiShape, bytes: &[u8]) -> Result<Self> {
        Self::from_value(shape, parse_json(REQUEST, bytes)?)
    }

    /// Validate an already parsed body.
    pub fn from_value(shape: ApiShape, json: Value) -> Result<Self> {
        validate(REQUEST, &json, |w| walk_request(w, shape, &json))?;
        Ok(RequestBody { shape, json })
    }

    pub fn shape(&self) -> ApiShape {
        self.shape
    }
    pub fn json(&self) -> &Value {
        &self.json
    }
    /// Direct access for rewrites beyond text; later walks skip anything no longer well typed.
    pub fn json_mut(&mut self) -> &mut Value {
        &mut self.json
    }
    pub fn into_json(self) -> Value {
        self.json
    }
    pub fn model(&self) -> Option<&str> {
        model(&self.json)
    }
    /// Whether the caller asked for an SSE stream (`"stream": true`).
    pub fn is_stream(&self) -> bool {
        self.json
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// Every piece of text the request sends to the model, in document order.
    pub fn segments(&self) -> Vec<Segment<'_>> {
        let mut w = Walk::new(REQUEST, Want::Segments);
        walk_request(&mut w, self.shape, &self.json);
        w.segments
    }

    /// The tools the caller declared: Chat `tools[].function` / `tools[].custom` and legacy
    /// `functions[]`, Responses `tools[]` of type `function` / `custom`, Anthropic `tools[]`.
    pub fn tools(&self) -> Vec<ToolDecl<'_>> {
        let list = |key: &str| {
            self.json
                .get(key)
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice)
        };
        match self.shape {
            ApiShape::OpenAiChat => {
                let tools = list("tools")
                    .iter()
                    .filter_map(|t| match t.get("function") {
                        Some(f) => tool_decl(f, Some("parameters")),
                        None => tool_decl(t.get("custom")?, None),
                    });
                let legacy = list("functions")
                    .iter()
                    .filter_map(|f| tool_decl(f, Some("parameters")));
                tools.chain(legacy).collect()
            }
            ApiShape::OpenAiResponses => list("tools")
                .iter()
                .filter_map(|t| match t.get("type").and_then(Value::as_str) {
                    Some("function") => tool_decl(t, Some("parameters")),
                    Some("custom") => tool_decl(t, None),
                    _ => None,
                })
                .collect(),
            ApiShape::AnthropicMessages => list("tools")
                .iter()
                .filter_map(|t| tool_decl(t, Some("input_schema")))
                .collect(),
        }
    }

    /// The JSON Schema the caller asked the answer to follow: Chat
    /// `response_format.json_schema.schema`, Responses `text.format.schema`, Anthropic
    /// `output_config.format.schema` (or the beta `output_format.schema`), each only when the
    /// format's `type` is `json_schema`. Anthropic callers that force a tool instead have their
    /// schema in [`RequestBody::tools`].
    pub fn response_schema(&self) -> Option<&Value> {
        let j = &self.json;
        let format = match self.shape {
            ApiShape::OpenAiChat => j.get("response_format"),
            ApiShape::OpenAiResponses => j.get("text").and_then(|t| t.get("format")),
            ApiShape::AnthropicMessages => j
                .get("output_config")
                .and_then(|c| c.get("format"))
                .or_else(|| j.get("output_format")),
        }?;
        if format.get("type").and_then(Value::as_str) != Some("json_schema") {
            return None;
        }
        let schema = match self.shape {
            ApiShape::OpenAiChat => format.get("json_schema")?.get("schema"),
            _ => format.get("schema"),
        }?;
        (!schema.is_null()).then_some(schema)
    }

    /// The tool calls in the conversation history (assistant turns).
    pub fn tool_calls(&self) -> Vec<ToolCall<'_>> {
        let mut w = Walk::new(REQUEST, Want::Calls);
        walk_request(&mut w, self.shape, &self.json);
        w.calls
    }

    /// Replace the JSON string at `path` (a segment's path) with `text`.
    pub fn set_text(&mut self, path: &JsonPath, text: &str) -> Result<()> {
        set_text(&mut self.json, path, text)
    }

    /// The body as compact JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_bytes(&self.json)
    }
}

/// A non-streamed response body of one of the API shapes (an answer or a provider error).
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseBody {
    shape: ApiShape,
    json: Value,
}

impl ResponseBody {
    /// Parse and validate a response body; fails as [`RequestBody::parse`] does.
    pub fn parse(shape: ApiShape, bytes: &[u8]) -> Result<Self> {
        Self::from_value(shape, parse_json(RESPONSE, bytes)?)
    }

    /// Validate an already parsed body.
    pub fn from_value(shape: ApiShape, json: Value) -> Result<Self> {
        validate(RESPONSE, &json, |w| walk_response(w, shape, &json))?;
        Ok(ResponseBody { shape, json })
    }

    pub fn shape(&self) -> ApiShape {
        self.shape
    }
    pub fn json(&self) -> &Value {
        &self.json
    }
    /// Direct access for rewrites beyond text; later walks skip anything no longer well typed.
    pub fn json_mut(&mut self) -> &mut Value {
        &mut self.json
    }

    /// Remove tool calls from the answer and say why in a deterministic assistant text, in the
    /// shape's own way: Chat (the calls leave `message.tool_calls`, the text joins `content`,
    /// `finish_reason` becomes `stop` when no call is left), Anthropic (a text block,
    /// `stop_reason` `end_turn` when no `tool_use` is left), Responses (an assistant message
    /// item). `calls`: each call's location (any path inside the call, e.g. its arguments'
    /// [`ToolCall::path`]) and its choice. Returns false when a call cannot be located.
    pub fn remove_tool_calls(&mut self, calls: &[(&[Step], usize)], message: &str) -> bool {
        // (array location, index) of each call, last first so indexes stay valid.
        let mut targets: Vec<(Vec<Step>, usize, usize)> = Vec::new();
        for (loc, choice) in calls {
            let Some(pos) = loc.iter().rposition(
                |s| matches!(s, Step::Key(k) if k == "tool_calls" || k == "content" || k == "output"),
            ) else {
                return false;
            };
            let Some(Step::Index(i)) = loc.get(pos + 1) else {
                return false;
            };
            let target = (loc.get(..=pos).unwrap_or_default().to_vec(), *i, *choice);
            // One call named twice is removed once (its names need not be neighbours).
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
        targets.sort_by_key(|t| std::cmp::Reverse(t.1));
        let shape = self.shape;
        let json = &mut self.json;
        let mut choices: Vec<usize> = Vec::new();
        for (arr, idx, choice) in &targets {
            let Some(Value::Array(a)) = value_at_mut(json, arr) else {
                return false;
            };
            if *idx < a.len() {
                a.remove(*idx);
            }
            if !choices.contains(choice) {
                choices.push(*choice);
            }
        }
        match shape {
            ApiShape::OpenAiChat => {
                for c in choices {
                    let Some(choice) = json.get_mut("choices").and_then(|v| v.get_mut(c)) else {
                        continue;
                    };
                    let empty = choice
                        .get("message")
                        .and_then(|m| m.get("tool_calls"))
                        .and_then(Value::as_array)
                        .is_some_and(Vec::is_empty);
                    if let Some(m) = choice.get_mut("message").and_then(Value::as_object_mut) {
                        if empty {
                            m.remove("tool_calls");
                        }
                        let text = match m.get("content").and_then(Value::as_str) {
                            Some(t) if !t.is_empty() => format!("{t}\n\n{message}"),
                            _ => message.to_string(),
                        };
                        m.insert("content".into(), Value::String(text));
                    }
                    if empty {
                        if let Some(o) = choice.as_object_mut() {
                            o.insert("finish_reason".into(), Value::String("stop".into()));
                        }
                    }
                }
            }
            ApiShape::AnthropicMessages => {
                let any_left = json
                    .get("content")
                    .and_then(Value::as_array)
                    .is_some_and(|a| {
                        a.iter()
                            .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
                    });
                if let Some(a) = json.get_mut("content").and_then(Value::as_array_mut) {
                    a.push(serde_json::json!({"type": "text", "text": message}));
                }
                if !any_left {
                    if let Some(o) = json.as_object_mut() {
                        o.insert("stop_reason".into(), Value::String("end_turn".into()));
                    }
                }
            }
            ApiShape::OpenAiResponses => {
                if let Some(a) = json.get_mut("output").and_then(Value::as_array_mut) {
                    a.push(serde_json::json!({
                        "type": "message", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": message, "annotations": []}]
                    }));
                }
            }
        }
        true
    }
    pub fn into_json(self) -> Value {
        self.json
    }
    pub fn model(&self) -> Option<&str> {
        model(&self.json)
    }

    /// Every piece of text of the answer, in document order.
    pub fn segments(&self) -> Vec<Segment<'_>> {
        let mut w = Walk::new(RESPONSE, Want::Segments);
        walk_response(&mut w, self.shape, &self.json);
        w.segments
    }

    /// The tool calls the model made.
    pub fn tool_calls(&self) -> Vec<ToolCall<'_>> {
        let mut w = Walk::new(RESPONSE, Want::Calls);
        walk_response(&mut w, self.shape, &self.json);
        w.calls
    }

    /// Token usage, when the body reports it.
    pub fn usage(&self) -> Option<Usage> {
        let u = self.json.get("usage")?.as_object()?;
        let n = |k: &str| u.get(k).and_then(Value::as_u64);
        let (input, output) = match self.shape {
            ApiShape::OpenAiChat => (n("prompt_tokens"), n("completion_tokens")),
            ApiShape::OpenAiResponses => (n("input_tokens"), n("output_tokens")),
            ApiShape::AnthropicMessages => {
                let parts = [
                    "input_tokens",
                    "cache_creation_input_tokens",
                    "cache_read_input_tokens",
                ];
                let input = parts
                    .iter()
                    .filter_map(|k| n(k))
                    .reduce(u64::saturating_add);
                (input, n("output_tokens"))
            }
        };
        if input.is_none() && output.is_none() {
            return None;
        }
        Some(Usage {
            input_tokens: input.unwrap_or(0),
            output_tokens: output.unwrap_or(0),
            reasoning_tokens: crate::stream::reasoning_tokens(&Value::Object(u.clone())),
        })
    }

    /// Whether the body is a provider error: OpenAI `{"error": {...}}` (a Responses object with a
    /// non-null `error`, i.e. a failed response, counts), Anthropic `{"type": "error", ...}`.
    pub fn is_error(&self) -> bool {
        let j = &self.json;
        j.get("type").and_then(Value::as_str) == Some("error")
            || j.get("error").is_some_and(|e| !e.is_null())
    }

    /// Replace the JSON string at `path` (a segment's path) with `text`.
    pub fn set_text(&mut self, path: &JsonPath, text: &str) -> Result<()> {
        set_text(&mut self.json, path, text)
    }

    /// The body as compact JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_bytes(&self.json)
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers.

const REQUEST: &str = "request body";
const RESPONSE: &str = "response body";

/// Parse a whole body as strict JSON: UTF-8, one document, no object naming a member twice
/// (see [`Unique`]). For filters that read bodies outside the LLM API shapes (JSON-RPC).
pub fn parse_strict(bytes: &[u8]) -> Result<Value> {
    parse_json("body", bytes)
}

fn parse_json(what: &str, bytes: &[u8]) -> Result<Value> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error::unparsable(format!(
            "{what} is not valid utf-8 (bad byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    serde_json::from_str::<Unique>(text)
        .map(|u| u.0)
        .map_err(|e| Error::unparsable(format!("{what} is not valid json: {e}")))
}

/// A JSON value in which no object names a member twice (after unescaping, so `"content"` and
/// `"cont\u0065nt"` are the same name). Parsers disagree on which of two members counts
/// (serde_json and most keep the last, others the first), and an unchanged body is forwarded
/// byte for byte: a body the filter judged by one member must not reach an upstream that may
/// read the other, so such a body is unparsable.
struct Unique(Value);

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a json value")
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Unique(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let shown: String = key.chars().take(64).collect();
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate member name {shown:?}"
                )));
            }
            let Unique(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Check the top level is an object, then run the shape's walker for its type errors only.
fn validate<'a>(
    what: &'static str,
    json: &'a Value,
    walk: impl FnOnce(&mut Walk<'a>),
) -> Result<()> {
    if !json.is_object() {
        return Err(Error::unparsable(format!(
            "{what} is {}, expected a json object",
            kind(json)
        )));
    }
    let mut w = Walk::new(what, Want::Nothing);
    walk(&mut w);
    w.error.map_or(Ok(()), Err)
}

fn model(json: &Value) -> Option<&str> {
    json.get("model").and_then(Value::as_str)
}

fn set_text(json: &mut Value, path: &JsonPath, text: &str) -> Result<()> {
    match path.get_mut(json) {
        Some(Value::String(s)) => {
            s.clear();
            s.push_str(text);
            Ok(())
        }
        Some(other) => Err(Error::new(
            ErrorKind::BadLocation,
            format!(
                "cannot set text at {}: it is {}, not a string",
                pointer(path),
                kind(other)
            ),
        )),
        None => Err(Error::new(
            ErrorKind::BadLocation,
            format!(
                "cannot set text at {}: no such location in the body",
                pointer(path)
            ),
        )),
    }
}

fn to_bytes(json: &Value) -> Vec<u8> {
    // Serialising a `Value` cannot fail: its keys are strings and its numbers finite.
    serde_json::to_vec(json).unwrap_or_default()
}

fn tool_decl<'a>(v: &'a Value, schema_key: Option<&str>) -> Option<ToolDecl<'a>> {
    let name = v.get("name")?.as_str()?;
    let schema = schema_key.and_then(|k| v.get(k)).filter(|s| !s.is_null());
    Some(ToolDecl { name, schema })
}

/// A JSON Pointer for messages; the empty pointer (the whole body) reads as "the top level".
fn pointer(path: &JsonPath) -> String {
    if path.0.is_empty() {
        "the top level".to_string()
    } else {
        path.to_string()
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------------------------
// The walk: validation, segment and tool-call collection in one pass.

/// What a walk collects (it always validates).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Nothing,
    Segments,
    Calls,
}

/// Context for the text found below a message or block.
#[derive(Clone, Copy, Default)]
struct At<'a> {
    message: Option<usize>,
    tool_name: Option<&'a str>,
}

/// A field that holds either a string or an array of parts / blocks.
enum Content<'a> {
    Absent,
    Text(&'a str),
    Parts(&'a [Value]),
}

/// Deepest nesting of Anthropic blocks (`tool_result` → `document` → text is depth 2).
const MAX_BLOCK_DEPTH: usize = 4;

struct Walk<'a> {
    what: &'static str,
    want: Want,
    segments: Vec<Segment<'a>>,
    calls: Vec<ToolCall<'a>>,
    /// The first type error met.
    error: Option<Error>,
    /// Tool name by call id, so a later tool result knows which tool produced it.
    names: HashMap<&'a str, &'a str>,
    choice: Option<usize>,
    /// Calls seen so far, and the count at the start of the current message.
    call_count: usize,
    call_base: usize,
}

impl<'a> Walk<'a> {
    fn new(what: &'static str, want: Want) -> Self {
        Walk {
            what,
            want,
            segments: Vec::new(),
            calls: Vec::new(),
            error: None,
            names: HashMap::new(),
            choice: None,
            call_count: 0,
            call_base: 0,
        }
    }

    fn fail(&mut self, path: &JsonPath, got: &Value, expected: &str) {
        if self.error.is_none() {
            let msg = format!(
                "{}: {} is {}, expected {expected}",
                self.what,
                pointer(path),
                kind(got)
            );
            self.error = Some(Error::unparsable(msg));
        }
    }

    fn object(&mut self, v: &'a Value, path: &JsonPath) -> Option<&'a Obj> {
        match v {
            Value::Object(o) => Some(o),
            other => {
                self.fail(path, other, "an object");
                None
            }
        }
    }

    /// An optional object field; absent and `null` are `None`, other types an error.
    fn field_obj(&mut self, o: &'a Obj, key: &str, parent: &JsonPath) -> Option<&'a Obj> {
        match o.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                self.fail(&parent.key(key), other, "an object");
                None
            }
        }
    }

    /// An optional array field; absent and `null` are empty, other types an error.
    fn field_arr(&mut self, o: &'a Obj, key: &str, parent: &JsonPath) -> &'a [Value] {
        match o.get(key) {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.fail(&parent.key(key), other, "an array");
                &[]
            }
        }
    }

    /// An optional string field; absent and `null` are `None`, other types an error.
    fn field_str(&mut self, o: &'a Obj, key: &str, parent: &JsonPath) -> Option<&'a str> {
        match o.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                self.fail(&parent.key(key), other, "a string");
                None
            }
        }
    }

    /// A field that is a string or an array of parts (absent / `null`: neither).
    fn content(&mut self, o: &'a Obj, key: &str, parent: &JsonPath) -> Content<'a> {
        match o.get(key) {
            None | Some(Value::Null) => Content::Absent,
            Some(Value::String(s)) => Content::Text(s),
            Some(Value::Array(a)) => Content::Parts(a),
            Some(other) => {
                self.fail(&parent.key(key), other, "a string or an array");
                Content::Absent
            }
        }
    }

    fn push(&mut self, source: Source, path: JsonPath, text: &'a str, at: At<'a>) {
        if self.want == Want::Segments {
            self.segments.push(Segment {
                source,
                path,
                text: Cow::Borrowed(text),
                message: at.message,
                choice: self.choice,
                tool_name: at.tool_name.map(Cow::Borrowed),
            });
        }
    }

    /// A text field that must be a string when present.
    fn text(&mut self, source: Source, o: &'a Obj, key: &str, parent: &JsonPath, at: At<'a>) {
        if let Some(s) = self.field_str(o, key, parent) {
            self.push(source, parent.key(key), s, at);
        }
    }

    /// A text field of a part we do not fully know: scanned if it is a string, never an error.
    fn loose_text(&mut self, source: Source, o: &'a Obj, key: &str, parent: &JsonPath, at: At<'a>) {
        if let Some(Value::String(s)) = o.get(key) {
            self.push(source, parent.key(key), s, at);
        }
    }

    /// Every string leaf below `root` (Anthropic `tool_use.input`), in document order. Iterative,
    /// so a deep value built through `json_mut` cannot exhaust the stack.
    fn string_leaves(&mut self, source: Source, root: &'a Value, path: JsonPath, at: At<'a>) {
        if self.want != Want::Segments {
            return;
        }
        let mut stack = vec![(root, path)];
        while let Some((v, p)) = stack.pop() {
            match v {
                Value::String(s) => self.push(source, p, s, at),
                Value::Array(a) => {
                    stack.extend(a.iter().enumerate().rev().map(|(i, x)| (x, p.index(i))))
                }
                Value::Object(m) => stack.extend(m.iter().rev().map(|(k, x)| (x, p.key(k)))),
                _ => {}
            }
        }
    }

    fn tool_name_of(&self, call_id: Option<&str>) -> Option<&'a str> {
        call_id.and_then(|id| self.names.get(id).copied())
    }

    /// Remember a call's tool name by its id, for the results that follow.
    fn remember(&mut self, id: Option<&'a str>, name: Option<&'a str>) {
        if let (Some(id), Some(name)) = (id, name) {
            self.names.insert(id, name);
        }
    }

    /// Record a tool call.
    fn call(
        &mut self,
        id: Option<&'a str>,
        name: Option<&'a str>,
        arguments: ToolArgs<'a>,
        path: JsonPath,
        message: Option<usize>,
    ) {
        let index = self.call_count.saturating_sub(self.call_base);
        self.call_count = self.call_count.saturating_add(1);
        if self.want == Want::Calls {
            let name = name.unwrap_or("");
            self.calls.push(ToolCall {
                choice: self.choice,
                message,
                index,
                id,
                name,
                arguments,
                path,
            });
        }
    }

    /// An OpenAI call object `{name, <args_key>: string}` (Chat `function` / `custom`, Responses
    /// `function_call` / `custom_tool_call` items): a segment and a tool call.
    fn openai_call(
        &mut self,
        o: &'a Obj,
        path: &JsonPath,
        args_key: &str,
        id: Option<&'a str>,
        message: Option<usize>,
    ) {
        let name = self.field_str(o, "name", path);
        self.remember(id, name);
        let Some(args) = self.field_str(o, args_key, path) else {
            return;
        };
        let args_path = path.key(args_key);
        self.push(
            Source::ToolCall,
            args_path.clone(),
            args,
            At {
                message,
                tool_name: name,
            },
        );
        self.call(id, name, ToolArgs::Text(args), args_path, message);
    }

    /// OpenAI content parts (Chat and Responses share one walker: the part types do not clash).
    fn openai_parts(&mut self, parts: &'a [Value], path: &JsonPath, source: Source, at: At<'a>) {
        for (k, part) in parts.iter().enumerate() {
            self.openai_part(part, &path.index(k), source, at);
        }
    }

    fn openai_part(&mut self, part: &'a Value, path: &JsonPath, source: Source, at: At<'a>) {
        let Some(o) = self.object(part, path) else {
            return;
        };
        match self.field_str(o, "type", path) {
            Some("text" | "input_text" | "output_text" | "summary_text" | "reasoning_text") => {
                self.text(source, o, "text", path, at)
            }
            Some("refusal") => self.text(Source::Assistant, o, "refusal", path, at),
            // image_url, input_audio, file, input_image, input_file, and types to come.
            _ => self.loose_text(source, o, "text", path, at),
        }
    }

    /// A string-or-parts field of OpenAI content parts.
    fn openai_content(
        &mut self,
        o: &'a Obj,
        key: &str,
        parent: &JsonPath,
        source: Source,
        at: At<'a>,
    ) {
        match self.content(o, key, parent) {
            Content::Text(s) => self.push(source, parent.key(key), s, at),
            Content::Parts(parts) => self.openai_parts(parts, &parent.key(key), source, at),
            Content::Absent => {}
        }
    }

    /// A string-or-blocks field of Anthropic content blocks.
    fn anthropic_content(
        &mut self,
        o: &'a Obj,
        key: &str,
        parent: &JsonPath,
        source: Source,
        at: At<'a>,
        depth: usize,
    ) {
        match self.content(o, key, parent) {
            Content::Text(s) => self.push(source, parent.key(key), s, at),
            Content::Parts(blocks) => {
                self.anthropic_blocks(blocks, &parent.key(key), source, at, depth)
            }
            Content::Absent => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dispatch.

fn walk_request<'a>(w: &mut Walk<'a>, shape: ApiShape, json: &'a Value) {
    let Some(o) = json.as_object() else {
        return;
    };
    match shape {
        ApiShape::OpenAiChat => w.chat_request(o),
        ApiShape::OpenAiResponses => w.responses_request(o),
        ApiShape::AnthropicMessages => w.anthropic_request(o),
    }
}

fn walk_response<'a>(w: &mut Walk<'a>, shape: ApiShape, json: &'a Value) {
    let Some(o) = json.as_object() else {
        return;
    };
    match shape {
        ApiShape::OpenAiChat => w.chat_response(o),
        ApiShape::OpenAiResponses => w.responses_response(o),
        ApiShape::AnthropicMessages => w.anthropic_response(o),
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAI Chat Completions.

impl<'a> Walk<'a> {
    fn chat_request(&mut self, o: &'a Obj) {
        let root = JsonPath::root();
        let messages_path = root.key("messages");
        for (i, m) in self.field_arr(o, "messages", &root).iter().enumerate() {
            self.chat_message(m, &messages_path.index(i), Some(i), Source::User);
        }
        // Predicted output: client-supplied text sent along with the prompt.
        if let Some(p) = self.field_obj(o, "prediction", &root) {
            self.openai_content(
                p,
                "content",
                &root.key("prediction"),
                Source::User,
                At::default(),
            );
        }
    }

    fn chat_response(&mut self, o: &'a Obj) {
        let root = JsonPath::root();
        let choices_path = root.key("choices");
        for (i, c) in self.field_arr(o, "choices", &root).iter().enumerate() {
            let path = choices_path.index(i);
            let Some(c) = self.object(c, &path) else {
                continue;
            };
            self.choice = Some(i);
            match c.get("message") {
                None | Some(Value::Null) => {}
                Some(m) => self.chat_message(m, &path.key("message"), None, Source::Assistant),
            }
        }
        self.choice = None;
    }

    /// One Chat message: the request history and a response's `choices[i].message` alike.
    /// `default` is the source of content whose role is missing or unknown.
    fn chat_message(
        &mut self,
        m: &'a Value,
        path: &JsonPath,
        message: Option<usize>,
        default: Source,
    ) {
        let Some(m) = self.object(m, path) else {
            return;
        };
        self.call_base = self.call_count;
        let name = self.field_str(m, "name", path);
        let source = match self.field_str(m, "role", path) {
            Some("system") => Source::System,
            Some("developer") => Source::Developer,
            Some("user") => Source::User,
            Some("assistant") => Source::Assistant,
            Some("tool" | "function") => Source::ToolResult,
            _ => default,
        };
        let tool_name = match source {
            Source::ToolResult => match name {
                Some(n) => Some(n),
                None => {
                    let id = self.field_str(m, "tool_call_id", path);
                    self.tool_name_of(id)
                }
            },
            _ => None,
        };
        let at = At {
            message,
            tool_name: None,
        };
        self.openai_content(m, "content", path, source, At { message, tool_name });
        self.text(Source::Assistant, m, "refusal", path, at);
        self.text(Source::Reasoning, m, "reasoning_content", path, at);

        let calls_path = path.key("tool_calls");
        for (j, call) in self.field_arr(m, "tool_calls", path).iter().enumerate() {
            let call_path = calls_path.index(j);
            let Some(call) = self.object(call, &call_path) else {
                continue;
            };
            let id = self.field_str(call, "id", &call_path);
            if let Some(f) = self.field_obj(call, "function", &call_path) {
                self.openai_call(f, &call_path.key("function"), "arguments", id, message);
            } else if let Some(c) = self.field_obj(call, "custom", &call_path) {
                self.openai_call(c, &call_path.key("custom"), "input", id, message);
            }
        }
        if let Some(f) = self.field_obj(m, "function_call", path) {
            self.openai_call(f, &path.key("function_call"), "arguments", None, message);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAI Responses.

impl<'a> Walk<'a> {
    fn responses_request(&mut self, o: &'a Obj) {
        let root = JsonPath::root();
        self.text(Source::System, o, "instructions", &root, At::default());
        match self.content(o, "input", &root) {
            Content::Text(s) => self.push(Source::User, root.key("input"), s, At::default()),
            Content::Parts(items) => self.responses_items(items, &root.key("input")),
            Content::Absent => {}
        }
        // Reusable prompt: its variables are substituted into the prompt server-side.
        if let Some(prompt) = self.field_obj(o, "prompt", &root) {
            let prompt_path = root.key("prompt");
            if let Some(vars) = self.field_obj(prompt, "variables", &prompt_path) {
                let vars_path = prompt_path.key("variables");
                for (name, v) in vars {
                    let path = vars_path.key(name);
                    match v {
                        Value::String(s) => self.push(Source::User, path, s, At::default()),
                        other => self.openai_part(other, &path, Source::User, At::default()),
                    }
                }
            }
        }
    }

    fn responses_response(&mut self, o: &'a Obj) {
        let root = JsonPath::root();
        let items = self.field_arr(o, "output", &root);
        self.responses_items(items, &root.key("output"));
        // Convenience field some SDKs and gateways add.
        self.text(Source::Assistant, o, "output_text", &root, At::default());
    }

    fn responses_items(&mut self, items: &'a [Value], path: &JsonPath) {
        for (i, item) in items.iter().enumerate() {
            self.responses_item(item, &path.index(i), i);
        }
    }

    /// One input item (request) or output item (response): they share their types.
    fn responses_item(&mut self, item: &'a Value, path: &JsonPath, i: usize) {
        let Some(o) = self.object(item, path) else {
            return;
        };
        let at = At {
            message: Some(i),
            tool_name: None,
        };
        let call_id = |w: &mut Self| match w.field_str(o, "call_id", path) {
            Some(id) => Some(id),
            None => w.field_str(o, "id", path),
        };
        match self.field_str(o, "type", path) {
            None | Some("message") => {
                let source = match self.field_str(o, "role", path) {
                    Some("system") => Source::System,
                    Some("developer") => Source::Developer,
                    Some("assistant") => Source::Assistant,
                    _ => Source::User,
                };
                self.openai_content(o, "content", path, source, at);
            }
            Some("function_call") => {
                let id = call_id(self);
                self.openai_call(o, path, "arguments", id, Some(i));
            }
            Some("custom_tool_call") => {
                let id = call_id(self);
                self.openai_call(o, path, "input", id, Some(i));
            }
            Some("function_call_output" | "custom_tool_call_output") => {
                let id = self.field_str(o, "call_id", path);
                let at = At {
                    tool_name: self.tool_name_of(id),
                    ..at
                };
                self.openai_content(o, "output", path, Source::ToolResult, at);
            }
            Some("reasoning") => {
                for key in ["summary", "content"] {
                    let parts = self.field_arr(o, key, path);
                    self.openai_parts(parts, &path.key(key), Source::Reasoning, at);
                }
            }
            // Tool calls run by the provider: their text is scanned, they are not client calls.
            Some("mcp_call") => {
                let at = At {
                    tool_name: o.get("name").and_then(Value::as_str),
                    ..at
                };
                self.loose_text(Source::ToolCall, o, "arguments", path, at);
                self.loose_text(Source::ToolResult, o, "output", path, at);
            }
            Some("mcp_approval_request") => {
                let at = At {
                    tool_name: o.get("name").and_then(Value::as_str),
                    ..at
                };
                self.loose_text(Source::ToolCall, o, "arguments", path, at);
            }
            Some("code_interpreter_call") => {
                self.loose_text(Source::ToolCall, o, "code", path, at);
                if let Some(Value::Array(outputs)) = o.get("outputs") {
                    let outputs_path = path.key("outputs");
                    for (k, out) in outputs.iter().enumerate() {
                        if let Value::Object(out) = out {
                            self.loose_text(
                                Source::ToolResult,
                                out,
                                "logs",
                                &outputs_path.index(k),
                                at,
                            );
                        }
                    }
                }
            }
            Some("file_search_call") => {
                if let Some(Value::Array(results)) = o.get("results") {
                    let results_path = path.key("results");
                    for (k, r) in results.iter().enumerate() {
                        if let Value::Object(r) = r {
                            self.loose_text(
                                Source::Document,
                                r,
                                "text",
                                &results_path.index(k),
                                at,
                            );
                        }
                    }
                }
            }
            Some("local_shell_call_output") => {
                self.loose_text(Source::ToolResult, o, "output", path, at)
            }
            // item_reference, web_search_call, computer_call(_output), image_generation_call, ...
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Anthropic Messages.

impl<'a> Walk<'a> {
    fn anthropic_request(&mut self, o: &'a Obj) {
        let root = JsonPath::root();
        self.anthropic_content(o, "system", &root, Source::System, At::default(), 0);
        let messages_path = root.key("messages");
        for (i, m) in self.field_arr(o, "messages", &root).iter().enumerate() {
            let path = messages_path.index(i);
            let Some(m) = self.object(m, &path) else {
                continue;
            };
            self.call_base = self.call_count;
            let source = match self.field_str(m, "role", &path) {
                Some("assistant") => Source::Assistant,
                _ => Source::User,
            };
            let at = At {
                message: Some(i),
                tool_name: None,
            };
            self.anthropic_content(m, "content", &path, source, at, 0);
        }
    }

    fn anthropic_response(&mut self, o: &'a Obj) {
        self.anthropic_content(
            o,
            "content",
            &JsonPath::root(),
            Source::Assistant,
            At::default(),
            0,
        );
    }

    fn anthropic_blocks(
        &mut self,
        blocks: &'a [Value],
        path: &JsonPath,
        source: Source,
        at: At<'a>,
        depth: usize,
    ) {
        if depth > MAX_BLOCK_DEPTH {
            if let Some(first) = blocks.first() {
                let what = format!("blocks nested at most {MAX_BLOCK_DEPTH} deep");
                self.fail(&path.index(0), first, &what);
            }
            return;
        }
        for (k, block) in blocks.iter().enumerate() {
            self.anthropic_block(block, &path.index(k), source, at, depth);
        }
    }

    /// One content block; `source` is what plain text blocks count as here (the role, or
    /// `ToolResult` / `Document` inside those blocks).
    fn anthropic_block(
        &mut self,
        block: &'a Value,
        path: &JsonPath,
        source: Source,
        at: At<'a>,
        depth: usize,
    ) {
        let Some(o) = self.object(block, path) else {
            return;
        };
        let inner = depth.saturating_add(1);
        match self.field_str(o, "type", path) {
            Some("text") => {
                self.text(source, o, "text", path, at);
                self.anthropic_citations(o, path, at);
            }
            Some("thinking") => self.text(Source::Reasoning, o, "thinking", path, at),
            Some(kind @ ("tool_use" | "server_tool_use" | "mcp_tool_use")) => {
                let name = self.field_str(o, "name", path);
                let id = self.field_str(o, "id", path);
                let input_path = path.key("input");
                let input = o.get("input").unwrap_or(&Value::Null);
                self.remember(id, name);
                self.string_leaves(
                    Source::ToolCall,
                    input,
                    input_path.clone(),
                    At {
                        tool_name: name,
                        ..at
                    },
                );
                // Server and MCP tool uses run at the provider; only `tool_use` is the client's.
                if kind == "tool_use" {
                    self.call(id, name, ToolArgs::Json(input), input_path, at.message);
                }
            }
            Some("tool_result" | "mcp_tool_result") => {
                let id = self.field_str(o, "tool_use_id", path);
                let at = At {
                    tool_name: self.tool_name_of(id),
                    ..at
                };
                self.anthropic_content(o, "content", path, Source::ToolResult, at, inner);
            }
            Some("document") => {
                self.loose_text(Source::Document, o, "title", path, at);
                self.loose_text(Source::Document, o, "context", path, at);
                if let Some(src) = self.field_obj(o, "source", path) {
                    let src_path = path.key("source");
                    match self.field_str(src, "type", &src_path) {
                        Some("text") => self.text(Source::Document, src, "data", &src_path, at),
                        Some("content") => self.anthropic_content(
                            src,
                            "content",
                            &src_path,
                            Source::Document,
                            at,
                            inner,
                        ),
                        // base64 / url / file: binary or remote, nothing to scan here.
                        _ => {}
                    }
                }
            }
            Some("search_result") => {
                self.loose_text(Source::Document, o, "title", path, at);
                self.anthropic_content(o, "content", path, Source::Document, at, inner);
            }
            Some("web_search_tool_result") => {
                if let Some(Value::Array(results)) = o.get("content") {
                    let results_path = path.key("content");
                    for (k, r) in results.iter().enumerate() {
                        if let Value::Object(r) = r {
                            self.loose_text(
                                Source::Document,
                                r,
                                "title",
                                &results_path.index(k),
                                at,
                            );
                        }
                    }
                }
            }
            Some("image" | "redacted_thinking") => {}
            _ => self.loose_text(source, o, "text", path, at),
        }
    }

    /// Quoted document text in a text block's citations.
    fn anthropic_citations(&mut self, o: &'a Obj, path: &JsonPath, at: At<'a>) {
        if let Some(Value::Array(citations)) = o.get("citations") {
            let citations_path = path.key("citations");
            for (k, c) in citations.iter().enumerate() {
                if let Value::Object(c) = c {
                    self.loose_text(
                        Source::Document,
                        c,
                        "cited_text",
                        &citations_path.index(k),
                        at,
                    );
                }
            }
        }
    }
}

/// The value at `path`, mutable.
fn value_at_mut<'a>(root: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let mut cur = root;
    for s in path {
        cur = match s {
            Step::Key(k) => cur.get_mut(k.as_str())?,
            Step::Index(i) => cur.get_mut(*i)?,
        };
    }
    Some(cur)
}
