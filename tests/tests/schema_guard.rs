//! schema-guard through a real Envoy, for the OpenAI chat and Anthropic Messages shapes: valid
//! structured output and tool calls pass byte-identical (streamed or not, both stream modes);
//! invalid structured output, tool calls with bad arguments and calls to undeclared tools are
//! blocked (502 with the JSON pointer, or an error event that ends the stream: `buffer` sends
//! nothing else, `passthrough` sends the answer so far first), dropped (`drop_tool_call`) or
//! flagged; requests failing the route's schema get 400 `schema_violation`, requests declaring
//! a schema that cannot be used 400 `invalid_schema`; dry run, the audit record, Prometheus.
//!
//! The demo upstream's tool calls go to the first declared tool (else `get_weather`) with the
//! fixed arguments `{"city":"Paris","unit":"celsius"}` (a second call: Berlin), so a tool's
//! schema decides whether those arguments are valid.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use e2e::{Env, Resp, Spec};
use guard_core::api::ApiShape;
use serde_json::{json, Value};

const TEMPLATE: &str = include_str!("../configs/schema_guard.yaml");

const SHAPES: [ApiShape; 2] = [ApiShape::OpenAiChat, ApiShape::AnthropicMessages];

/// The demo's tool (the first declared one takes its name).
const TOOL: &str = "get_weather";

fn plugin_config() -> String {
    json!({
        "name": "e2e",
        "route_policies": {
            "drop": "drop", "flag": "flag", "dry": "dry", "pass": "pass", "strict": "strict"
        },
        "policies": {
            "default": {},
            "drop": {"on_failure": {
                "tool_arguments": "drop_tool_call", "undeclared_tool": "drop_tool_call"
            }},
            "flag": {"on_failure": {
                "output": "flag", "tool_arguments": "flag", "undeclared_tool": "flag"
            }},
            "dry": {"dry_run": true},
            "pass": {"stream_mode": "passthrough"},
            "strict": {"request_schema": {
                "type": "object",
                "properties": {
                    "model": {"enum": ["gpt-4o", "claude-sonnet-4-5"]},
                    "max_tokens": {"type": "integer", "maximum": 1000}
                },
                "required": ["model"]
            }}
        }
    })
    .to_string()
}

async fn start() -> anyhow::Result<Env> {
    Env::start(Spec::template(TEMPLATE).var("PLUGIN_CONFIG", &plugin_config())).await
}

fn path(api: ApiShape) -> &'static str {
    match api {
        ApiShape::AnthropicMessages => "/v1/messages",
        _ => "/v1/chat/completions",
    }
}

fn name(api: ApiShape) -> &'static str {
    match api {
        ApiShape::AnthropicMessages => "anthropic",
        _ => "openai",
    }
}

// ---- schemas ------------------------------------------------------------------------------------

/// Valid for the demo's tool arguments.
fn weather_ok() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 1},
            "unit": {"enum": ["celsius", "fahrenheit"]}
        },
        "required": ["city", "unit"],
        "additionalProperties": false
    })
}

/// The demo's `"unit":"celsius"` is not allowed: a violation at `/unit`.
fn weather_kelvin() -> Value {
    json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["kelvin"]}},
        "required": ["city", "unit"]
    })
}

/// Only Paris: the demo's first call passes, its second (Berlin) fails at `/city`.
fn weather_paris_only() -> Value {
    json!({
        "type": "object",
        "properties": {"city": {"enum": ["Paris"]}, "unit": {"type": "string"}},
        "required": ["city", "unit"]
    })
}

/// The structured output of the tests.
fn person() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0}
        },
        "required": ["name", "age"],
        "additionalProperties": false
    })
}

const PERSON_OK: &str = r#"{"name":"Ada","age":36}"#;
/// Fails `person` at `/age` only.
const PERSON_BAD_AGE: &str = r#"{"name":"Ada","age":-3}"#;

// ---- requests -----------------------------------------------------------------------------------

/// What a request declares.
#[derive(Clone, Debug)]
enum Declares {
    Nothing,
    /// A function tool named [`TOOL`] with this argument schema.
    Tool(Value),
    /// [`TOOL`] with this schema, and the request forces it (Anthropic's structured-output
    /// pattern; OpenAI `tool_choice` of type function).
    ForcedTool(Value),
    /// A tool of another name, so the demo's call to [`TOOL`] is undeclared. OpenAI: a custom
    /// (free-form) tool `search`, which the demo does not pick up; Anthropic: no tool at all
    /// (the demo would call any tool Anthropic lets a request declare).
    OtherTool,
    /// Structured output with this schema (OpenAI `response_format`, Anthropic
    /// `output_config.format`).
    Output(Value),
}

/// One request: shape, route prefix (`""` is the default route), declarations, the demo
/// scenario (`x-demo-scenario`), streamed or not.
#[derive(Clone, Debug)]
struct Ask {
    api: ApiShape,
    route: &'static str,
    declares: Declares,
    scenario: String,
    stream: bool,
}

impl Ask {
    fn new(api: ApiShape, declares: Declares, scenario: &str) -> Ask {
        Ask {
            api,
            route: "",
            declares,
            scenario: scenario.to_string(),
            stream: false,
        }
    }
    fn route(mut self, route: &'static str) -> Ask {
        self.route = route;
        self
    }
    fn stream(mut self, stream: bool) -> Ask {
        self.stream = stream;
        self
    }

    fn path(&self) -> String {
        format!("{}{}", self.route, path(self.api))
    }

