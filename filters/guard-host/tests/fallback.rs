//! Fallbacks in the stream driver (docs/fallback.md), against the recording fake host: upstream
//! failures before the headers (held error bodies and header-only answers) and refused answers
//! (whole and streamed) × error / safe_answer / escalate (answered, failed, refused at once),
//! policies without fallbacks unchanged, streams cut after their headers, and the rest of a
//! stream a filter below already ended.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use guard_core::answer::{self, AnswerMeta};
use guard_core::api::ApiShape;
use guard_core::config::{FailurePolicy, FilterConfig};
use guard_core::error::Result;
use guard_core::sse::SseParser;
use guard_core::stream::{Assembled, StreamAssembler, StreamDecoder};
use guard_core::verdict::LocalReply;
use guard_host::driver::{Action, Chunk, Cx, GuardFilter, GuardStream, Outcome, ResponsePlan};
use guard_host::fake::FakeHost;
use guard_host::host::{Dir, Host};
use guard_host::metrics::Metrics;
use serde::Deserialize;
use serde_json::{json, Value};
use std::rc::Rc;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {}

/// Refuses an answer that contains `FLAG`: a whole one with a reply, a stream from the event
/// holding it on (the events before it go out).
struct Flagger {
    held: Vec<u8>,
    stopped: bool,
}

impl GuardFilter for Flagger {
    type Settings = Settings;
    type Compiled = Settings;
    type Shared = ();
    const NAME: &'static str = "flagger";
    const DEFAULT_FAILURE: FailurePolicy = FailurePolicy::FailClosed;

    fn compile(s: Settings, _path: &str) -> Result<Settings> {
        Ok(s)
    }
    fn init_shared(_m: &Rc<Metrics>, _c: &FilterConfig<Settings>) {}
    fn new_stream() -> Self {
        Flagger {
            held: Vec::new(),
            stopped: false,
        }
    }
    fn on_request_body(&mut self, _cx: &mut Cx<'_, Self>, _body: &[u8]) -> Result<Outcome> {
        Ok(Outcome::Continue)
    }
    fn response_plan(&mut self, cx: &mut Cx<'_, Self>, streaming: bool) -> ResponsePlan {
        if !cx.response_ok() {
            ResponsePlan::Skip
        } else if streaming {
            ResponsePlan::Stream
        } else {
            ResponsePlan::Buffer { hold_headers: true }
        }
    }
    fn on_response_body(&mut self, _cx: &mut Cx<'_, Self>, body: &[u8]) -> Result<Outcome> {
        if body.windows(4).any(|w| w == b"FLAG") {
            return Ok(Outcome::Reply(LocalReply::new(
                502,
                "flagged",
                "the answer was flagged",
            )));
        }
        Ok(Outcome::Continue)
    }
    fn on_stream_chunk(
        &mut self,
        cx: &mut Cx<'_, Self>,
        chunk: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Chunk> {
        assert!(!self.stopped, "called after refusing");
        self.held.extend_from_slice(chunk);
        while let Some(pos) = self.held.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.held.drain(..pos + 2).collect();
            if event.windows(4).any(|w| w == b"FLAG") {
                self.stopped = true;
                cx.refuse_stream(LocalReply::new(502, "flagged", "the answer was flagged"));
                return Ok(Chunk::Rewritten);
            }
            out.extend_from_slice(&event);
        }
        Ok(Chunk::Rewritten)
    }
    fn on_stream_end(&mut self, _cx: &mut Cx<'_, Self>, out: &mut Vec<u8>) -> Result<()> {
        out.append(&mut self.held);
        Ok(())
    }
    fn take_unemitted(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.held);
    }
}

const SAFE: &str = "I can't answer that right now.";
const RID: &str = "rid-7";

fn policy(fallback: &str) -> String {
    format!(
        r#"{{"identity":{{"header":"x-user"}},"policies":{{"default":{{"fallback":{fallback}}}}}}}"#
    )
}

fn start(config: &str) -> (Rc<FakeHost>, GuardStream<Flagger>) {
    let host = Rc::new(FakeHost::new());
    let cfg = FilterConfig::parse::<Settings, _>(
        config.as_bytes(),
        Flagger::DEFAULT_FAILURE,
        Flagger::compile,
    )
    .unwrap();
    let metrics = Rc::new(Metrics::new(host.clone() as Rc<dyn Host>));
    (host, GuardStream::new(Rc::new(cfg), Rc::new(()), metrics))
}

