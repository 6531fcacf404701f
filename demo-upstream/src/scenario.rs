//! Scenario selection: which scripted answer a request gets, or how the upstream fails.
//!
//! Failures (for fallback tests): `[[reset]]` closes the connection before any header,
//! `[[hang]]` / `[[hang:MS]]` answers nothing (for 600 s, or MS ms) and then closes it,
//! `[[cut]]` / `[[cut:N]]` sends the echo answer's headers and its first SSE event (or half of
//! a JSON body, or N bytes), then aborts the connection; `[[status:503]]` is a 5xx answer.
//!
//! A request picks its answer with a directive in the text of its last user message
//! (`[[tool_call]]`, `[[json:{...}]]`, ...) or, taking precedence, with the header
//! `x-demo-scenario` (same names without the brackets, e.g. `tool_calls:2`, `json` together
//! with `x-demo-json`, or a comma-separated list such as `gzip,pii`).
//!
//! Rules for directives in text:
//! - unknown `[[...]]` tokens are ignored (ordinary text may contain brackets);
//! - a known directive with a bad argument (`[[status:abc]]`) is an error (answered with 400);
//! - the first content directive wins; `[[gzip]]` or `[[br]]` (brotli) combines with any of them
//!   (with both, gzip wins);
//! - `[[json:`, `[[text:` and `[[tool_args:` take everything up to the *last* `]]` of the text, so their
//!   payload may itself contain `]]`; scanning stops there. The payload is not validated, so
//!   `[[json:{"broken"]]` produces deliberately invalid JSON output.

/// Most tool calls one answer may carry (`[[tool_calls:N]]`).
pub const MAX_TOOL_CALLS: usize = 16;
/// Largest `[[long:N]]` answer, in bytes.
pub const MAX_LONG_BYTES: usize = 64 << 20;
/// How long `[[hang]]` keeps the request without an answer (then it resets the connection),
/// and the largest `[[hang:MS]]`.
pub const MAX_HANG_MS: u64 = 600_000;

/// The content an answer is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// `You said: <last user message text>`.
    Echo,
    /// That many parallel tool calls to the first declared tool.
    ToolCalls(usize),
    /// One call to the first declared tool with exactly these (unvalidated) JSON arguments.
    ToolArgs(String),
    /// The answer text is exactly this (unvalidated) JSON document.
    Json(String),
    /// An answer full of PII (see [`crate::answer::PII_TEXT`]).
    Pii,
    /// The answer text is exactly this.
    Text(String),
    /// An error response with this HTTP status and a provider-shaped error body.
    Status(u16),
    /// This many bytes of lorem-ipsum text.
    Long(usize),
    /// Fail before the response headers: close the connection at once (the proxy sees a reset).
    Reset,
    /// Fail before the response headers: answer nothing for this many milliseconds, then
    /// close the connection (a proxy's route timeout fires first).
    Hang(u64),
    /// The echo answer, cut after its headers: the body stops after this many bytes (`None`:
    /// after the first SSE event, or half of a JSON body) and the connection is aborted.
    Cut(Option<usize>),
}

/// A parsed scenario plus modifiers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directives {
    /// What the answer contains.
    pub scenario: Scenario,
    /// Compress the response body with gzip (`content-encoding: gzip`).
    pub gzip: bool,
    /// Compress the response body with brotli (`content-encoding: br`) unless `gzip` is set.
    pub brotli: bool,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            scenario: Scenario::Echo,
            gzip: false,
            brotli: false,
        }
    }
}

/// A simple (bracket-delimited, argument-free or numeric) directive.
enum Simple {
    Content(Scenario),
    Gzip,
    Brotli,
}

/// Parses a simple token such as `tool_calls:2`. `Ok(None)` means "not a directive".
fn parse_simple(token: &str) -> Result<Option<Simple>, String> {
    let token = token.trim();
    let (name, arg) = match token.split_once(':') {
        Some((name, arg)) => (name.trim(), Some(arg.trim())),
        None => (token, None),
    };
    let simple = match (name, arg) {
        ("echo", None) => Simple::Content(Scenario::Echo),
        ("pii", None) => Simple::Content(Scenario::Pii),
        ("gzip", None) => Simple::Gzip,
        ("br", None) => Simple::Brotli,
        ("tool_call", None) => Simple::Content(Scenario::ToolCalls(1)),
        ("tool_calls", None) => Simple::Content(Scenario::ToolCalls(2)),
        ("tool_calls", Some(arg)) => {
            let n = arg
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_TOOL_CALLS).contains(n))
                .ok_or_else(|| {
                    format!("directive tool_calls: count {arg:?} is not in 1..={MAX_TOOL_CALLS}")
                })?;
            Simple::Content(Scenario::ToolCalls(n))
        }
        ("status", Some(arg)) => {
            let code = arg
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| format!("directive status: {arg:?} is not an http status"))?;
            Simple::Content(Scenario::Status(code))
        }
        ("reset", None) => Simple::Content(Scenario::Reset),
        ("hang", None) => Simple::Content(Scenario::Hang(MAX_HANG_MS)),
        ("hang", Some(arg)) => {
            let ms = arg
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms <= MAX_HANG_MS)
                .ok_or_else(|| format!("directive hang: {arg:?} is not in 0..={MAX_HANG_MS} ms"))?;
            Simple::Content(Scenario::Hang(ms))
        }
        ("cut", None) => Simple::Content(Scenario::Cut(None)),
        ("cut", Some(arg)) => {
            let n = arg
                .parse::<usize>()
                .map_err(|_| format!("directive cut: {arg:?} is not a byte count"))?;
            Simple::Content(Scenario::Cut(Some(n)))
        }
        ("long", Some(arg)) => {
            let n = arg
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= MAX_LONG_BYTES)
                .ok_or_else(|| {
                    format!("directive long: length {arg:?} is not in 0..={MAX_LONG_BYTES}")
                })?;
            Simple::Content(Scenario::Long(n))
        }
        _ => return Ok(None),
    };
    Ok(Some(simple))
}