    fn body(&self) -> Value {
        let mut v = match self.api {
            ApiShape::AnthropicMessages => json!({
                "model": "claude-sonnet-4-5", "max_tokens": 100, "stream": self.stream,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}]
            }),
            _ => json!({
                "model": "gpt-4o", "stream": self.stream,
                "messages": [{"role": "user", "content": "Hello there"}]
            }),
        };
        let o = v.as_object_mut().unwrap();
        let anthropic = self.api == ApiShape::AnthropicMessages;
        let tool = |schema: &Value| {
            if anthropic {
                json!({"name": TOOL, "description": "Weather", "input_schema": schema})
            } else {
                json!({"type": "function", "function": {
                    "name": TOOL, "description": "Weather", "parameters": schema
                }})
            }
        };
        match &self.declares {
            Declares::Nothing => {}
            Declares::Tool(s) => {
                o.insert("tools".into(), json!([tool(s)]));
            }
            Declares::ForcedTool(s) => {
                o.insert("tools".into(), json!([tool(s)]));
                let choice = if anthropic {
                    json!({"type": "tool", "name": TOOL})
                } else {
                    json!({"type": "function", "function": {"name": TOOL}})
                };
                o.insert("tool_choice".into(), choice);
            }
            Declares::OtherTool => {
                if !anthropic {
                    o.insert(
                        "tools".into(),
                        json!([{"type": "custom", "custom": {"name": "search"}}]),
                    );
                }
            }
            Declares::Output(s) => {
                if anthropic {
                    o.insert(
                        "output_config".into(),
                        json!({"format": {"type": "json_schema", "schema": s}}),
                    );
                } else {
                    o.insert(
                        "response_format".into(),
                        json!({"type": "json_schema", "json_schema": {"name": "person", "schema": s}}),
                    );
                }
            }
        }
        v
    }

    fn case(&self) -> String {
        format!(
            "{} route={:?} stream={} declares={:?} scenario={}",
            name(self.api),
            self.route,
            self.stream,
            self.declares,
            self.scenario
        )
    }
}

/// Through Envoy. Streams come in 16-byte chunks 2 ms apart, so that Envoy hands the filter
/// (and a passthrough filter the client) many small pieces.
async fn send(env: &Env, ask: &Ask, rid: &str) -> anyhow::Result<Resp> {
    send_body(env, ask, ask.body(), rid).await
}

async fn send_body(env: &Env, ask: &Ask, body: Value, rid: &str) -> anyhow::Result<Resp> {
    send_plan(env, ask, body, rid, PLANS[0]).await
}

/// How the upstream writes a stream: (label, bytes per chunk with 0 = the whole stream at
/// once, ms between chunks).
type Plan = (&'static str, &'static str, &'static str);
const PLANS: [Plan; 3] = [
    ("16B/2ms", "16", "2"),
    ("7B/1ms", "7", "1"),
    ("whole", "0", "0"),
];

async fn send_plan(
    env: &Env,
    ask: &Ask,
    body: Value,
    rid: &str,
    (_, size, delay): Plan,
) -> anyhow::Result<Resp> {
    let mut req = env
        .client()
        .post(&ask.path(), body.to_string())
        .header("x-request-id", rid)
        .header("x-demo-scenario", &ask.scenario);
    if ask.stream {
        req = req
            .header("x-demo-chunk-size", size)
            .header("x-demo-chunk-delay-ms", delay);
    }
    req.send().await
}

/// The same request straight to the upstream, for the bytes it answers without the filter.
async fn direct(env: &Env, ask: &Ask) -> anyhow::Result<Resp> {
    e2e::Client::new(env.upstream.addr())
        .post(&ask.path(), ask.body().to_string())
        .header("x-demo-scenario", &ask.scenario)
        .send()
        .await
}

// ---- answers ------------------------------------------------------------------------------------

/// The digits after the first `demo` followed by eight digits (the demo's ids carry its request
/// sequence number so).
fn demo_seq(text: &str) -> Option<&str> {
    text.match_indices("demo").find_map(|(i, _)| {
        let d = text.get(i + 4..i + 12)?;
        d.bytes().all(|b| b.is_ascii_digit()).then_some(d)
    })
}

fn created(text: &str) -> Option<&str> {
    let i = text.find("\"created\":")? + "\"created\":".len();
    let rest = text.get(i..)?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest.get(..end)
}

/// The upstream's own answer with the two things that differ per request (its sequence number
/// in ids, the `created` second) set to those of the proxied answer.
fn normalized(direct: &str, proxied: &str) -> String {
    let mut out = direct.to_string();
    if let (Some(a), Some(b)) = (demo_seq(direct), demo_seq(proxied)) {
        out = out.replace(&format!("demo{a}"), &format!("demo{b}"));
    }
    if let (Some(a), Some(b)) = (created(direct), created(proxied)) {
        out = out.replace(&format!("\"created\":{a}"), &format!("\"created\":{b}"));
    }
    out
}

/// The proxied answer is the upstream's, byte for byte.
async fn assert_unchanged(env: &Env, ask: &Ask, resp: &Resp) -> anyhow::Result<()> {
    let case = ask.case();
    assert_eq!(resp.status, 200, "{case}: {}", resp.text());
    let want = direct(env, ask).await?;
    assert_eq!(want.status, 200, "{case}: direct: {}", want.text());
    let got = resp.text();
    assert_eq!(got, normalized(&want.text(), &got), "{case}");
    Ok(())
}

/// Every SSE event of a client stream is well formed, and the stream ends the way the API ends
/// it (OpenAI `data: [DONE]`, Anthropic `message_stop` or `error`). Returns the event data.
fn assert_valid_stream(api: ApiShape, resp: &Resp) -> Vec<String> {
    let text = resp.text();
    assert!(text.ends_with("\n\n"), "unterminated stream:\n{text}");
    let mut datas = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        for line in block.lines() {
            assert!(
                line.starts_with("data:") || line.starts_with("event:") || line.starts_with(':'),
                "malformed SSE line {line:?} in\n{text}"
            );
        }
        let data: Vec<&str> = block
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim_start)
            .collect();
        assert!(!data.is_empty(), "event without data: {block:?}\n{text}");
        let data = data.join("\n");
        if data != "[DONE]" {
            serde_json::from_str::<Value>(&data)
                .unwrap_or_else(|e| panic!("event data is not json ({e}): {data}\n{text}"));
        }
        datas.push(data);
    }
    match api {
        ApiShape::AnthropicMessages => {
            let last: Value = serde_json::from_str(datas.last().unwrap()).unwrap();
            assert!(
                last["type"] == "message_stop" || last["type"] == "error",
                "last event: {last}\n{text}"
            );
        }
        _ => assert_eq!(datas.last().map(String::as_str), Some("[DONE]"), "{text}"),
    }
    datas
}