/// A request of `api` (streamed or not) that went upstream.
fn request(host: &FakeHost, s: &mut GuardStream<Flagger>, api: ApiShape, stream: bool) {
    let (path, body) = match api {
        ApiShape::OpenAiChat => (
            "/v1/chat/completions",
            json!({"model": "m-1", "stream": stream, "messages": [{"role": "user", "content": "mail bob@example.com"}]}),
        ),
        ApiShape::AnthropicMessages => (
            "/v1/messages",
            json!({"model": "m-1", "stream": stream, "max_tokens": 10, "messages": [{"role": "user", "content": "mail bob@example.com"}]}),
        ),
        ApiShape::OpenAiResponses => (
            "/v1/responses",
            json!({"model": "m-1", "stream": stream, "input": "mail bob@example.com"}),
        ),
    };
    host.set_header(Dir::Request, ":method", Some(b"POST"));
    host.set_header(Dir::Request, ":path", Some(path.as_bytes()));
    host.set_header(Dir::Request, "content-type", Some(b"application/json"));
    host.set_header(Dir::Request, "x-request-id", Some(RID.as_bytes()));
    host.set_header(Dir::Request, "x-user", Some(b"alice"));
    assert_eq!(s.on_request_headers(host, false), Action::Pause);
    let body = body.to_string();
    host.set_buffer(Dir::Request, body.as_bytes());
    assert_eq!(s.on_request_body(host, body.len(), true), Action::Continue);
}

fn response_headers(host: &FakeHost, status: &str, content_type: &str) {
    host.set_header(Dir::Response, ":status", Some(status.as_bytes()));
    host.set_header(Dir::Response, "content-type", Some(content_type.as_bytes()));
}

fn meta(api: ApiShape, host: &FakeHost) -> AnswerMeta<'static> {
    AnswerMeta {
        api,
        model: "m-1",
        request_id: RID,
        created: host.now_nanos() / 1_000_000_000,
    }
}

fn record(host: &FakeHost) -> Value {
    serde_json::from_slice(&host.get_property(&["guard_flagger"]).expect("record")).unwrap()
}

fn header(host: &FakeHost, name: &str) -> Option<String> {
    host.header_value(Dir::Response, name)
        .map(|v| String::from_utf8(v).unwrap())
}