/// Builds the scenario of a payload directive from its payload.
type PayloadScenario = fn(String) -> Scenario;

/// Scans message text for directives. Text without directives gives [`Scenario::Echo`].
pub fn from_text(text: &str) -> Result<Directives, String> {
    let mut scenario: Option<Scenario> = None;
    let mut gzip = false;
    let mut brotli = false;
    let mut rest = text;
    while let Some(start) = rest.find("[[") {
        let after = rest.get(start.saturating_add(2)..).unwrap_or("");
        let payload_kind: Option<(usize, PayloadScenario)> = if after.starts_with("json:") {
            Some((5, Scenario::Json))
        } else if after.starts_with("text:") {
            Some((5, Scenario::Text))
        } else if after.starts_with("tool_args:") {
            Some((10, Scenario::ToolArgs))
        } else {
            None
        };
        if let Some((skip, make)) = payload_kind {
            let body = after.get(skip..).unwrap_or("");
            if let Some(end) = body.rfind("]]") {
                let payload = body.get(..end).unwrap_or("").to_owned();
                if scenario.is_none() {
                    scenario = Some(make(payload));
                }
                break;
            }
            // No closing brackets: not a directive.
            rest = after;
            continue;
        }
        let Some(end) = after.find("]]") else { break };
        match parse_simple(after.get(..end).unwrap_or(""))? {
            Some(Simple::Gzip) => gzip = true,
            Some(Simple::Brotli) => brotli = true,
            Some(Simple::Content(s)) => {
                if scenario.is_none() {
                    scenario = Some(s);
                }
            }
            None => {
                // Unknown token: skip only the opening brackets so that a directive nested
                // after stray brackets (`[[a [[pii]]`) is still found.
                rest = after;
                continue;
            }
        }
        rest = after.get(end.saturating_add(2)..).unwrap_or("");
    }
    Ok(Directives {
        scenario: scenario.unwrap_or(Scenario::Echo),
        gzip,
        brotli,
    })
}

/// Parses the `x-demo-scenario` header (`json` takes its document from `x-demo-json`).
pub fn from_header(value: &str, json_header: Option<&str>) -> Result<Directives, String> {
    let value = value.trim();
    if let Some(payload) = value.strip_prefix("json:") {
        return Ok(Directives {
            scenario: Scenario::Json(payload.to_owned()),
            gzip: false,
            brotli: false,
        });
    }
    if let Some(payload) = value.strip_prefix("text:") {
        return Ok(Directives {
            scenario: Scenario::Text(payload.to_owned()),
            gzip: false,
            brotli: false,
        });
    }
    if let Some(payload) = value.strip_prefix("tool_args:") {
        return Ok(Directives {
            scenario: Scenario::ToolArgs(payload.to_owned()),
            gzip: false,
            brotli: false,
        });
    }
    let mut directives = Directives::default();
    let mut content_seen = false;
    for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let simple = if token == "json" {
            let doc = json_header.ok_or_else(|| {
                "header x-demo-scenario: json needs header x-demo-json".to_owned()
            })?;
            Simple::Content(Scenario::Json(doc.to_owned()))
        } else {
            parse_simple(token)?
                .ok_or_else(|| format!("header x-demo-scenario: unknown scenario {token:?}"))?
        };
        match simple {
            Simple::Gzip => directives.gzip = true,
            Simple::Brotli => directives.brotli = true,
            Simple::Content(s) => {
                if !content_seen {
                    directives.scenario = s;
                    content_seen = true;
                }
            }
        }
    }
    Ok(directives)
}

#[cfg(test)]
mod tests {
    use super::*;

    type HeaderCase = (
        &'static str,
        &'static str,
        Option<&'static str>,
        Result<Directives, ()>,
    );

    fn d(scenario: Scenario, gzip: bool) -> Directives {
        Directives {
            scenario,
            gzip,
            brotli: false,
        }
    }