/// A 502 in the provider's error shape with code `schema_violation`; returns its message.
fn assert_blocked(ask: &Ask, resp: &Resp, rid: &str) -> String {
    let case = ask.case();
    assert_eq!(resp.status, 502, "{case}: {}", resp.text());
    let err = resp
        .json()
        .unwrap_or_else(|e| panic!("{case}: {e}: {}", resp.text()));
    assert_provider_error(ask.api, &err, "schema_violation", rid, &case);
    assert_eq!(
        resp.header("x-guard-reason").as_deref(),
        Some("schema_violation"),
        "{case}"
    );
    err["error"]["message"].as_str().unwrap().to_string()
}

fn assert_provider_error(api: ApiShape, err: &Value, code: &str, rid: &str, case: &str) {
    assert_eq!(err["error"]["code"], code, "{case}: {err}");
    assert!(err["error"]["message"].is_string(), "{case}: {err}");
    if api == ApiShape::AnthropicMessages {
        assert_eq!(err["type"], "error", "{case}: {err}");
        assert_eq!(err["request_id"], rid, "{case}: {err}");
    } else {
        assert_eq!(err["error"]["request_id"], rid, "{case}: {err}");
    }
}

/// The error event of a stream (the event whose error code is `schema_violation`) and its index
/// among the events, after checking that nothing but OpenAI's `[DONE]` follows it.
fn error_event(ask: &Ask, events: &[String], rid: &str, raw: &str) -> (usize, Value) {
    let case = ask.case();
    let (i, data) = events
        .iter()
        .enumerate()
        .find(|(_, d)| d.contains("schema_violation"))
        .unwrap_or_else(|| panic!("{case}: no error event:\n{raw}"));
    let e: Value = serde_json::from_str(data).unwrap();
    assert_provider_error(ask.api, &e, "schema_violation", rid, &case);
    // Nothing after the error (OpenAI: but its [DONE]).
    let after: Vec<&str> = events[i + 1..].iter().map(String::as_str).collect();
    let want: Vec<&str> = if ask.api == ApiShape::AnthropicMessages {
        vec![]
    } else {
        vec!["[DONE]"]
    };
    assert_eq!(after, want, "{case}: events after the error:\n{raw}");
    (i, e)
}

/// A violation as the record lists it: kind, tool (or null), paths.
type Viol = (String, Value, Vec<String>);