fn assemble(api: ApiShape, body: &[u8]) -> Assembled {
    let mut parser = SseParser::new(1 << 20);
    let mut decoder = StreamDecoder::new(api);
    let mut asm = StreamAssembler::new(1 << 20);
    let mut events = Vec::new();
    parser.push(body, &mut |e| events.push(e)).unwrap();
    parser.finish(&mut |e| events.push(e)).unwrap();
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

const ENVOY_503: &[u8] =
    b"upstream connect error or disconnect/reset before headers. reset reason: connection termination";
const RESET: &[u8] = b"upstream_reset_before_response_started{connection_termination}";

/// Envoy's own 503 after a reset, through the filter: headers held, body replaced at its end.
fn upstream_503(host: &FakeHost, s: &mut GuardStream<Flagger>) -> Action {
    host.set_property(&["response", "code_details"], RESET);
    response_headers(host, "503", "text/plain");
    host.set_header(
        Dir::Response,
        "content-length",
        Some(ENVOY_503.len().to_string().as_bytes()),
    );
    assert_eq!(s.on_response_headers(host, false), Action::Pause);
    host.set_buffer(Dir::Response, ENVOY_503);
    s.on_response_body(host, ENVOY_503.len(), true)
}

#[test]
fn upstream_failure_error_is_provider_shaped() {
    for api in [ApiShape::OpenAiChat, ApiShape::AnthropicMessages] {
        let (host, mut s) = start(&policy(r#"{"on_upstream_failure":"error"}"#));
        request(&host, &mut s, api, false);
        assert_eq!(upstream_503(&host, &mut s), Action::Continue);
        assert_eq!(header(&host, ":status").as_deref(), Some("503"));
        assert_eq!(
            header(&host, "x-guard-reason").as_deref(),
            Some("upstream_failure")
        );
        assert_eq!(
            header(&host, "content-type").as_deref(),
            Some("application/json")
        );
        let want = LocalReply::new(
            503,
            "upstream_failure",
            "the model provider could not be reached; try again later",
        )
        .body(Some(api), RID);
        assert_eq!(host.buffer(Dir::Response), want, "{api:?}");
        assert_eq!(
            header(&host, "content-length"),
            Some(want.len().to_string())
        );
        let rec = record(&host);
        assert_eq!(rec["decision"], "modify");
        assert_eq!(rec["reasons"], json!(["upstream_failure"]));
        assert_eq!(
            rec["upstream_failure"],
            json!({"status": 503, "kind": "reset", "details": String::from_utf8_lossy(RESET)})
        );
        assert_eq!(
            rec["fallback"],
            json!({"trigger": "upstream_failure", "outcome": "error"})
        );
        assert_eq!(host.metric("guard.flagger.upstream.reset.failures"), 1);
        assert_eq!(
            host.metric("guard.flagger.trigger.upstream_failure.fallback.error.fallbacks"),
            1
        );
        let marker: Value =
            serde_json::from_slice(&host.get_property(&["guard_fallback"]).unwrap()).unwrap();
        assert_eq!(marker["filter"], "flagger");
    }
}

#[test]
fn upstream_failure_safe_answer_in_every_shape_streamed_or_not() {
    for api in [
        ApiShape::OpenAiChat,
        ApiShape::AnthropicMessages,
        ApiShape::OpenAiResponses,
    ] {
        for stream in [false, true] {
            let (host, mut s) = start(&policy(&format!(
                r#"{{"on_upstream_failure":"safe_answer","safe_answer":"{SAFE}"}}"#
            )));
            request(&host, &mut s, api, stream);
            assert_eq!(upstream_503(&host, &mut s), Action::Continue);
            let m = meta(api, &host);
            let (want, ct) = if stream {
                (answer::stream(&m, SAFE), "text/event-stream")
            } else {
                (answer::whole(&m, SAFE), "application/json")
            };
            assert_eq!(host.buffer(Dir::Response), want, "{api:?} {stream}");
            assert_eq!(header(&host, ":status").as_deref(), Some("200"));
            assert_eq!(header(&host, "content-type").as_deref(), Some(ct));
            assert_eq!(
                header(&host, "x-guard-fallback").as_deref(),
                Some("safe_answer")
            );
            assert_eq!(header(&host, "x-guard-reason"), None);
            assert_eq!(
                header(&host, "content-length"),
                Some(want.len().to_string())
            );
            let rec = record(&host);
            assert_eq!(
                rec["fallback"],
                json!({"trigger": "upstream_failure", "outcome": "safe_answer"})
            );
        }
    }
}

#[test]
fn upstream_failure_escalates_and_names_the_review() {
    let cfg = policy(&format!(
        r#"{{"on_upstream_failure":"escalate","safe_answer":"{SAFE}","escalate":{{"cluster":"approvals","timeout_ms":700,"message":"A person follows up: {{review_id}}."}}}}"#
    ));
    let (host, mut s) = start(&cfg);
    request(&host, &mut s, ApiShape::AnthropicMessages, false);
    // The escalation waits for the end of Envoy's error body, then calls out.
    assert_eq!(upstream_503(&host, &mut s), Action::Pause);
    let calls = host.state.borrow().callouts.clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].cluster, "approvals");
    assert_eq!(calls[0].timeout_ms, 700);
    assert!(calls[0]
        .headers
        .contains(&(":path".to_string(), "/v1/reviews".to_string())));
    let body: Value = serde_json::from_slice(&calls[0].body).unwrap();
    assert_eq!(body["trigger"], "upstream_failure");
    assert_eq!(body["reason"], "upstream_failure");
    assert_eq!(body["request_id"], RID);
    assert_eq!(body["caller"], "alice");
    assert_eq!(body["filter"], "flagger");
    assert_eq!(body["api"], "anthropic_messages");
    assert_eq!(body["model"], "m-1");
    assert_eq!(body["excerpt_raw"], "user: mail bob@example.com");
    let answer = br#"{"id":"0a1b2c","status":"open"}"#;
    host.set_call_response(Some(201), answer);
    s.on_callout_response(&*host, 1, answer.len());
    let want = answer::whole(
        &meta(ApiShape::AnthropicMessages, &host),
        "A person follows up: 0a1b2c.",
    );
    assert_eq!(host.buffer(Dir::Response), want);
    assert_eq!(
        header(&host, "x-guard-fallback").as_deref(),
        Some("escalate")
    );
    assert_eq!(host.state.borrow().resumed, vec![Dir::Response]);
    let rec = record(&host);
    assert_eq!(
        rec["fallback"],
        json!({"trigger": "upstream_failure", "outcome": "escalate", "review_id": "0a1b2c"})
    );
    assert_eq!(host.metric("guard.flagger.escalation.created.reviews"), 1);
}

#[test]
fn a_failed_escalation_falls_back_to_the_safe_answer_else_the_error() {
    // (safe answer configured, how the queue fails)
    for with_safe in [true, false] {
        for how in ["down", "500", "no id", "refused"] {
            let safe = if with_safe {
                format!(r#","safe_answer":"{SAFE}""#)
            } else {
                String::new()
            };
            let cfg = policy(&format!(
                r#"{{"on_upstream_failure":"escalate"{safe},"escalate":{{"cluster":"approvals"}}}}"#
            ));
            let (host, mut s) = start(&cfg);
            request(&host, &mut s, ApiShape::OpenAiChat, false);
            if how == "refused" {
                host.state.borrow_mut().refuse_callouts = true;
                assert_eq!(upstream_503(&host, &mut s), Action::Continue);
            } else {
                assert_eq!(upstream_503(&host, &mut s), Action::Pause);
                match how {
                    "down" => host.set_call_response(None, b""),
                    "500" => host.set_call_response(Some(500), b"{}"),
                    _ => host.set_call_response(Some(201), br#"{"status":"open"}"#),
                }
                s.on_callout_response(&*host, 1, 0);
            }
            let name = format!("{how}, safe answer {with_safe}");
            let rec = record(&host);
            assert_eq!(rec["fallback"]["escalation"], "failed", "{name}");
            assert_eq!(host.metric("guard.flagger.escalation.failed.reviews"), 1);
            if with_safe {
                let want = answer::whole(&meta(ApiShape::OpenAiChat, &host), SAFE);
                assert_eq!(host.buffer(Dir::Response), want, "{name}");
                assert_eq!(rec["fallback"]["outcome"], "safe_answer");
                assert_eq!(
                    header(&host, "x-guard-fallback").as_deref(),
                    Some("safe_answer")
                );
            } else {
                assert_eq!(header(&host, ":status").as_deref(), Some("503"), "{name}");
                assert_eq!(
                    header(&host, "x-guard-reason").as_deref(),
                    Some("upstream_failure")
                );
                assert_eq!(rec["fallback"]["outcome"], "error");
            }
        }
    }
}

#[test]
fn header_only_upstream_failures_are_answered_locally() {
    for action in ["error", "safe_answer"] {
        let (host, mut s) = start(&policy(&format!(
            r#"{{"on_upstream_failure":"{action}","safe_answer":"{SAFE}"}}"#
        )));
        request(&host, &mut s, ApiShape::OpenAiChat, true);
        host.set_property(&["response", "code_details"], b"via_upstream");
        response_headers(&host, "502", "text/plain");
        // Headers with end of stream: nothing to replace, a local reply instead.
        assert_eq!(s.on_response_headers(&*host, true), Action::Pause);
        let reply = host.local_reply().expect("local reply");
        if action == "error" {
            assert_eq!(reply.status, 502);
            let want = LocalReply::new(
                502,
                "upstream_failure",
                "the model provider answered with an error; try again later",
            )
            .body(Some(ApiShape::OpenAiChat), RID);
            assert_eq!(reply.body, want);
        } else {
            assert_eq!(reply.status, 200);
            let want = answer::stream(&meta(ApiShape::OpenAiChat, &host), SAFE);
            assert_eq!(reply.body, want);
            assert!(reply
                .headers
                .contains(&("x-guard-fallback".to_string(), b"safe_answer".to_vec())));
            assert!(reply
                .headers
                .contains(&("content-type".to_string(), b"text/event-stream".to_vec())));
        }
        assert_eq!(record(&host)["upstream_failure"]["kind"], "status");
        assert_eq!(host.metric("guard.flagger.upstream.status.failures"), 1);
    }
}

#[test]
fn upstream_failures_pass_untouched_without_the_policy_or_when_a_guard_answered() {
    // No `on_upstream_failure`: not this filter's business.
    let (host, mut s) = start(&policy(r#"{"on_flagged_answer":"error"}"#));
    request(&host, &mut s, ApiShape::OpenAiChat, false);
    host.set_property(&["response", "code_details"], RESET);
    response_headers(&host, "503", "text/plain");
    assert_eq!(s.on_response_headers(&*host, false), Action::Continue);
    // A guard's own error (x-guard-reason): not an upstream failure.
    let (host, mut s) = start(&policy(r#"{"on_upstream_failure":"error"}"#));
    request(&host, &mut s, ApiShape::OpenAiChat, false);
    response_headers(&host, "502", "application/json");
    host.set_header(Dir::Response, "x-guard-reason", Some(b"schema_violation"));
    assert_eq!(s.on_response_headers(&*host, false), Action::Continue);
    // Not a 5xx.
    let (host, mut s) = start(&policy(r#"{"on_upstream_failure":"error"}"#));
    request(&host, &mut s, ApiShape::OpenAiChat, false);
    response_headers(&host, "429", "application/json");
    assert_eq!(s.on_response_headers(&*host, false), Action::Continue);
    s.on_done(&*host);
    assert!(record(&host).get("fallback").is_none());
}

/// A non-streamed answer that the filter refuses.
fn flagged_answer(host: &FakeHost, s: &mut GuardStream<Flagger>, api: ApiShape) -> Action {
    response_headers(host, "200", "application/json");
    assert_eq!(s.on_response_headers(host, false), Action::Pause);
    let body = answer::whole(&meta(api, host), "here is the FLAG");
    host.set_buffer(Dir::Response, &body);
    s.on_response_body(host, body.len(), true)
}

#[test]
fn flagged_answers_get_the_policys_fallback() {
    // Without a fallback: the error exactly as before, no fallback record.
    let (host, mut s) = start("{}");
    request(&host, &mut s, ApiShape::OpenAiChat, false);
    flagged_answer(&host, &mut s, ApiShape::OpenAiChat);
    assert_eq!(header(&host, ":status").as_deref(), Some("502"));
    assert_eq!(header(&host, "x-guard-reason").as_deref(), Some("flagged"));
    let rec = record(&host);
    assert!(rec.get("fallback").is_none());
    assert!(host.get_property(&["guard_fallback"]).is_none());
    // Safe answer.
    for api in [ApiShape::OpenAiChat, ApiShape::AnthropicMessages] {
        let (host, mut s) = start(&policy(&format!(
            r#"{{"on_flagged_answer":"safe_answer","safe_answer":"{SAFE}"}}"#
        )));
        request(&host, &mut s, api, false);
        assert_eq!(flagged_answer(&host, &mut s, api), Action::Continue);
        assert_eq!(
            host.buffer(Dir::Response),
            answer::whole(&meta(api, &host), SAFE)
        );
        assert_eq!(header(&host, ":status").as_deref(), Some("200"));
        let rec = record(&host);
        assert_eq!(rec["decision"], "block");
        assert_eq!(rec["reasons"], json!(["flagged"]));
        assert_eq!(
            rec["fallback"],
            json!({"trigger": "flagged_answer", "outcome": "safe_answer"})
        );
        assert_eq!(
            host.metric("guard.flagger.trigger.flagged_answer.fallback.safe_answer.fallbacks"),
            1
        );
    }
    // Escalation: the reviewer gets the question and the refused answer.
    let (host, mut s) = start(&policy(
        r#"{"on_flagged_answer":"escalate","escalate":{"cluster":"approvals"}}"#,
    ));
    request(&host, &mut s, ApiShape::OpenAiChat, false);
    assert_eq!(
        flagged_answer(&host, &mut s, ApiShape::OpenAiChat),
        Action::Pause
    );
    let body: Value = serde_json::from_slice(&host.state.borrow().callouts[0].body).unwrap();
    assert_eq!(body["trigger"], "flagged_answer");
    assert_eq!(body["reason"], "flagged");
    assert_eq!(
        body["excerpt_raw"],
        "user: mail bob@example.com\n\nassistant: here is the FLAG"
    );
    host.set_call_response(Some(201), br#"{"id":"ff00"}"#);
    s.on_callout_response(&*host, 1, 20);
    let want = answer::whole(
        &meta(ApiShape::OpenAiChat, &host),
        &guard_core::config::DEFAULT_ESCALATE_MESSAGE.replace("{review_id}", "ff00"),
    );
    assert_eq!(host.buffer(Dir::Response), want);
}

const CHAT_EVENTS: [&str; 4] = [
    "data: {\"id\":\"chatcmpl-up\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m-1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-up\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Fine so far.\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-up\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" FLAG\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-up\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
];

/// Feed the chat stream event by event as Envoy does (a paused callback keeps its buffer and
/// gets the next chunk appended); returns what the client received and the last action.
fn feed_stream(host: &FakeHost, s: &mut GuardStream<Flagger>) -> (Vec<u8>, Action) {
    response_headers(host, "200", "text/event-stream");
    assert_eq!(s.on_response_headers(host, false), Action::Continue);
    let mut client = Vec::new();
    let mut paused = false;
    let mut last = Action::Continue;
    for (i, ev) in CHAT_EVENTS.iter().enumerate() {
        if paused {
            host.append_buffer(Dir::Response, ev.as_bytes());
        } else {
            host.set_buffer(Dir::Response, ev.as_bytes());
        }
        let eos = i + 1 == CHAT_EVENTS.len();
        last = s.on_response_body(host, host.buffer(Dir::Response).len(), eos);
        paused = last == Action::Pause;
        if !paused {
            client.extend_from_slice(&host.buffer(Dir::Response));
        }
    }
    (client, last)
}

#[test]
fn a_refused_stream_ends_with_the_safe_answer() {
    let (host, mut s) = start(&policy(&format!(
        r#"{{"on_flagged_answer":"safe_answer","safe_answer":"{SAFE}"}}"#
    )));
    request(&host, &mut s, ApiShape::OpenAiChat, true);
    let (client, _) = feed_stream(&host, &mut s);
    let a = assemble(ApiShape::OpenAiChat, &client);
    assert!(a.done);
    assert_eq!(a.choices[0].content, format!("Fine so far.\n\n{SAFE}"));
    assert_eq!(a.choices[0].finish_reason.as_deref(), Some("stop"));
    assert!(!String::from_utf8_lossy(&client).contains("FLAG"));
    // Exactly: the events before the refusal, then the ending in the upstream's ids.
    let text = String::from_utf8(client).unwrap();
    assert!(text.starts_with(&format!("{}{}", CHAT_EVENTS[0], CHAT_EVENTS[1])));
    assert!(text.ends_with("\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"));
    assert_eq!(text.matches("chatcmpl-up").count(), 4);
    let rec = record(&host);
    assert_eq!(
        rec["fallback"],
        json!({"trigger": "flagged_answer", "outcome": "safe_answer"})
    );
}

#[test]
fn a_refused_stream_ends_with_an_error_event_by_default() {
    for cfg in [
        "{}".to_string(),
        policy(r#"{"on_flagged_answer":"error","on_upstream_failure":"error"}"#),
    ] {
        let (host, mut s) = start(&cfg);
        request(&host, &mut s, ApiShape::OpenAiChat, true);
        let (client, _) = feed_stream(&host, &mut s);
        let err = LocalReply::new(502, "flagged", "the answer was flagged")
            .stream_event(Some(ApiShape::OpenAiChat), RID);
        let mut want = format!("{}{}", CHAT_EVENTS[0], CHAT_EVENTS[1]).into_bytes();
        want.extend_from_slice(&err);
        assert_eq!(client, want, "{cfg}");
        let rec = record(&host);
        assert_eq!(rec["decision"], "block");
        assert_eq!(rec.get("fallback").is_some(), cfg != "{}");
    }
}

#[test]
fn a_refused_stream_waits_for_the_escalation() {
    let (host, mut s) = start(&policy(
        r#"{"on_flagged_answer":"escalate","escalate":{"cluster":"approvals","message":"Review {review_id}."}}"#,
    ));
    request(&host, &mut s, ApiShape::OpenAiChat, true);
    let (client, last) = feed_stream(&host, &mut s);
    // The refusal paused the stream; the rest of the upstream's stream is held meanwhile.
    assert_eq!(last, Action::Pause);
    let body: Value = serde_json::from_slice(&host.state.borrow().callouts[0].body).unwrap();
    assert_eq!(
        body["excerpt_raw"],
        "user: mail bob@example.com\n\nassistant: Fine so far."
    );
    host.set_call_response(Some(201), br#"{"id":"abc"}"#);
    s.on_callout_response(&*host, 1, 12);
    let mut all = client;
    all.extend_from_slice(&host.buffer(Dir::Response));
    let a = assemble(ApiShape::OpenAiChat, &all);
    assert!(a.done);
    assert_eq!(a.choices[0].content, "Fine so far.\n\nReview abc.");
    assert_eq!(host.state.borrow().resumed, vec![Dir::Response]);
    // The upstream's end arrived while waiting: the record is written.
    assert_eq!(record(&host)["fallback"]["review_id"], "abc");
}

#[test]
fn a_stream_cut_after_its_headers_is_recorded_and_counted() {
    for (details, acting, want) in [
        (
            "upstream_reset_after_response_started{protocol_error}",
            true,
            "upstream_cut",
        ),
        ("response_timeout", false, "upstream_cut"),
        ("via_upstream", true, "incomplete"),
        ("", true, "incomplete"),
    ] {
        let cfg = if acting {
            policy(r#"{"on_upstream_failure":"error"}"#)
        } else {
            "{}".to_string()
        };
        let (host, mut s) = start(&cfg);
        request(&host, &mut s, ApiShape::OpenAiChat, true);
        response_headers(&host, "200", "text/event-stream");
        s.on_response_headers(&*host, false);
        host.set_buffer(Dir::Response, CHAT_EVENTS[0].as_bytes());
        s.on_response_body(&*host, CHAT_EVENTS[0].len(), false);
        if !details.is_empty() {
            host.set_property(&["response", "code_details"], details.as_bytes());
        }
        s.on_done(&*host);
        let rec = record(&host);
        assert!(
            rec["reasons"].as_array().unwrap().contains(&json!(want)),
            "{details}: {rec}"
        );
        if want == "upstream_cut" {
            assert_eq!(rec["upstream_cut"]["details"], details);
            assert_eq!(rec["upstream_cut"]["status"], 200);
        }
        let counted = want == "upstream_cut" && acting;
        assert_eq!(
            host.metric("guard.flagger.upstream.cut.failures"),
            i64::from(counted),
            "{details}"
        );
    }
}

#[test]
fn the_rest_of_a_stream_a_filter_below_ended_passes_on() {
    let (host, mut s) = start("{}");
    request(&host, &mut s, ApiShape::OpenAiChat, true);
    response_headers(&host, "200", "text/event-stream");
    s.on_response_headers(&*host, false);
    host.set_property(
        &["guard_fallback"],
        br#"{"trigger":"flagged_answer","outcome":"safe_answer","filter":"below"}"#,
    );
    // Contains FLAG, which this filter would refuse: it is not asked.
    let tail = CHAT_EVENTS[2];
    host.set_buffer(Dir::Response, tail.as_bytes());
    assert_eq!(
        s.on_response_body(&*host, tail.len(), true),
        Action::Continue
    );
    assert_eq!(host.buffer(Dir::Response), tail.as_bytes());
    assert_eq!(record(&host)["decision"], "allow");
    // A whole answer a filter below made is passed on too.
    let (host, mut s) = start("{}");
    request(&host, &mut s, ApiShape::OpenAiChat, false);
    response_headers(&host, "200", "application/json");
    host.set_header(Dir::Response, "x-guard-fallback", Some(b"safe_answer"));
    assert_eq!(s.on_response_headers(&*host, false), Action::Continue);
}

#[test]
fn in_the_combined_filter_a_stream_waits_for_the_escalation_of_an_inner_stage() {
    let (host, inner) = start(&policy(
        r#"{"on_flagged_answer":"escalate","escalate":{"cluster":"approvals","message":"Review {review_id}."}}"#,
    ));
    let (_, outer) = start("{}");
    // Stages in request order: responses run the inner (last) stage first.
    let mut chain = guard_host::chain::ChainStream::new(vec![Box::new(outer), Box::new(inner)]);
    host.set_header(Dir::Request, ":method", Some(b"POST"));
    host.set_header(Dir::Request, ":path", Some(b"/v1/chat/completions"));
    host.set_header(Dir::Request, "content-type", Some(b"application/json"));
    host.set_header(Dir::Request, "x-request-id", Some(RID.as_bytes()));
    let body =
        json!({"model": "m-1", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    assert_eq!(chain.on_request_headers(&*host, false), Action::Pause);
    host.set_buffer(Dir::Request, body.as_bytes());
    assert_eq!(
        chain.on_request_body(&*host, body.len(), true),
        Action::Continue
    );
    response_headers(&host, "200", "text/event-stream");
    assert_eq!(chain.on_response_headers(&*host, false), Action::Continue);
    let mut client = Vec::new();
    let mut paused = false;
    for (i, ev) in CHAT_EVENTS.iter().enumerate() {
        if paused {
            host.append_buffer(Dir::Response, ev.as_bytes());
        } else {
            host.set_buffer(Dir::Response, ev.as_bytes());
        }
        let eos = i + 1 == CHAT_EVENTS.len();
        let a = chain.on_response_body(&*host, host.buffer(Dir::Response).len(), eos);
        paused = a == Action::Pause;
        if !paused {
            client.extend_from_slice(&host.buffer(Dir::Response));
        }
    }
    // Envoy was paused at the refusal and holds the rest of the upstream's stream.
    assert!(paused);
    let answer = br#"{"id":"abc"}"#;
    host.set_call_response(Some(201), answer);
    chain.on_callout_response(&*host, 1, answer.len());
    assert_eq!(host.state.borrow().resumed, vec![Dir::Response]);
    client.extend_from_slice(&host.buffer(Dir::Response));
    let a = assemble(ApiShape::OpenAiChat, &client);
    assert!(a.done);
    assert_eq!(a.choices[0].content, "Fine so far.\n\nReview abc.");
    chain.on_done(&*host);
    let rec = record(&host);
    assert_eq!(rec["filter"], "flagger");
}

/// Refuses at the end of the stream, after releasing everything (the upstream's end included):
/// a scanner that only knows at the end.
struct LateFlagger;

impl GuardFilter for LateFlagger {
    type Settings = Settings;
    type Compiled = Settings;
    type Shared = ();
    const NAME: &'static str = "late";
    const DEFAULT_FAILURE: FailurePolicy = FailurePolicy::FailClosed;

    fn compile(s: Settings, _path: &str) -> Result<Settings> {
        Ok(s)
    }
    fn init_shared(_m: &Rc<Metrics>, _c: &FilterConfig<Settings>) {}
    fn new_stream() -> Self {
        LateFlagger
    }
    fn on_request_body(&mut self, _cx: &mut Cx<'_, Self>, _body: &[u8]) -> Result<Outcome> {
        Ok(Outcome::Continue)
    }
    fn response_plan(&mut self, _cx: &mut Cx<'_, Self>, _streaming: bool) -> ResponsePlan {
        ResponsePlan::Stream
    }
    fn on_stream_end(&mut self, cx: &mut Cx<'_, Self>, _out: &mut Vec<u8>) -> Result<()> {
        cx.refuse_stream(LocalReply::new(502, "late", "found at the end"));
        Ok(())
    }
}

#[test]
fn a_refusal_that_comes_with_the_upstreams_end_still_ends_with_the_safe_answer() {
    let host = Rc::new(FakeHost::new());
    let cfg = FilterConfig::parse::<Settings, _>(
        policy(&format!(
            r#"{{"on_flagged_answer":"safe_answer","safe_answer":"{SAFE}"}}"#
        ))
        .as_bytes(),
        LateFlagger::DEFAULT_FAILURE,
        LateFlagger::compile,
    )
    .unwrap();
    let metrics = Rc::new(Metrics::new(host.clone() as Rc<dyn Host>));
    let mut s = GuardStream::<LateFlagger>::new(Rc::new(cfg), Rc::new(()), metrics);
    host.set_header(Dir::Request, ":method", Some(b"POST"));
    host.set_header(Dir::Request, ":path", Some(b"/v1/chat/completions"));
    host.set_header(Dir::Request, "x-request-id", Some(RID.as_bytes()));
    s.on_request_headers(&*host, false);
    let body =
        json!({"model": "m-1", "stream": true, "messages": [{"role": "user", "content": "x"}]})
            .to_string();
    host.set_buffer(Dir::Request, body.as_bytes());
    s.on_request_body(&*host, body.len(), true);
    response_headers(&host, "200", "text/event-stream");
    s.on_response_headers(&*host, false);
    let mut client = Vec::new();
    for (i, ev) in [CHAT_EVENTS[0], CHAT_EVENTS[1], CHAT_EVENTS[3]]
        .iter()
        .enumerate()
    {
        host.set_buffer(Dir::Response, ev.as_bytes());
        s.on_response_body(&*host, ev.len(), i == 2);
        client.extend_from_slice(&host.buffer(Dir::Response));
    }
    let a = assemble(ApiShape::OpenAiChat, &client);
    assert!(a.done);
    assert_eq!(a.choices[0].content, format!("Fine so far.\n\n{SAFE}"));
    // One end only: the upstream's finish chunk and [DONE] were replaced by ours.
    let text = String::from_utf8(client).unwrap();
    assert_eq!(text.matches("[DONE]").count(), 1, "{text}");
    assert_eq!(
        text.matches("\"finish_reason\":\"stop\"").count(),
        1,
        "{text}"
    );
}
