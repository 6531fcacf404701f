//! The text-segment view: every piece of text in a body with where it came from (its role or
//! source) and where it sits in the JSON, so scanners can judge it by source and rewriters can
//! replace exactly that string.

use serde::Serialize;
use std::borrow::Cow;
use std::fmt;

/// Who or what produced a piece of text. Scanners weigh text by source: a user prompt, a tool
/// result and a retrieved document are all untrusted, but differently so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// System prompt (OpenAI `system` role, Responses `instructions`, Anthropic `system`).
    System,
    /// OpenAI `developer` role.
    Developer,
    /// End-user text.
    User,
    /// Model text (history in requests, the answer in responses).
    Assistant,
    /// Model reasoning (`reasoning_content`, reasoning summaries, Anthropic `thinking`).
    Reasoning,
    /// Arguments of a tool call made by the model (JSON text or string leaves of it).
    ToolCall,
    /// Output of a tool fed back to the model (OpenAI `tool` role, `function_call_output`,
    /// Anthropic `tool_result`).
    ToolResult,
    /// A retrieved document (Anthropic `document` / `search_result` blocks).
    Document,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::System => "system",
            Source::Developer => "developer",
            Source::User => "user",
            Source::Assistant => "assistant",
            Source::Reasoning => "reasoning",
            Source::ToolCall => "tool_call",
            Source::ToolResult => "tool_result",
            Source::Document => "document",
        }
    }
}

/// One step of a JSON location.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// A location in a JSON document, rendered as a JSON Pointer (RFC 6901) by `Display`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct JsonPath(pub Vec<Step>);

impl JsonPath {
    pub fn root() -> Self {
        JsonPath(Vec::new())
    }
    pub fn key(&self, k: &str) -> Self {
        let mut v = self.0.clone();
        v.push(Step::Key(k.to_string()));
        JsonPath(v)
    }
    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Step::Index(i));
        JsonPath(v)
    }
    /// Resolve against a JSON value.
    pub fn get<'a>(&self, root: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        let mut cur = root;
        for step in &self.0 {
            cur = match step {
                Step::Key(k) => cur.get(k.as_str())?,
                Step::Index(i) => cur.get(*i)?,
            };
        }
        Some(cur)
    }
    /// Resolve mutably against a JSON value.
    pub fn get_mut<'a>(
        &self,
        root: &'a mut serde_json::Value,
    ) -> Option<&'a mut serde_json::Value> {
        let mut cur = root;
        for step in &self.0 {
            cur = match step {
                Step::Key(k) => cur.get_mut(k.as_str())?,
                Step::Index(i) => cur.get_mut(*i)?,
            };
        }
        Some(cur)
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.0 {
            match step {
                Step::Key(k) => write!(f, "/{}", k.replace('~', "~0").replace('/', "~1"))?,
                Step::Index(i) => write!(f, "/{i}")?,
            }
        }
        Ok(())
    }
}

/// A piece of text with its source and location.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment<'a> {
    pub source: Source,
    /// Where the text sits: the JSON string at this path holds exactly `text`.
    pub path: JsonPath,
    pub text: Cow<'a, str>,
    /// Index of the message / input item / content block owner, when there is one.
    pub message: Option<usize>,
    /// Index of the choice (responses with `n > 1`), when there is one.
    pub choice: Option<usize>,
    /// Name of the tool, for tool calls and (where the API says it) tool results.
    pub tool_name: Option<Cow<'a, str>>,
}