/// The record's `(kind, tool, paths)` of each violation.
fn kinds_and_paths(rec: &Value) -> Vec<Viol> {
    rec["violations"]
        .as_array()
        .unwrap_or_else(|| panic!("no violations in {rec}"))
        .iter()
        .map(|v| {
            (
                v["kind"].as_str().unwrap().to_string(),
                v["tool"].clone(),
                v["paths"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

fn viol(kind: &str, tool: Option<&str>, paths: &[&str]) -> Viol {
    (
        kind.to_string(),
        tool.map_or(Value::Null, |t| json!(t)),
        paths.iter().map(|p| (*p).to_string()).collect(),
    )
}

fn has_reason(rec: &Value, reason: &str) -> bool {
    rec["reasons"]
        .as_array()
        .is_some_and(|r| r.contains(&json!(reason)))
}

/// The value of a Prometheus sample with exactly these labels (in any order).
fn prom_value(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(metric)?.strip_prefix('{')?;
        let (inner, value) = rest.split_once("} ")?;
        let mut got: Vec<(&str, &str)> = inner
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        let mut want = labels.to_vec();
        got.sort_unstable();
        want.sort_unstable();
        (got == want).then(|| value.trim().parse().ok())?
    })
}

/// The answers that fail a check, with the record's expected violations and a text the error
/// message must hold (the pointer).
fn failing_cases(api: ApiShape) -> Vec<(&'static str, Ask, Viol, &'static str)> {
    vec![
        (
            "output",
            Ask::new(
                api,
                Declares::Output(person()),
                &format!("json:{PERSON_BAD_AGE}"),
            ),
            viol("output", None, &["/age"]),
            "/age",
        ),
        (
            "args",
            Ask::new(api, Declares::Tool(weather_kelvin()), "tool_call"),
            viol("tool_arguments", Some(TOOL), &["/unit"]),
            "/unit",
        ),
        (
            "undeclared",
            Ask::new(api, Declares::OtherTool, "tool_call"),
            viol("undeclared_tool", Some(TOOL), &[""]),
            "was not declared",
        ),
    ]
}

// ------------------------------------------------------------------------------------------------

/// 1. Valid structured output, valid tool calls (one, two, forced) pass byte-identical: not
/// streamed, streamed in `buffer` mode (default route), streamed in `passthrough` mode.
#[tokio::test]
async fn valid_answers_pass_byte_identical() -> anyhow::Result<()> {
    let env = start().await?;
    for api in SHAPES {
        let cases = [
            Ask::new(
                api,
                Declares::Output(person()),
                &format!("json:{PERSON_OK}"),
            ),
            Ask::new(api, Declares::Tool(weather_ok()), "tool_call"),
            Ask::new(api, Declares::Tool(weather_ok()), "tool_calls:2"),
            Ask::new(api, Declares::ForcedTool(weather_ok()), "tool_call"),
        ];
        for (n, base) in cases.into_iter().enumerate() {
            for (route, stream) in [("", false), ("", true), ("/pass", true)] {
                let ask = base.clone().route(route).stream(stream);
                let rid = format!(
                    "valid-{}-{n}-{}-{stream}",
                    name(api),
                    route.trim_matches('/')
                );
                let resp = send(&env, &ask, &rid).await?;
                let case = ask.case();
                assert_unchanged(&env, &ask, &resp).await?;
                assert_eq!(resp.header("x-guard-schema"), None, "{case}");
                if stream {
                    assert_valid_stream(api, &resp);
                } else {
                    // The content-length Envoy sends is the answer's.
                    assert_eq!(
                        resp.header("content-length"),
                        Some(resp.body.len().to_string()),
                        "{case}"
                    );
                }
                let rec = env.audit_record("schema_guard", &rid).await?;
                assert_eq!(rec["decision"], "allow", "{case}: {rec}");
                assert!(rec["violations"].is_null(), "{case}: {rec}");
                let want_checks = if base.scenario == "tool_calls:2" {
                    2
                } else {
                    1
                };
                assert_eq!(rec["checks"], want_checks, "{case}: {rec}");
            }
        }
    }
    env.finish();
    Ok(())
}

/// 2. An invalid structured output is blocked (502) with the JSON pointer and message of the
/// error; output that is not JSON at all, or misses a required field, too.
#[tokio::test]
async fn invalid_structured_output_is_blocked_with_the_pointer() -> anyhow::Result<()> {
    let env = start().await?;
    let cases = [
        // (answer, paths in the record, texts the message holds)
        (PERSON_BAD_AGE, vec!["/age"], vec!["/age", "minimum"]),
        (
            r#"{"name":"Ada","age":"old","extra":1}"#,
            vec!["/age", ""],
            vec!["/age", "extra"],
        ),
        (r#"{"age":3}"#, vec![""], vec!["/: ", "name"]),
        ("Sure! Ada is 36.", vec![""], vec!["not valid JSON"]),
    ];
    for api in SHAPES {
        for (n, (answer, paths, texts)) in cases.iter().enumerate() {
            let ask = Ask::new(api, Declares::Output(person()), &format!("json:{answer}"));
            let rid = format!("badout-{}-{n}", name(api));
            let resp = send(&env, &ask, &rid).await?;
            let msg = assert_blocked(&ask, &resp, &rid);
            let case = ask.case();
            assert!(
                msg.starts_with("the answer does not match its schema: structured output: "),
                "{case}: {msg}"
            );
            for t in texts {
                assert!(msg.contains(t), "{case}: {t:?} not in {msg:?}");
            }
            let rec = env.audit_record("schema_guard", &rid).await?;
            assert_eq!(rec["decision"], "block", "{case}: {rec}");
            assert!(has_reason(&rec, "schema_violation"), "{case}: {rec}");
            let mut got = kinds_and_paths(&rec);
            got.iter_mut().for_each(|v| v.2.sort());
            let mut want_paths = paths.clone();
            want_paths.sort_unstable();
            assert_eq!(
                got,
                vec![viol("output", None, &want_paths)],
                "{case}: {rec}"
            );
            assert_eq!(rec["violations"][0]["choice"], 0, "{case}: {rec}");
            assert_eq!(rec["checks"], 1, "{case}: {rec}");
            // Paths and kinds only: the record never quotes the answer.
            assert!(!rec.to_string().contains("Ada"), "{case}: {rec}");
        }
    }
    env.finish();
    Ok(())
}

/// 3. Tool calls whose arguments fail the tool's schema are blocked on the default route, with
/// the tool's name and the pointer; every failing call is listed in the record; a forced tool
/// (Anthropic's structured-output pattern) is checked the same way.
#[tokio::test]
async fn tool_call_with_bad_arguments_is_blocked() -> anyhow::Result<()> {
    let env = start().await?;
    for api in SHAPES {
        let cases = [
            (
                Ask::new(api, Declares::Tool(weather_kelvin()), "tool_call"),
                vec![viol("tool_arguments", Some(TOOL), &["/unit"])],
                "/unit",
            ),
            (
                Ask::new(api, Declares::Tool(weather_kelvin()), "tool_calls:2"),
                vec![
                    viol("tool_arguments", Some(TOOL), &["/unit"]),
                    viol("tool_arguments", Some(TOOL), &["/unit"]),
                ],
                "/unit",
            ),
            (
                Ask::new(api, Declares::Tool(weather_paris_only()), "tool_calls:2"),
                vec![viol("tool_arguments", Some(TOOL), &["/city"])],
                "/city",
            ),
            (
                Ask::new(api, Declares::ForcedTool(person()), "tool_call"),
                // Required fields missing and extra ones, all at the top (how many errors
                // that makes is the engine's business): checked below.
                vec![],
                "/: ",
            ),
        ];
        for (n, (ask, want, text)) in cases.iter().enumerate() {
            let rid = format!("badargs-{}-{n}", name(api));
            let resp = send(&env, ask, &rid).await?;
            let msg = assert_blocked(ask, &resp, &rid);
            let case = ask.case();
            assert!(
                msg.contains(&format!("arguments of tool call \"{TOOL}\"")),
                "{case}: {msg}"
            );
            assert!(msg.contains(text), "{case}: {text:?} not in {msg:?}");
            assert!(!resp.text().contains("tool_calls\":["), "{case}");
            let rec = env.audit_record("schema_guard", &rid).await?;
            assert_eq!(rec["decision"], "block", "{case}: {rec}");
            let got = kinds_and_paths(&rec);
            if want.is_empty() {
                assert_eq!(got.len(), 1, "{case}: {rec}");
                assert_eq!(got[0].0, "tool_arguments", "{case}: {rec}");
                assert!(got[0].2.iter().all(String::is_empty), "{case}: {rec}");
                assert!(!got[0].2.is_empty(), "{case}: {rec}");
            } else {
                assert_eq!(&got, want, "{case}: {rec}");
            }
        }
    }
    env.finish();
    Ok(())
}

/// 4. A call to a tool the request did not declare (another tool declared, or none) is caught
/// and blocked on the default route (the drop route drops it: test 5; streams: tests 6, 7).
#[tokio::test]
async fn call_to_an_undeclared_tool_is_caught() -> anyhow::Result<()> {
    let env = start().await?;
    for api in SHAPES {
        for declares in [Declares::OtherTool, Declares::Nothing] {
            let ask = Ask::new(api, declares.clone(), "tool_call");
            let rid = format!("undeclared-{}-{declares:?}", name(api));
            let resp = send(&env, &ask, &rid).await?;
            let msg = assert_blocked(&ask, &resp, &rid);
            let case = ask.case();
            assert!(
                msg.contains(&format!(
                    "tool call \"{TOOL}\": /: tool \"{TOOL}\" was not declared in the request"
                )),
                "{case}: {msg}"
            );
            let rec = env.audit_record("schema_guard", &rid).await?;
            assert_eq!(rec["decision"], "block", "{case}: {rec}");
            assert_eq!(
                kinds_and_paths(&rec),
                vec![viol("undeclared_tool", Some(TOOL), &[""])],
                "{case}: {rec}"
            );
        }
    }
    env.finish();
    Ok(())
}

/// What the drop route leaves of an answer: the remaining calls' cities, the text, the
/// finish/stop reason.
fn dropped_view(api: ApiShape, v: &Value) -> (Vec<String>, String, String) {
    match api {
        ApiShape::AnthropicMessages => {
            let blocks = v["content"].as_array().unwrap();
            let cities = blocks
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .map(|b| b["input"]["city"].as_str().unwrap().to_string())
                .collect();
            let texts: Vec<&Value> = blocks.iter().filter(|b| b["type"] == "text").collect();
            assert_eq!(texts.len(), 1, "{v}");
            assert_eq!(blocks.last().unwrap()["type"], "text", "{v}");
            (
                cities,
                texts[0]["text"].as_str().unwrap().to_string(),
                v["stop_reason"].as_str().unwrap().to_string(),
            )
        }
        _ => {
            let choice = &v["choices"][0];
            let cities = match choice["message"].get("tool_calls") {
                None => vec![],
                Some(calls) => calls
                    .as_array()
                    .unwrap_or_else(|| panic!("tool_calls not an array: {v}"))
                    .iter()
                    .map(|c| {
                        let args: Value =
                            serde_json::from_str(c["function"]["arguments"].as_str().unwrap())
                                .unwrap();
                        args["city"].as_str().unwrap().to_string()
                    })
                    .collect(),
            };
            (
                cities,
                choice["message"]["content"].as_str().unwrap().to_string(),
                choice["finish_reason"].as_str().unwrap().to_string(),
            )
        }
    }
}

/// 5. `drop_tool_call`: the offending calls go, the others stay, a deterministic assistant
/// message says why; with no call left the answer ends as a plain one (OpenAI finish_reason
/// `stop`, Anthropic stop_reason `end_turn`). The rest of the answer is the upstream's.
#[tokio::test]
async fn tool_call_with_bad_arguments_is_dropped_on_the_drop_route() -> anyhow::Result<()> {
    let env = start().await?;
    let args_msg = format!(
        "The tool call `{TOOL}` was removed: its arguments did not match the declared schema (/unit: "
    );
    for api in SHAPES {
        let (stop, calls_reason) = match api {
            ApiShape::AnthropicMessages => ("end_turn", "tool_use"),
            _ => ("stop", "tool_calls"),
        };
        let cases: [(Ask, Vec<&str>, &str, &str); 4] = [
            (
                Ask::new(api, Declares::Tool(weather_kelvin()), "tool_call"),
                vec![],
                &args_msg,
                stop,
            ),
            (
                Ask::new(api, Declares::Tool(weather_kelvin()), "tool_calls:2"),
                vec![],
                &args_msg,
                stop,
            ),
            (
                Ask::new(api, Declares::Tool(weather_paris_only()), "tool_calls:2"),
                vec!["Paris"],
                "The tool call `get_weather` was removed: its arguments did not match the declared schema (/city: ",
                calls_reason,
            ),
            (
                Ask::new(api, Declares::OtherTool, "tool_call"),
                vec![],
                "The tool call `get_weather` was removed: the tool was not declared.",
                stop,
            ),
        ];
        for (n, (ask, cities, text, reason)) in cases.iter().enumerate() {
            let ask = ask.clone().route("/drop");
            let case = ask.case();
            let mut texts = Vec::new();
            // Twice: the message is deterministic.
            for round in 0..2 {
                let rid = format!("drop-{}-{n}-{round}", name(api));
                let resp = send(&env, &ask, &rid).await?;
                assert_eq!(resp.status, 200, "{case}: {}", resp.text());
                assert_eq!(
                    resp.header("content-length"),
                    Some(resp.body.len().to_string()),
                    "{case}"
                );
                let v = resp.json()?;
                let (got_cities, got_text, got_reason) = dropped_view(api, &v);
                assert_eq!(&got_cities, cities, "{case}: {v}");
                assert!(got_text.starts_with(text), "{case}: {got_text:?}");
                assert!(got_text.ends_with('.'), "{case}: {got_text:?}");
                assert_eq!(&got_reason, reason, "{case}: {v}");
                if ask.scenario == "tool_calls:2" && cities.is_empty() {
                    // One sentence per dropped call.
                    assert_eq!(got_text.matches("was removed").count(), 2, "{got_text}");
                }
                // The shape is still the API's: everything else is the upstream's.
                let want = direct(&env, &ask).await?.json()?;
                let same = |k: &str| assert_eq!(v[k], want[k], "{case}: {k}");
                same("model");
                same("usage");
                if api == ApiShape::AnthropicMessages {
                    same("type");
                    same("role");
                    assert_eq!(
                        v.as_object().unwrap().len(),
                        want.as_object().unwrap().len(),
                        "{case}: {v}"
                    );
                } else {
                    same("object");
                    assert_eq!(v["choices"].as_array().unwrap().len(), 1, "{v}");
                    assert_eq!(v["choices"][0]["message"]["role"], "assistant", "{v}");
                    assert_eq!(v["choices"][0]["index"], 0, "{v}");
                }
                texts.push(got_text);
                let rec = env.audit_record("schema_guard", &rid).await?;
                assert_eq!(rec["decision"], "modify", "{case}: {rec}");
                assert!(has_reason(&rec, "schema_violation"), "{case}: {rec}");
                assert!(!rec["violations"].as_array().unwrap().is_empty(), "{rec}");
            }
            assert_eq!(texts[0], texts[1], "{case}");
        }

        // A stream cannot take a call back: the drop route blocks it.
        let ask = Ask::new(api, Declares::Tool(weather_kelvin()), "tool_call")
            .route("/drop")
            .stream(true);
        let rid = format!("drop-stream-{}", name(api));
        let resp = send(&env, &ask, &rid).await?;
        assert_eq!(resp.status, 200, "{}", resp.text());
        let events = assert_valid_stream(api, &resp);
        let (_, e) = error_event(&ask, &events, &rid, &resp.text());
        assert!(
            e["error"]["message"].as_str().unwrap().contains("/unit"),
            "{e}"
        );
        let rec = env.audit_record("schema_guard", &rid).await?;
        assert_eq!(rec["decision"], "block", "{rec}");
    }
    env.finish();
    Ok(())
}

/// 6. `buffer` streams (the default): nothing judged reaches the client before the verdict. A
/// structured output is held whole: the stream is only the error event (OpenAI: and `[DONE]`),
/// with the pointer. With only tool calls to check, the answer streams until its first tool
/// call (text is not what schema-guard judges; time to first token stays the upstream's), and
/// everything from the tool call on is replaced by the error event. Whatever the chunking.
#[tokio::test]
async fn streamed_failures_in_buffer_mode_send_nothing_judged_before_the_error(
) -> anyhow::Result<()> {
    let env = start().await?;
    for plan in PLANS {
        for api in SHAPES {
            for (label, ask, want, text) in failing_cases(api) {
                let ask = ask.stream(true);
                let case = format!("{} plan={}", ask.case(), plan.0);
                let rid = format!("buffer-{}-{label}-{}", name(api), plan.0);
                let resp = send_plan(&env, &ask, ask.body(), &rid, plan).await?;
                assert_eq!(resp.status, 200, "{case}: {}", resp.text());
                let raw = resp.text();
                let events = assert_valid_stream(api, &resp);
                let (i, e) = error_event(&ask, &events, &rid, &raw);
                // (The error message may quote a bad value, e.g. `"celsius" is not one of ...`.)
                let leaks: &[&str] = if label == "output" {
                    // A structured output is held whole: not one byte of the answer goes out.
                    assert_eq!(i, 0, "{case}: answer bytes before the error:\n{raw}");
                    &[
                        "Paris",
                        "chat.completion.chunk",
                        "message_start",
                        "content_block",
                    ]
                } else {
                    // Only tool calls to check: the answer streams until its first tool call,
                    // which is held and replaced by the error.
                    &["Paris", "tool_calls", "tool_use", "input_json_delta"]
                };
                for leak in leaks {
                    assert!(
                        !raw.contains(leak),
                        "{case}: {leak} reached the client:\n{raw}"
                    );
                }
                let msg = e["error"]["message"].as_str().unwrap();
                assert!(msg.contains(text), "{case}: {text:?} not in {msg:?}");
                let rec = env.audit_record("schema_guard", &rid).await?;
                assert_eq!(rec["decision"], "block", "{case}: {rec}");
                assert_eq!(kinds_and_paths(&rec), vec![want], "{case}: {rec}");
            }
        }
    }
    env.finish();
    Ok(())
}

/// 7. `passthrough` streams: the answer goes out at once; the failing call or message ends the
/// stream with the error event: nothing of the upstream's after it (not its `[DONE]` or
/// `message_stop`, which would end the stream for an SDK before the error), and the stream stays
/// well-formed SSE (the error event never spliced into a half-sent event), whatever the
/// chunking.
///
/// Regression: the filter forwards each upstream chunk whole and appends the error event after
/// it, so a chunk that ends inside the next event gives `data: [Ddata: {"error":...}` (OpenAI)
/// or `event: message_event: error` (Anthropic), and a chunk that holds the stream's end gives
/// the error after `[DONE]` / `message_stop`.
#[tokio::test]
async fn streamed_failures_in_passthrough_mode_end_with_an_error_event() -> anyhow::Result<()> {
    let env = start().await?;
    for plan in PLANS {
        for api in SHAPES {
            for (label, ask, want, text) in failing_cases(api) {
                let ask = ask.route("/pass").stream(true);
                let case = format!("{} plan={}", ask.case(), plan.0);
                let rid = format!("pass-{}-{label}-{}", name(api), plan.0);
                let resp = send_plan(&env, &ask, ask.body(), &rid, plan).await?;
                assert_eq!(resp.status, 200, "{case}: {}", resp.text());
                let raw = resp.text();
                if plan.1 != "0" {
                    // Forwarded at once: the client had answer bytes before the verdict.
                    assert!(
                        resp.chunks.len() > 1,
                        "{case}: {} chunks",
                        resp.chunks.len()
                    );
                    let first = String::from_utf8_lossy(&resp.chunks[0]);
                    assert!(!first.contains("schema_violation"), "{case}: {first}");
                }
                let events = assert_valid_stream(api, &resp);
                let (i, e) = error_event(&ask, &events, &rid, &raw);
                assert!(i > 0, "{case}: no answer before the error:\n{raw}");
                let before = events[..i].join("\n");
                let answer_marker = match (api, label) {
                    (ApiShape::AnthropicMessages, "output") => "text_delta",
                    (ApiShape::AnthropicMessages, _) => "input_json_delta",
                    (_, "output") => "\"content\":",
                    _ => "\"tool_calls\":",
                };
                assert!(before.contains(answer_marker), "{case}:\n{raw}");
                assert!(
                    !events[..i]
                        .iter()
                        .any(|d| d == "[DONE]" || d.contains("\"message_stop\"")),
                    "{case}: the stream ended before its error event:\n{raw}"
                );
                let msg = e["error"]["message"].as_str().unwrap();
                assert!(msg.contains(text), "{case}: {text:?} not in {msg:?}");
                let rec = env.audit_record("schema_guard", &rid).await?;
                assert_eq!(rec["decision"], "block", "{case}: {rec}");
                assert_eq!(kinds_and_paths(&rec), vec![want], "{case}: {rec}");
            }
        }
    }
    env.finish();
    Ok(())
}

/// 8. The route's request schema: a model outside the enum or `max_tokens` over the maximum
/// gets 400 `schema_violation` with the pointer, and never reaches the upstream; a request that
/// fits passes.
#[tokio::test]
async fn request_validation_returns_400() -> anyhow::Result<()> {
    let env = start().await?;
    for api in SHAPES {
        let base = Ask::new(api, Declares::Nothing, "echo").route("/strict");
        let ok = base.body();
        let mut bad_model = ok.clone();
        bad_model["model"] = json!("gpt-3.5-turbo");
        let mut bad_max = ok.clone();
        bad_max["max_tokens"] = json!(5000);
        let mut both = bad_max.clone();
        both["model"] = json!("o1");
        let cases = [
            ("model", bad_model, vec!["/model"]),
            ("max", bad_max, vec!["/max_tokens"]),
            ("both", both, vec!["/max_tokens", "/model"]),
        ];
        for (label, body, paths) in cases {
            env.upstream.clear();
            let rid = format!("strict-{}-{label}", name(api));
            let resp = send_body(&env, &base, body, &rid).await?;
            let case = format!("{} {label}", name(api));
            assert_eq!(resp.status, 400, "{case}: {}", resp.text());
            let err = resp.json()?;
            assert_provider_error(api, &err, "schema_violation", &rid, &case);
            assert_eq!(
                err["error"]["type"], "invalid_request_error",
                "{case}: {err}"
            );
            let msg = err["error"]["message"].as_str().unwrap();
            assert!(
                msg.starts_with("the request does not match the schema of this route: request: "),
                "{case}: {msg}"
            );
            for p in &paths {
                assert!(msg.contains(&format!("{p}: ")), "{case}: {p} not in {msg}");
            }
            assert!(
                env.upstream.received().is_empty(),
                "{case}: upstream saw it"
            );
            let rec = env.audit_record("schema_guard", &rid).await?;
            assert_eq!(rec["decision"], "block", "{case}: {rec}");
            let mut got = kinds_and_paths(&rec);
            got.iter_mut().for_each(|v| v.2.sort());
            assert_eq!(got, vec![viol("request", None, &paths)], "{case}: {rec}");
        }
        env.upstream.clear();
        let rid = format!("strict-{}-ok", name(api));
        let resp = send(&env, &base, &rid).await?;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(env.upstream.received().len(), 1);
        let rec = env.audit_record("schema_guard", &rid).await?;
        assert_eq!(rec["decision"], "allow", "{rec}");
    }
    env.finish();
    Ok(())
}

/// 9. A schema the request declares that cannot be compiled (a tool's parameters, the
/// structured output's) is refused with 400 `invalid_schema` before the upstream sees it.
#[tokio::test]
async fn invalid_declared_schema_is_400_invalid_schema() -> anyhow::Result<()> {
    let env = start().await?;
    for api in SHAPES {
        let cases = [
            (
                "tool",
                Ask::new(api, Declares::Tool(json!({"type": "nope"})), "tool_call"),
                format!("tool \"{TOOL}\""),
            ),
            (
                "output",
                Ask::new(
                    api,
                    Declares::Output(json!({"type": "object", "minProperties": -1})),
                    "echo",
                ),
                "response format".to_string(),
            ),
        ];
        for (label, ask, text) in cases {
            env.upstream.clear();
            let rid = format!("invalid-{}-{label}", name(api));
            let resp = send(&env, &ask, &rid).await?;
            let case = ask.case();
            assert_eq!(resp.status, 400, "{case}: {}", resp.text());
            let err = resp.json()?;
            assert_provider_error(api, &err, "invalid_schema", &rid, &case);
            let msg = err["error"]["message"].as_str().unwrap();
            assert!(
                msg.starts_with("a schema in this request cannot be used: "),
                "{case}: {msg}"
            );
            assert!(msg.contains(&text), "{case}: {text:?} not in {msg:?}");
            assert!(
                env.upstream.received().is_empty(),
                "{case}: upstream saw it"
            );
            let rec = env.audit_record("schema_guard", &rid).await?;
            assert_eq!(rec["decision"], "block", "{case}: {rec}");
            assert!(has_reason(&rec, "invalid_schema"), "{case}: {rec}");
            assert_eq!(
                rec["unusable_schemas"].as_array().map(Vec::len),
                Some(1),
                "{case}: {rec}"
            );
        }
    }
    env.finish();
    Ok(())
}

/// 10. The flag route: a failing answer passes unchanged with `x-guard-schema:
/// schema_violation;kind=<kind>` (non-streamed) and decision `flag`; a flagged stream passes
/// whole.
#[tokio::test]
async fn flag_route_passes_with_the_header() -> anyhow::Result<()> {
    let env = start().await?;
    for api in SHAPES {
        for (label, ask, want, _) in failing_cases(api) {
            for stream in [false, true] {
                let ask = ask.clone().route("/flag").stream(stream);
                let case = ask.case();
                let rid = format!("flag-{}-{label}-{stream}", name(api));
                let resp = send(&env, &ask, &rid).await?;
                assert_unchanged(&env, &ask, &resp).await?;
                let header = resp.header("x-guard-schema");
                if stream {
                    assert_valid_stream(api, &resp);
                } else {
                    assert_eq!(
                        header.as_deref(),
                        Some(format!("schema_violation;kind={}", want.0).as_str()),
                        "{case}"
                    );
                }
                let rec = env.audit_record("schema_guard", &rid).await?;
                assert_eq!(rec["decision"], "flag", "{case}: {rec}");
                assert!(has_reason(&rec, "schema_violation"), "{case}: {rec}");
                assert_eq!(kinds_and_paths(&rec), vec![want.clone()], "{case}: {rec}");
            }
        }
    }
    env.finish();
    Ok(())
}

/// 11. Dry run: failing answers pass unchanged (streamed or not), the record says what would
/// have happened (`would`, `dry_run`) with the kinds and paths; decision stays `allow`.
#[tokio::test]
async fn dry_run_passes_and_records_would() -> anyhow::Result<()> {
    let env = start().await?;
    for api in SHAPES {
        for (label, ask, want, _) in failing_cases(api) {
            for stream in [false, true] {
                let ask = ask.clone().route("/dry").stream(stream);
                let case = ask.case();
                let rid = format!("dry-{}-{label}-{stream}", name(api));
                let resp = send(&env, &ask, &rid).await?;
                assert_unchanged(&env, &ask, &resp).await?;
                assert_eq!(resp.header("x-guard-schema"), None, "{case}");
                let rec = env.audit_record("schema_guard", &rid).await?;
                assert_eq!(rec["decision"], "allow", "{case}: {rec}");
                assert_eq!(rec["would"], "block", "{case}: {rec}");
                assert_eq!(rec["dry_run"], true, "{case}: {rec}");
                assert!(has_reason(&rec, "schema_violation"), "{case}: {rec}");
                assert_eq!(kinds_and_paths(&rec), vec![want.clone()], "{case}: {rec}");
            }
        }
    }
    env.finish();
    Ok(())
}

/// 12. Violations by kind and action, and checks, in Prometheus.
#[tokio::test]
async fn violations_are_counted_in_prometheus() -> anyhow::Result<()> {
    let env = start().await?;
    let o = ApiShape::OpenAiChat;
    let a = ApiShape::AnthropicMessages;
    let bad_out = format!("json:{PERSON_BAD_AGE}");
    let asks = [
        // output/block x2 (one streamed), tool_arguments/block, undeclared_tool/block
        Ask::new(o, Declares::Output(person()), &bad_out),
        Ask::new(a, Declares::Output(person()), &bad_out).stream(true),
        Ask::new(a, Declares::Tool(weather_kelvin()), "tool_call"),
        Ask::new(o, Declares::OtherTool, "tool_call"),
        // tool_arguments/drop_tool_call x2 (two calls)
        Ask::new(o, Declares::Tool(weather_kelvin()), "tool_calls:2").route("/drop"),
        // output/flag
        Ask::new(a, Declares::Output(person()), &bad_out).route("/flag"),
        // output/dry_run_block
        Ask::new(o, Declares::Output(person()), &bad_out).route("/dry"),
        // passes: 1 check
        Ask::new(a, Declares::Tool(weather_ok()), "tool_call"),
    ];
    for (n, ask) in asks.iter().enumerate() {
        send(&env, ask, &format!("prom-{n}")).await?;
    }
    // request/block
    let strict = Ask::new(o, Declares::Nothing, "echo").route("/strict");
    let mut body = strict.body();
    body["model"] = json!("nope");
    let resp = send_body(&env, &strict, body, "prom-strict").await?;
    assert_eq!(resp.status, 400, "{}", resp.text());

    let v = |category: &'static str, action: &'static str, n: u64| {
        (
            "guard_violations",
            vec![
                ("guard_filter", "schema_guard"),
                ("category", category),
                ("action", action),
            ],
            n,
        )
    };
    let want = [
        v("output", "block", 2),
        v("tool_arguments", "block", 1),
        v("undeclared_tool", "block", 1),
        v("tool_arguments", "drop_tool_call", 2),
        v("output", "flag", 1),
        v("output", "dry_run_block", 1),
        v("request", "block", 1),
        // One check per answer, two for the two calls, one for the request schema.
        ("guard_checks", vec![("guard_filter", "schema_guard")], 10),
    ];
    let prom = env
        .wait_prometheus(|p| {
            want.iter()
                .all(|(m, labels, n)| prom_value(p, m, labels) == Some(*n))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nwanted: {want:?}"))?;
    // Nothing else was counted as a violation.
    let lines: Vec<&str> = prom
        .lines()
        .filter(|l| l.starts_with("guard_violations{") && l.contains("schema_guard"))
        .collect();
    assert_eq!(lines.len(), 7, "{}", lines.join("\n"));
    env.finish();
    Ok(())
}

/// 13. Dry run also covers a schema the request declares that cannot be used: the request
/// passes (the upstream sees it), and the record says what would have happened, as it does for
/// violations (docs/schema-guard.md: "`dry_run: true` changes nothing and records `would`").
///
/// Regression: the filter records only `unusable_schemas` (no `would`, no `dry_run`, no
/// `invalid_schema` reason), so a dry run cannot tell which requests enforcing would refuse.
#[tokio::test]
async fn dry_run_records_would_for_an_invalid_declared_schema() -> anyhow::Result<()> {
    let env = start().await?;
    for api in SHAPES {
        env.upstream.clear();
        let ask = Ask::new(api, Declares::Tool(json!({"type": "nope"})), "tool_call").route("/dry");
        let case = ask.case();
        let rid = format!("dry-invalid-{}", name(api));
        let resp = send(&env, &ask, &rid).await?;
        assert_eq!(resp.status, 200, "{case}: {}", resp.text());
        assert_eq!(env.upstream.received().len(), 1, "{case}");
        let rec = env.audit_record("schema_guard", &rid).await?;
        assert_eq!(rec["decision"], "allow", "{case}: {rec}");
        assert_eq!(
            rec["unusable_schemas"].as_array().map(Vec::len),
            Some(1),
            "{case}: {rec}"
        );
        assert_eq!(rec["dry_run"], true, "{case}: {rec}");
        assert_eq!(rec["would"], "block", "{case}: {rec}");
        assert!(has_reason(&rec, "invalid_schema"), "{case}: {rec}");
    }
    env.finish();
    Ok(())
}
