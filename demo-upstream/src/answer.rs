//! The API-neutral request summary and answer model shared by the three API shapes.
//!
//! Each API module turns its request JSON into a [`Prompt`]; [`build`] turns a prompt plus a
//! [`Scenario`] into [`Content`]; the API module renders a [`Reply`] back into its own JSON or
//! SSE shape.
//!
//! Token counts are deterministic: input tokens = whitespace-separated words across all message
//! texts of the request (system/instructions, every message's string content or text parts,
//! tool results; not tool definitions or earlier tool-call arguments); output tokens = words of
//! the answer text, or of the arguments JSON of each tool call, times the number of choices.

use crate::scenario::Scenario;

/// Model named in answers when the request names none.
pub const DEFAULT_MODEL: &str = "demo-model";
/// Tool called when the request declares none.
pub const DEFAULT_TOOL: &str = "get_weather";
/// The `[[pii]]` answer.
pub const PII_TEXT: &str = "Contact Jane at jane.doe@example.com or +1 415 555 0100; card 4111 1111 1111 1111; IBAN DE89 3704 0044 0532 0130 00; SSN 123-45-6789; server 10.1.2.3; key AKIAIOSFODNN7EXAMPLE.";
/// Cities used for the arguments of successive tool calls.
const CITIES: [&str; 8] = [
    "Paris", "Berlin", "Tokyo", "Madrid", "Rome", "Lisbon", "Vienna", "Oslo",
];
const LOREM: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. ";

/// What the upstream needs to know about a request, whatever its API shape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prompt {
    /// The request's `model` (or [`DEFAULT_MODEL`]).
    pub model: String,
    /// `"stream": true`.
    pub stream: bool,
    /// OpenAI chat `stream_options.include_usage: true`.
    pub include_usage: bool,
    /// Number of choices (OpenAI chat `n`; 1 elsewhere).
    pub n: u32,
    /// Name of the first declared tool.
    pub first_tool: Option<String>,
    /// Text of the last user message (string content, or its text parts joined by `\n`).
    pub user_text: String,
    /// When the conversation ends with a tool result: that result's text.
    pub tool_result: Option<String>,
    /// Whitespace-separated words across all message texts.
    pub input_words: u64,
}

/// One tool call of an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    /// Function name.
    pub name: String,
    /// Arguments as a JSON document (text).
    pub arguments: String,
}

/// What one choice of the answer says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// A plain text answer.
    Text(String),
    /// Parallel tool calls.
    ToolCalls(Vec<ToolCall>),
}

impl Content {
    /// Output tokens of one choice.
    pub fn words(&self) -> u64 {
        match self {
            Content::Text(text) => count_words(text),
            Content::ToolCalls(calls) => calls
                .iter()
                .map(|c| count_words(&c.arguments))
                .fold(0u64, u64::saturating_add),
        }
    }
}

/// Token usage of a whole answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input (prompt) tokens.
    pub input: u64,
    /// Output (completion) tokens, over all choices.
    pub output: u64,
}

impl Usage {
    /// `input + output`.
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// Everything a renderer needs.
#[derive(Clone, Debug)]
pub struct Reply {
    /// Request sequence number on this server, used to derive deterministic ids.
    pub seq: u64,
    /// Unix time in seconds.
    pub created: u64,
    /// Echoed model.
    pub model: String,
    /// The content of every choice.
    pub content: Content,
    /// Number of choices.
    pub n: u32,
    /// Token usage.
    pub usage: Usage,
    /// OpenAI chat: send the usage chunk (and `usage: null` on other chunks).
    pub include_usage: bool,
}

impl Reply {
    /// Builds the reply for `prompt` with the given content.
    pub fn new(seq: u64, created: u64, prompt: &Prompt, content: Content) -> Reply {
        let n = prompt.n.max(1);
        let output = content.words().saturating_mul(u64::from(n));
        Reply {
            seq,
            created,
            model: prompt.model.clone(),
            content,
            n,
            usage: Usage {
                input: prompt.input_words,
                output,
            },
            include_usage: prompt.include_usage,
        }
    }
}

/// Whitespace-separated words in `text`.
pub fn count_words(text: &str) -> u64 {
    u64::try_from(text.split_whitespace().count()).unwrap_or(u64::MAX)
}

/// `len` bytes of lorem-ipsum text (ASCII).
pub fn lorem(len: usize) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let missing = len.saturating_sub(out.len());
        out.push_str(LOREM.get(..missing.min(LOREM.len())).unwrap_or(""));
    }
    out
}

