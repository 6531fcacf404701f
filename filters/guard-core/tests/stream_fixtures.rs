//! Fixture streams of the three APIs, decoded and rewritten under every chunking plan (whole,
//! every single split offset, one byte at a time, N equal chunks, pseudo-random cuts) and every
//! line-ending variant (LF, CRLF, CR, with BOM and keep-alive comments).

// Test helpers outside `#[test]` functions may panic too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use guard_core::api::ApiShape;
use guard_core::body::Usage;
use guard_core::holdback::{HoldBack, StreamRewriter, StreamScanner};
use guard_core::sse::{SseEvent, SseParser};
use guard_core::stream::{
    is_usage_only_chunk, Assembled, AssembledChoice, AssembledToolCall, ChannelKey, Delta,
    StreamAssembler, StreamDecoder,
};
use guard_core::ErrorKind;
use serde_json::Value;

const SECRET: &str = "SECRET42";
const REDACTED: &str = "[REDACTED]";

fn load(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/sse/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------- expectations

struct Case {
    file: &'static str,
    shape: ApiShape,
    want: Assembled,
    /// Number of `choices: []` usage chunks.
    usage_chunks: usize,
}

fn tool(index: usize, id: &str, name: &str, args: &str) -> AssembledToolCall {
    AssembledToolCall {
        index,
        id: Some(id.into()),
        name: Some(name.into()),
        arguments: args.into(),
    }
}

fn choice(
    content: &str,
    reasoning: &str,
    refusal: &str,
    tools: Vec<AssembledToolCall>,
    finish: Option<&str>,
) -> AssembledChoice {
    AssembledChoice {
        content: content.into(),
        reasoning: reasoning.into(),
        refusal: refusal.into(),
        tool_calls: tools,
        finish_reason: finish.map(str::to_string),
    }
}

fn with_reasoning(mut a: Assembled, n: u64) -> Assembled {
    if let Some(u) = a.usage.as_mut() {
        u.reasoning_tokens = n;
    }
    a
}

fn assembled(
    model: &str,
    choices: Vec<AssembledChoice>,
    usage: Option<(u64, u64)>,
    done: bool,
    error: Option<&str>,
) -> Assembled {
    Assembled {
        model: Some(model.into()),
        choices,
        usage: usage.map(|(i, o)| Usage {
            input_tokens: i,
            output_tokens: o,
            reasoning_tokens: 0,
        }),
        done,
        error: error.map(str::to_string),
    }
}

const SECRET_TEXT: &str =
    "The code is SECRET42, again: SECRET42 and SECRET42. Not SECRET43, but SECRET42SECRET42 end S";
const SECRET_ARGS: &str = r#"{"pin": "SECRET42", "n": 1}"#;
const SECRET_THOUGHT: &str = "Recall SECRET42 from memory.";

fn cases() -> Vec<Case> {
    use ApiShape::*;
    vec![
        Case {
            file: "openai_chat_text.sse",
            shape: OpenAiChat,
            want: assembled(
                "gpt-4o-2024-08-06",
                vec![choice(
                    "Hello! How can I help you today? Grüße 👋\n\n- \"quoted\" \\ backslash",
                    "",
                    "",
                    vec![],
                    Some("stop"),
                )],
                Some((19, 10)),
                true,
                None,
            ),
            usage_chunks: 1,
        },
        Case {
            file: "openai_chat_tools.sse",
            shape: OpenAiChat,
            want: assembled(
                "gpt-4o-mini-2024-07-18",
                vec![choice(
                    "",
                    "",
                    "",
                    vec![
                        tool(0, "call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather", r#"{"location": "Paris, France"}"#),
                        tool(1, "call_ABRKtH7FyT0BhzVDnU3Qx8Jd", "get_time", r#"{"timezone": "Europe/Paris"}"#),
                    ],
                    Some("tool_calls"),
                )],
                Some((81, 46)),
                true,
                None,
            ),
            usage_chunks: 1,
        },
        Case {
            file: "openai_chat_n2.sse",
            shape: OpenAiChat,
            want: assembled(
                "gpt-4o-2024-08-06",
                vec![
                    choice("Roses are red.", "", "", vec![], Some("length")),
                    choice("Violets are blue.", "", "", vec![], Some("stop")),
                ],
                Some((12, 9)),
                true,
                None,
            ),
            usage_chunks: 1,
        },
        Case {
            file: "openai_chat_reasoning.sse",
            shape: OpenAiChat,
            // The usage reports 40 reasoning tokens (`completion_tokens_details`).
            want: with_reasoning(
                assembled(
                    "deepseek-reasoner",
                    vec![choice("2 + 2 = 4.", "Okay, the user asks 2+2. That is 4.", "", vec![], Some("stop"))],
                    Some((14, 52)),
                    true,
                    None,
                ),
                40,
            ),
            usage_chunks: 0,
        },
        Case {
            file: "openai_chat_refusal.sse",
            shape: OpenAiChat,
            want: assembled(
                "gpt-4o-2024-08-06",
                vec![choice("", "", "I'm sorry, I cannot help with that.", vec![], Some("stop"))],
                None,
                true,
                None,
            ),
            usage_chunks: 0,
        },
        Case {
            file: "openai_chat_error.sse",
            shape: OpenAiChat,
            want: assembled(
                "gpt-4o-2024-08-06",
                vec![choice("Partial", "", "", vec![], None)],
                None,
                false,
                Some("The server had an error while processing your request. Sorry about that!"),
            ),
            usage_chunks: 0,
        },
        Case {
            file: "openai_chat_secret.sse",
            shape: OpenAiChat,
            want: assembled(
                "gpt-4o-2024-08-06",
                vec![choice(SECRET_TEXT, "", "", vec![tool(0, "call_pin0001", "unlock", SECRET_ARGS)], Some("tool_calls"))],
                Some((30, 40)),
                true,
                None,
            ),
            usage_chunks: 1,
        },
        Case {
            file: "anthropic_text.sse",
            shape: AnthropicMessages,
            want: assembled(
                "claude-sonnet-4-5-20250929",
                vec![choice("Hello! I'm Claude. Grüße 🌍\n\n\"Quoted\" \\ text.", "", "", vec![], Some("end_turn"))],
                Some((25, 15)),
                true,
                None,
            ),
            usage_chunks: 0,
        },
        Case {
            file: "anthropic_tools_thinking.sse",
            shape: AnthropicMessages,
            want: assembled(
                "claude-sonnet-4-5-20250929",
                vec![choice(
                    "Let me check the weather.",
                    "The user wants the weather in Paris. I should call get_weather.",
                    "",
                    vec![tool(
                        2,
                        "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                        "get_weather",
                        r#"{"location": "Paris, France", "unit": "celsius"}"#,
                    )],
                    Some("tool_use"),
                )],
                Some((472, 89)),
                true,
                None,
            ),
            usage_chunks: 0,
        },
        Case {
            file: "anthropic_error.sse",
            shape: AnthropicMessages,
            want: assembled(
                "claude-sonnet-4-5-20250929",
                vec![choice("Partial answer", "", "", vec![], None)],
                Some((25, 1)),
                false,
                Some("Overloaded"),
            ),
            usage_chunks: 0,
        },
        Case {
            file: "anthropic_secret.sse",
            shape: AnthropicMessages,
            want: assembled(
                "claude-sonnet-4-5-20250929",
                vec![choice(
                    SECRET_TEXT,
                    SECRET_THOUGHT,
                    "",
                    vec![tool(2, "toolu_01S3cr3t", "unlock", SECRET_ARGS)],
                    Some("tool_use"),
                )],
                Some((25, 64)),
                true,
                None,
            ),
            usage_chunks: 0,
        },
        Case {
            file: "responses_text.sse",
            shape: OpenAiResponses,
            want: assembled(
                "gpt-4.1-2025-04-14",
                vec![choice("Hi there! Grüße 🌍 \"quoted\" \\ done.", "", "", vec![], Some("completed"))],
                Some((37, 11)),
                true,
                None,
            ),
            usage_chunks: 0,
        },
        Case {
            file: "responses_tools.sse",
            shape: OpenAiResponses,
            want: assembled(
                "o4-mini-2025-04-16",
                vec![choice(
                    "Let me check.",
                    "**Checking weather**\n\nThe user asks about Paris.**Calling tool**\n\nUse get_weather.",
                    "",
                    vec![tool(2, "call_Xa1b2C3d4E5f6G7h", "get_weather", r#"{"location":"Paris, France"}"#)],
                    Some("completed"),
                )],
                Some((120, 64)),
                true,
                None,
            ),
            usage_chunks: 0,
        },
        Case {
            file: "responses_refusal.sse",
            shape: OpenAiResponses,
            want: assembled(
                "gpt-4.1-2025-04-14",
                vec![choice("", "", "I can't help with that.", vec![], Some("max_output_tokens"))],
                Some((20, 7)),
                true,
                None,
            ),
            usage_chunks: 0,
        },
        Case {
            file: "responses_secret.sse",
            shape: OpenAiResponses,
            want: assembled(
                "gpt-4.1-2025-04-14",
                vec![choice(
                    SECRET_TEXT,
                    SECRET_THOUGHT,
                    "",
                    vec![tool(2, "call_s3cr3t", "unlock", SECRET_ARGS)],
                    Some("completed"),
                )],
                Some((50, 60)),
                true,
                None,
            ),
            usage_chunks: 0,
        },
    ]
}

// ---------------------------------------------------------------- chunking and variants

/// Cuts further apart than this are in different events of the fixtures, so one run can test
/// several independent split points.
const STRIDE_MIN: usize = 1024;

/// Chunking plans as lists of cut offsets. With `every_offset`, every offset `1..len` is a cut
/// in some plan: plan `s` cuts at `s, s + stride, s + 2 * stride, ...` (a single cut when the
/// input is shorter than the stride), plus the one-byte-at-a-time plan.
fn plans(len: usize, every_offset: bool) -> Vec<Vec<usize>> {
    let mut plans = vec![vec![]];
    if every_offset {
        let stride = STRIDE_MIN.max(len / 8).min(len.max(1));
        plans.extend(
            (1..=stride)
                .map(|s| (s..len).step_by(stride).collect::<Vec<_>>())
                .filter(|c| !c.is_empty()),
        );
        plans.push((1..len).collect());
    }
    for n in [2usize, 3, 4, 7, 16, 64] {
        let step = len.div_ceil(n).max(1);
        plans.push((1..n).map(|k| k * step).filter(|&c| c < len).collect());
    }
    // Pseudo-random cuts (fixed seed).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..8 {
        let mut cuts = Vec::new();
        let mut at = 0usize;
        loop {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            at += 1 + (x % 97) as usize;
            if at >= len {
                break;
            }
            cuts.push(at);
        }
        plans.push(cuts);
    }
    plans
}

fn chunks<'a>(input: &'a [u8], cuts: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut prev = 0;
    cuts.iter()
        .copied()
        .chain(std::iter::once(input.len()))
        .map(move |c| {
            let s = &input[prev..c];
            prev = c;
            s
        })
}

/// Line-ending variants of a fixture (the JSON payloads have no raw line breaks).
fn variants(input: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let replace = |with: &[u8]| -> Vec<u8> {
        let mut out = Vec::new();
        for &b in input {
            if b == b'\n' {
                out.extend_from_slice(with);
            } else {
                out.push(b);
            }
        }
        out
    };
    let mut commented = b"\xEF\xBB\xBF: hello\n\n".to_vec();
    for block in std::str::from_utf8(input)
        .unwrap()
        .split("\n\n")
        .filter(|b| !b.is_empty())
    {
        commented.extend_from_slice(b": keep-alive\n");
        commented.extend_from_slice(block.as_bytes());
        commented.extend_from_slice(b"\nretry: 1000\n\n");
    }
    vec![
        ("lf", input.to_vec()),
        ("crlf", replace(b"\r\n")),
        ("cr", replace(b"\r")),
        ("bom+comments", commented),
    ]
}

fn parse_events(input: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
    let mut p = SseParser::new(1 << 20);
    let mut events = Vec::new();
    for c in chunks(input, cuts) {
        p.push(c, &mut |e| events.push(e)).unwrap();
    }
    p.finish(&mut |e| events.push(e)).unwrap();
    // Fixtures end with a complete event; only the LF of a CRLF split after it may remain.
    assert!(matches!(p.take_pending_raw().as_slice(), b"" | b"\n"));
    events
}

fn decode(shape: ApiShape, events: &[SseEvent]) -> Vec<Delta> {
    let mut d = StreamDecoder::new(shape);
    let mut out = Vec::new();
    for e in events {
        d.decode(e, &mut out).unwrap();
    }
    out
}

fn assemble(deltas: &[Delta]) -> Assembled {
    let mut a = StreamAssembler::new(1 << 20);
    for d in deltas {
        a.apply(d).unwrap();
    }
    a.into_result()
}

fn assemble_bytes(shape: ApiShape, bytes: &[u8]) -> Assembled {
    assemble(&decode(shape, &parse_events(bytes, &[])))
}

// ---------------------------------------------------------------- decoding

#[test]
fn decode_fixtures_under_every_chunking() {
    for case in cases() {
        let input = load(case.file);
        let whole_deltas = decode(case.shape, &parse_events(&input, &[]));
        assert_eq!(assemble(&whole_deltas), case.want, "{}", case.file);
        for (variant, bytes) in variants(&input) {
            for cuts in plans(bytes.len(), variant == "lf" || variant == "crlf") {
                let deltas = decode(case.shape, &parse_events(&bytes, &cuts));
                assert_eq!(
                    deltas, whole_deltas,
                    "{} {variant} cuts {cuts:?}",
                    case.file
                );
            }
        }
    }
}

#[test]
fn usage_only_chunks() {
    for case in cases() {
        let events = parse_events(&load(case.file), &[]);
        let n = events
            .iter()
            .filter(|e| is_usage_only_chunk(case.shape, e))
            .count();
        assert_eq!(n, case.usage_chunks, "{}", case.file);
    }
}

#[test]
fn channel_ends_precede_done() {
    // Every channel that got text is ended (or the stream is done / failed) by the end.
    for case in cases() {
        let deltas = decode(case.shape, &parse_events(&load(case.file), &[]));
        let mut open: Vec<ChannelKey> = Vec::new();
        for d in &deltas {
            match d {
                Delta::Text { key, .. } if !open.contains(key) => open.push(*key),
                Delta::ChannelEnd { key } => open.retain(|k| k != key),
                _ => {}
            }
        }
        let terminal = deltas
            .iter()
            .any(|d| matches!(d, Delta::Done | Delta::Error { .. }));
        assert!(open.is_empty() || terminal, "{} open {open:?}", case.file);
    }
}

// ---------------------------------------------------------------- scanners

/// Releases everything unchanged.
struct Pass;
impl StreamScanner for Pass {
    fn scan(&mut self, _: ChannelKey, pending: &mut String, _: bool) -> usize {
        pending.len()
    }
}

/// Holds everything until the channel ends.
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

/// Replaces SECRET42, holding back a trailing proper prefix of it.
struct Redact;
impl StreamScanner for Redact {
    fn scan(&mut self, _: ChannelKey, pending: &mut String, end: bool) -> usize {
        if pending.contains(SECRET) {
            *pending = pending.replace(SECRET, REDACTED);
        }
        if end {
            return pending.len();
        }
        let keep = (1..SECRET.len())
            .rev()
            .find(|&n| pending.ends_with(&SECRET[..n]))
            .unwrap_or(0);
        pending.len() - keep
    }
}

fn rewrite(
    shape: ApiShape,
    input: &[u8],
    cuts: &[usize],
    scanners: &mut [&mut dyn StreamScanner],
    max_hold: usize,
) -> guard_core::error::Result<Vec<u8>> {
    let mut rw = StreamRewriter::new(shape, 1 << 20, max_hold);
    let mut out = Vec::new();
    for c in chunks(input, cuts) {
        rw.push(c, scanners, &mut out)?;
    }
    rw.finish(scanners, &mut out)?;
    Ok(out)
}

fn redacted(a: &Assembled) -> Assembled {
    let mut a = a.clone();
    for c in &mut a.choices {
        for s in [&mut c.content, &mut c.reasoning, &mut c.refusal] {
            *s = s.replace(SECRET, REDACTED);
        }
        for t in &mut c.tool_calls {
            t.arguments = t.arguments.replace(SECRET, REDACTED);
        }
    }
    a
}

// ---------------------------------------------------------------- rewriting

#[test]
fn rewrite_identity_is_byte_identical() {
    for case in cases() {
        let input = load(case.file);
        for (variant, bytes) in variants(&input) {
            for cuts in plans(bytes.len(), variant == "lf" || variant == "crlf") {
                let out = rewrite(case.shape, &bytes, &cuts, &mut [&mut Pass], 1 << 16).unwrap();
                assert!(out == bytes, "{} {variant} cuts {cuts:?}", case.file);
            }
            let out = rewrite(case.shape, &bytes, &[], &mut [], 0).unwrap();
            assert!(out == bytes, "{} {variant} no scanners", case.file);
        }
    }
}

/// The `output` texts of the final Responses event, and every `*.done` full text, agree with
/// what the client assembled from the deltas.
fn check_responses_full_texts(out: &[u8], got: &Assembled, ctx: &str) {
    let events = parse_events(out, &[]);
    let choice = &got.choices[0];
    for e in &events {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        match v["type"].as_str().unwrap() {
            "response.output_text.done" => assert_eq!(v["text"], choice.content.as_str(), "{ctx}"),
            "response.function_call_arguments.done" => {
                assert_eq!(
                    v["arguments"],
                    choice.tool_calls[0].arguments.as_str(),
                    "{ctx}"
                )
            }
            "response.completed" => {
                for item in v["response"]["output"].as_array().unwrap() {
                    match item["type"].as_str().unwrap() {
                        "message" => {
                            assert_eq!(item["content"][0]["text"], choice.content.as_str(), "{ctx}")
                        }
                        "function_call" => {
                            assert_eq!(
                                item["arguments"],
                                choice.tool_calls[0].arguments.as_str(),
                                "{ctx}"
                            )
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

#[test]
fn rewrite_redacts_secret_split_anywhere() {
    for case in cases().into_iter().filter(|c| c.file.contains("secret")) {
        let input = load(case.file);
        assert!(
            input.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{}",
            case.file
        );
        let want = redacted(&case.want);
        for (variant, bytes) in variants(&input) {
            for cuts in plans(bytes.len(), variant == "lf" || variant == "cr") {
                let ctx = format!("{} {variant} cuts {cuts:?}", case.file);
                let out = rewrite(case.shape, &bytes, &cuts, &mut [&mut Redact], 64).unwrap();
                assert!(
                    !out.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                    "{ctx}"
                );
                let got = assemble_bytes(case.shape, &out);
                assert_eq!(got, want, "{ctx}");
                if case.shape == ApiShape::OpenAiResponses {
                    check_responses_full_texts(&out, &got, &ctx);
                }
            }
        }
    }
}

#[test]
fn rewrite_with_scanner_pipeline_keeps_other_fixtures_intact() {
    // Redact + HoldAll on fixtures without the secret: same assembled answer.
    for case in cases().into_iter().filter(|c| !c.file.contains("secret")) {
        let input = load(case.file);
        for cuts in plans(input.len(), false) {
            let out = rewrite(
                case.shape,
                &input,
                &cuts,
                &mut [&mut Redact, &mut HoldAll],
                1 << 16,
            )
            .unwrap();
            assert_eq!(
                assemble_bytes(case.shape, &out),
                case.want,
                "{} cuts {cuts:?}",
                case.file
            );
        }
    }
}

/// Number of events with a non-empty text delta.
fn count_text_events(shape: ApiShape, out: &[u8]) -> usize {
    let mut d = StreamDecoder::new(shape);
    let mut n = 0;
    for e in &parse_events(out, &[]) {
        let mut deltas = Vec::new();
        d.decode(e, &mut deltas).unwrap();
        if deltas.iter().any(|d| matches!(d, Delta::Text { .. })) {
            n += 1;
        }
    }
    n
}

#[test]
fn rewrite_hold_all_flushes_at_channel_end() {
    for case in cases() {
        let input = load(case.file);
        for cuts in plans(input.len(), false) {
            let ctx = format!("{} cuts {cuts:?}", case.file);
            let out = rewrite(case.shape, &input, &cuts, &mut [&mut HoldAll], 1 << 16).unwrap();
            let got = assemble_bytes(case.shape, &out);
            assert_eq!(got, case.want, "{ctx}");
            if case.shape == ApiShape::OpenAiResponses {
                check_responses_full_texts(&out, &got, &ctx);
            }
        }
    }
    // Anthropic and Responses drop the delta events that release nothing: one text event per
    // block / part remains. OpenAI chat keeps every chunk, with empty text.
    let shape_cases: Vec<(&str, ApiShape, usize)> = vec![
        ("anthropic_text.sse", ApiShape::AnthropicMessages, 1),
        (
            "anthropic_tools_thinking.sse",
            ApiShape::AnthropicMessages,
            3,
        ),
        ("responses_text.sse", ApiShape::OpenAiResponses, 1),
        ("responses_tools.sse", ApiShape::OpenAiResponses, 4),
    ];
    for (file, shape, want) in shape_cases {
        let out = rewrite(shape, &load(file), &[], &mut [&mut HoldAll], 1 << 16).unwrap();
        assert_eq!(count_text_events(shape, &out), want, "{file}");
    }
    let input = load("openai_chat_text.sse");
    let out = rewrite(
        ApiShape::OpenAiChat,
        &input,
        &[],
        &mut [&mut HoldAll],
        1 << 16,
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    // The 12 content chunks stay (emptied); one synthetic chunk carries the text before the
    // finish_reason chunk.
    assert_eq!(text.matches("\"content\":\"\"").count(), 1 + 12, "{text}");
    let synthetic = text.find("\"content\":\"Hello!").unwrap();
    assert!(synthetic < text.find("\"finish_reason\":\"stop\"").unwrap());
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[test]
fn rewrite_hold_overflow_is_too_large() {
    let input = load("openai_chat_text.sse");
    let content_len =
        "Hello! How can I help you today? Grüße 👋\n\n- \"quoted\" \\ backslash".len();
    let cases = [
        ("limit 0", 0, false),
        ("one under", content_len - 1, false),
        ("exactly fits", content_len, true),
    ];
    for (name, max, ok) in cases {
        for cuts in plans(input.len(), false) {
            let res = rewrite(
                ApiShape::OpenAiChat,
                &input,
                &cuts,
                &mut [&mut HoldAll],
                max,
            );
            match res {
                Ok(_) => assert!(ok, "{name}"),
                Err(e) => {
                    assert!(!ok, "{name}: {e}");
                    assert_eq!(e.kind(), ErrorKind::TooLarge, "{name}");
                }
            }
        }
    }
    // And for Anthropic / Responses.
    for (file, shape) in [
        ("anthropic_text.sse", ApiShape::AnthropicMessages),
        ("responses_text.sse", ApiShape::OpenAiResponses),
    ] {
        let err = rewrite(shape, &load(file), &[], &mut [&mut HoldAll], 4).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge, "{file}");
    }
}

#[test]
fn rewrite_event_too_large() {
    let input = load("openai_chat_text.sse");
    let mut rw = StreamRewriter::new(ApiShape::OpenAiChat, 64, 1 << 16);
    let mut out = Vec::new();
    let err = rw.push(&input, &mut [&mut Pass], &mut out).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
}

#[test]
fn rewrite_unterminated_tail() {
    let cases: Vec<(&str, ApiShape, &str, &str)> = vec![
        (
            "chat, no blank line",
            ApiShape::OpenAiChat,
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a SEC\"}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"RET42 b\"}}]}\n",
            "a [REDACTED] b",
        ),
        (
            "anthropic, no line end",
            ApiShape::AnthropicMessages,
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x SECRET42\"}}",
            "x [REDACTED]",
        ),
    ];
    for (name, shape, input, want) in cases {
        for cuts in plans(input.len(), true) {
            let out = rewrite(shape, input.as_bytes(), &cuts, &mut [&mut Redact], 64).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(!text.contains(SECRET), "{name} {cuts:?}: {text}");
            // Lenient decoding of the output (the tail is terminated when rewritten).
            let mut p = SseParser::new(1 << 20);
            let mut events = Vec::new();
            p.push(text.as_bytes(), &mut |e| events.push(e)).unwrap();
            p.flush_unterminated(&mut |e| events.push(e)).unwrap();
            assert_eq!(
                assemble(&decode(shape, &events)).choices[0].content,
                want,
                "{name} {cuts:?}"
            );
            let same = rewrite(shape, input.as_bytes(), &cuts, &mut [&mut Pass], 64).unwrap();
            assert_eq!(same, input.as_bytes(), "{name} {cuts:?}");
        }
    }
    // A truncated last event that is not JSON passes through after the flush.
    let input =
        b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"held\"}}]}\n\ndata: {\"choi";
    let out = rewrite(ApiShape::OpenAiChat, input, &[], &mut [&mut HoldAll], 64).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with("\n\ndata: {\"choi"), "{text}");
    assert!(text.contains("\"content\":\"held\""), "{text}");
}

#[test]
fn holdback_standalone_secret_split_at_every_offset() {
    let text = SECRET_TEXT;
    let want = text.replace(SECRET, REDACTED);
    let key = ChannelKey::new(0, guard_core::stream::Channel::Content);
    for cuts in plans(text.len(), true) {
        if cuts.iter().any(|&c| !text.is_char_boundary(c)) {
            continue;
        }
        let mut hb = HoldBack::new(SECRET.len() - 1);
        let mut rel = String::new();
        let mut got = String::new();
        for piece in chunks(text.as_bytes(), &cuts) {
            let piece = std::str::from_utf8(piece).unwrap();
            hb.push(key, piece, false, &mut [&mut Redact], &mut rel)
                .unwrap();
            assert!(hb.held(key) < SECRET.len());
            got.push_str(&rel);
        }
        hb.push(key, "", true, &mut [&mut Redact], &mut rel)
            .unwrap();
        got.push_str(&rel);
        assert_eq!(got, want, "cuts {cuts:?}");
    }
}