    #[test]
    fn text_directives() {
        let cases: Vec<(&str, &str, Result<Directives, ()>)> = vec![
            ("plain", "hello there", Ok(d(Scenario::Echo, false))),
            (
                "tool call",
                "weather? [[tool_call]]",
                Ok(d(Scenario::ToolCalls(1), false)),
            ),
            (
                "two calls",
                "[[tool_calls:2]] go",
                Ok(d(Scenario::ToolCalls(2), false)),
            ),
            (
                "tool args",
                r#"pay [[tool_args:{"amount":[1]}]]"#,
                Ok(d(Scenario::ToolArgs(r#"{"amount":[1]}"#.into()), false)),
            ),
            ("bad count", "[[tool_calls:0]]", Err(())),
            ("too many", "[[tool_calls:17]]", Err(())),
            ("pii", "x [[pii]] y", Ok(d(Scenario::Pii, false))),
            (
                "status",
                "[[status:429]]",
                Ok(d(Scenario::Status(429), false)),
            ),
            ("bad status", "[[status:42]]", Err(())),
            ("long", "[[long:1000]]", Ok(d(Scenario::Long(1000), false))),
            ("gzip alone", "[[gzip]] hi", Ok(d(Scenario::Echo, true))),
            ("gzip combo", "[[gzip]][[pii]]", Ok(d(Scenario::Pii, true))),
            (
                "brotli",
                "[[br]] hi",
                Ok(Directives {
                    brotli: true,
                    ..d(Scenario::Echo, false)
                }),
            ),
            (
                "json to last brackets",
                r#"[[json:{"a":[[1]]}]]"#,
                Ok(d(Scenario::Json(r#"{"a":[[1]]}"#.into()), false)),
            ),
            (
                "gzip then json",
                r#"[[gzip]] [[json:{"a":1}]]"#,
                Ok(d(Scenario::Json(r#"{"a":1}"#.into()), true)),
            ),
            (
                "text",
                "[[text:héllo ]] world]]",
                Ok(d(Scenario::Text("héllo ]] world".into()), false)),
            ),
            (
                "unknown ignored",
                "[[foo]] [[pii]]",
                Ok(d(Scenario::Pii, false)),
            ),
            ("stray brackets", "[[a [[pii]]", Ok(d(Scenario::Pii, false))),
            ("unclosed", "[[pii", Ok(d(Scenario::Echo, false))),
            ("unclosed json", "[[json:{", Ok(d(Scenario::Echo, false))),
            (
                "first wins",
                "[[pii]] [[tool_call]]",
                Ok(d(Scenario::Pii, false)),
            ),
            ("empty", "", Ok(d(Scenario::Echo, false))),
        ];
        for (name, input, want) in cases {
            let got = from_text(input).map_err(|_| ());
            assert_eq!(got, want, "case {name}");
        }
    }

    #[test]
    fn header_directives() {
        let cases: Vec<HeaderCase> = vec![
            (
                "tool",
                "tool_call",
                None,
                Ok(d(Scenario::ToolCalls(1), false)),
            ),
            (
                "calls",
                "tool_calls:2",
                None,
                Ok(d(Scenario::ToolCalls(2), false)),
            ),
            (
                "json",
                "json",
                Some("{\"a\":1}"),
                Ok(d(Scenario::Json("{\"a\":1}".into()), false)),
            ),
            ("json missing", "json", None, Err(())),
            (
                "json inline",
                "json:[1,2]",
                None,
                Ok(d(Scenario::Json("[1,2]".into()), false)),
            ),
            ("list", "gzip, pii", None, Ok(d(Scenario::Pii, true))),
            (
                "brotli list",
                "br,pii",
                None,
                Ok(Directives {
                    brotli: true,
                    ..d(Scenario::Pii, false)
                }),
            ),
            ("unknown", "nope", None, Err(())),
            ("echo", " echo ", None, Ok(d(Scenario::Echo, false))),
        ];
        for (name, value, json, want) in cases {
            let got = from_header(value, json).map_err(|_| ());
            assert_eq!(got, want, "case {name}");
        }
    }

    #[test]
    fn failure_directives() {
        let cases: Vec<(&str, Result<Scenario, ()>)> = vec![
            ("[[reset]]", Ok(Scenario::Reset)),
            ("[[hang]]", Ok(Scenario::Hang(MAX_HANG_MS))),
            ("[[hang:1500]]", Ok(Scenario::Hang(1500))),
            ("[[hang:600001]]", Err(())),
            ("[[hang:soon]]", Err(())),
            ("[[cut]]", Ok(Scenario::Cut(None))),
            ("[[cut:40]]", Ok(Scenario::Cut(Some(40)))),
            ("[[cut:x]]", Err(())),
        ];
        for (text, want) in cases {
            let got = from_text(text).map(|d| d.scenario).map_err(|_| ());
            assert_eq!(got, want, "{text}");
            let header = text.trim_start_matches("[[").trim_end_matches("]]");
            let got = from_header(header, None)
                .map(|d| d.scenario)
                .map_err(|_| ());
            assert_eq!(got, want, "header {header}");
        }
    }
}