/// Builds the content for a non-error scenario. [`Scenario::Status`], [`Scenario::Reset`] and
/// [`Scenario::Hang`] never reach here: the server answers them with an error or a failed
/// connection (treated as echo if they do); [`Scenario::Cut`] is the echo answer, cut.
pub fn build(prompt: &Prompt, scenario: &Scenario) -> Content {
    match scenario {
        Scenario::Echo
        | Scenario::Status(_)
        | Scenario::Reset
        | Scenario::Hang(_)
        | Scenario::Cut(_) => match &prompt.tool_result {
            Some(result) => Content::Text(format!("Tool result: {result}")),
            None => Content::Text(format!("You said: {}", prompt.user_text)),
        },
        Scenario::ToolCalls(n) => {
            let name = prompt
                .first_tool
                .clone()
                .unwrap_or_else(|| DEFAULT_TOOL.to_owned());
            let calls = CITIES
                .iter()
                .cycle()
                .take(*n)
                .map(|city| ToolCall {
                    name: name.clone(),
                    arguments: format!(r#"{{"city":"{city}","unit":"celsius"}}"#),
                })
                .collect();
            Content::ToolCalls(calls)
        }
        Scenario::ToolArgs(args) => Content::ToolCalls(vec![ToolCall {
            name: prompt
                .first_tool
                .clone()
                .unwrap_or_else(|| DEFAULT_TOOL.to_owned()),
            arguments: args.clone(),
        }]),
        Scenario::Json(doc) => Content::Text(doc.clone()),
        Scenario::Text(text) => Content::Text(text.clone()),
        Scenario::Pii => Content::Text(PII_TEXT.to_owned()),
        Scenario::Long(len) => Content::Text(lorem(*len)),
    }
}

/// Splits `text` into deltas of 4 to 8 characters (cycling), on character boundaries.
pub fn split_deltas(text: &str) -> Vec<&str> {
    const SIZES: [usize; 5] = [4, 5, 6, 7, 8];
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut chars = 0usize;
    let mut turn = 0usize;
    for (i, _) in text.char_indices() {
        let want = SIZES.get(turn % SIZES.len()).copied().unwrap_or(4);
        if chars == want {
            out.push(text.get(start..i).unwrap_or(""));
            start = i;
            chars = 0;
            turn = turn.wrapping_add(1);
        }
        chars = chars.saturating_add(1);
    }
    if start < text.len() {
        out.push(text.get(start..).unwrap_or(""));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_rejoin_and_are_small() {
        let cases = [
            "",
            "a",
            "hello world, this is a test",
            "héllo wörld ✓ 日本語テキスト",
        ];
        for text in cases {
            let parts = split_deltas(text);
            assert_eq!(parts.concat(), text);
            for p in &parts {
                let n = p.chars().count();
                assert!((1..=8).contains(&n), "{p:?}");
            }
        }
        assert_eq!(split_deltas("abcdefghijk"), vec!["abcd", "efghi", "jk"]);
    }

    #[test]
    fn lorem_exact_len() {
        for len in [0, 1, 50, 123, 124, 1000] {
            assert_eq!(lorem(len).len(), len);
        }
    }

    #[test]
    fn content_words() {
        assert_eq!(Content::Text("a b  c\n d".into()).words(), 4);
        let prompt = Prompt::default();
        let c = build(&prompt, &Scenario::ToolCalls(2));
        assert_eq!(c.words(), 2);
        let Content::ToolCalls(calls) = c else {
            panic!()
        };
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[1].arguments, r#"{"city":"Berlin","unit":"celsius"}"#);
    }
}
