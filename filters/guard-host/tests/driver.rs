//! The stream driver against the recording fake host: buffering with a read index over
//! Envoy's cumulative body size, limits (0, exactly fits, one over), trailers, compressed
//! bodies, the failure policy in both directions, streaming errors, and the audit record.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::type_complexity
)]

use guard_core::config::{FailurePolicy, FilterConfig};
use guard_core::error::{Error, Result};
use guard_host::driver::{Action, Chunk, Cx, GuardFilter, GuardStream, Outcome, ResponsePlan};
use guard_host::fake::FakeHost;
use guard_host::host::{Dir, Host};
use guard_host::metrics::Metrics;
use serde::Deserialize;
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;

thread_local! {
    static SEEN: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// Whole answers the probes judged, in the order they judged them.
    static SEEN_ANSWERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ProbeSettings {
    replace_with: Option<String>,
    buffer_response: bool,
    callout: bool,
    /// Hold a whole answer (headers too) and ask the judge about it before releasing it.
    response_callout: bool,
}

/// A filter that records what it was shown, optionally rewrites the request, and in streams
/// withholds bytes until a blank line; a chunk containing `BOOM` is an error.
struct Probe {
    held: Vec<u8>,
}

impl GuardFilter for Probe {
    type Settings = ProbeSettings;
    type Compiled = ProbeSettings;
    type Shared = ();
    const NAME: &'static str = "probe";
    const DEFAULT_FAILURE: FailurePolicy = FailurePolicy::FailClosed;

    fn compile(s: ProbeSettings, _path: &str) -> Result<ProbeSettings> {
        Ok(s)
    }
    fn init_shared(_m: &Rc<Metrics>, _c: &FilterConfig<ProbeSettings>) {}
    fn new_stream() -> Self {
        Probe { held: Vec::new() }
    }
    fn on_request_body(&mut self, cx: &mut Cx<'_, Self>, body: &[u8]) -> Result<Outcome> {
        SEEN.with(|s| s.borrow_mut().push(body.to_vec()));
        serde_json::from_slice::<Value>(body).map_err(|e| Error::unparsable(e.to_string()))?;
        if cx.settings().callout {
            return Ok(Outcome::CallOut(guard_host::CallOut {
                method: "POST",
                cluster: "judge".into(),
                authority: "judge".into(),
                path: "/classify".into(),
                headers: vec![],
                body: body.to_vec(),
                timeout_ms: 250,
            }));
        }
        Ok(match &cx.settings().replace_with {
            Some(r) => Outcome::Replace(r.as_bytes().to_vec()),
            None => Outcome::Continue,
        })
    }
    fn on_callout(
        &mut self,
        _cx: &mut Cx<'_, Self>,
        result: guard_host::CallOutResult,
    ) -> Result<Outcome> {
        Ok(match result {
            guard_host::CallOutResult::Response { status: 200, body } if body == b"block" => {
                Outcome::Reply(guard_core::verdict::LocalReply::new(
                    400,
                    "judged",
                    "the judge said no",
                ))
            }
            guard_host::CallOutResult::Response { status: 200, body }
                if body.starts_with(b"replace:") =>
            {
                Outcome::Replace(body.get(8..).unwrap_or_default().to_vec())
            }
            guard_host::CallOutResult::Response { .. } => Outcome::Continue,
            guard_host::CallOutResult::Failed => Outcome::Reply(
                guard_core::verdict::LocalReply::new(400, "judge_down", "no judge"),
            ),
        })
    }
    fn response_plan(&mut self, cx: &mut Cx<'_, Self>, streaming: bool) -> ResponsePlan {
        if streaming {
            ResponsePlan::Stream
        } else if cx.settings().response_callout {
            ResponsePlan::Buffer { hold_headers: true }
        } else if cx.settings().buffer_response {
            ResponsePlan::Buffer {
                hold_headers: false,
            }
        } else {
            ResponsePlan::Skip
        }
    }
    fn on_response_body(&mut self, cx: &mut Cx<'_, Self>, body: &[u8]) -> Result<Outcome> {
        SEEN_ANSWERS.with(|s| s.borrow_mut().push(body.to_vec()));
        serde_json::from_slice::<Value>(body).map_err(|e| Error::unparsable(e.to_string()))?;
        if cx.settings().response_callout {
            return Ok(Outcome::CallOut(guard_host::CallOut {
                method: "POST",
                cluster: "judge".into(),
                authority: "judge".into(),
                path: "/answers".into(),
                headers: vec![],
                body: body.to_vec(),
                timeout_ms: 250,
            }));
        }
        Ok(Outcome::Continue)
    }
    fn on_stream_chunk(
        &mut self,
        _cx: &mut Cx<'_, Self>,
        chunk: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Chunk> {
        if chunk.windows(4).any(|w| w == b"BOOM") {
            return Err(Error::unparsable("boom"));
        }
        self.held.extend_from_slice(chunk);
        if let Some(pos) = self.held.windows(2).rposition(|w| w == b"\n\n") {
            out.extend(self.held.drain(..pos + 2));
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

fn stream(config: &str) -> (Rc<FakeHost>, GuardStream<Probe>) {
    let host = Rc::new(FakeHost::new());
    let cfg = FilterConfig::parse::<ProbeSettings, _>(
        config.as_bytes(),
        Probe::DEFAULT_FAILURE,
        Probe::compile,
    )
    .unwrap();
    let metrics = Rc::new(Metrics::new(host.clone() as Rc<dyn Host>));
    (host, GuardStream::new(Rc::new(cfg), Rc::new(()), metrics))
}

fn post(host: &FakeHost) {
    host.set_header(Dir::Request, ":method", Some(b"POST"));
    host.set_header(Dir::Request, ":path", Some(b"/v1/chat/completions"));
    host.set_header(Dir::Request, "content-type", Some(b"application/json"));
    host.set_header(Dir::Request, "x-request-id", Some(b"rid-1"));
}

/// Feed a request body the way Envoy does while the filter pauses: the buffer grows, and the
/// size passed is the total so far.
fn feed_request(
    host: &FakeHost,
    s: &mut GuardStream<Probe>,
    body: &[u8],
    chunk: usize,
    trailers: bool,
) -> Action {
    let pieces: Vec<&[u8]> = body.chunks(chunk.max(1)).collect();
    let mut last = Action::Continue;
    for (i, piece) in pieces.iter().enumerate() {
        host.append_buffer(Dir::Request, piece);
        let eos = !trailers && i + 1 == pieces.len();
        last = s.on_request_body(host, host.buffer(Dir::Request).len(), eos);
        if last == Action::Continue || host.local_reply().is_some() {
            return last;
        }
    }
    if trailers {
        last = s.on_request_trailers(host);
    }
    last
}

fn record(host: &FakeHost) -> Value {
    serde_json::from_slice(&host.get_property(&["guard_probe"]).expect("record written")).unwrap()
}

const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hello world"}]}"#;

#[test]
fn body_is_seen_whole_for_every_chunking_with_and_without_trailers() {
    for chunk in 1..=BODY.len() {
        for trailers in [false, true] {
            SEEN.with(|s| s.borrow_mut().clear());
            let (host, mut s) = stream("{}");
            post(&host);
            assert_eq!(s.on_request_headers(&*host, false), Action::Pause);
            assert_eq!(
                feed_request(&host, &mut s, BODY, chunk, trailers),
                Action::Continue,
                "chunk {chunk}"
            );
            SEEN.with(|seen| {
                assert_eq!(
                    seen.borrow().as_slice(),
                    &[BODY.to_vec()],
                    "chunk {chunk} trailers {trailers}"
                )
            });
        }
    }
}

#[test]
fn limits_zero_exactly_fits_and_one_over() {
    let n = BODY.len();
    let cases = [
        ("limit 0, body", 0, BODY, Some(413)),
        ("exactly fits", n, BODY, None),
        ("one over", n - 1, BODY, Some(413)),
    ];
    for (name, limit, body, want) in cases {
        for chunk in [1, 7, n] {
            let (host, mut s) = stream(&format!(
                r#"{{"policies":{{"default":{{"max_request_body_bytes":{limit}}}}}}}"#
            ));
            post(&host);
            s.on_request_headers(&*host, false);
            feed_request(&host, &mut s, body, chunk, false);
            assert_eq!(
                host.local_reply().map(|r| r.status),
                want,
                "{name}, chunk {chunk}"
            );
        }
    }
    // Limit 0 and no body at all: nothing to refuse.
    let (host, mut s) = stream(r#"{"policies":{"default":{"max_request_body_bytes":0}}}"#);
    post(&host);
    assert_eq!(s.on_request_headers(&*host, true), Action::Continue);
    assert!(host.local_reply().is_none());
    s.on_done(&*host);
    assert_eq!(record(&host)["reasons"][0], "no_request_body");
}

#[test]
fn failure_policy_table() {
    struct Case {
        name: &'static str,
        body: &'static [u8],
        content_encoding: Option<&'static [u8]>,
        closed: (u16, &'static str),
    }
    let cases = [
        Case {
            name: "malformed",
            body: b"{\"model\":",
            content_encoding: None,
            closed: (400, "unparsable_body"),
        },
        Case {
            name: "not utf-8",
            body: b"{\"a\":\"\xff\"}",
            content_encoding: None,
            closed: (400, "unparsable_body"),
        },
        Case {
            name: "gzip",
            body: b"\x1f\x8b\x08",
            content_encoding: Some(b"gzip"),
            closed: (415, "compressed_body"),
        },
    ];
    for c in cases {
        for policy in ["fail_closed", "fail_open"] {
            let (host, mut s) = stream(&format!(
                r#"{{"policies":{{"default":{{"failure_policy":"{policy}"}}}}}}"#
            ));
            post(&host);
            if let Some(enc) = c.content_encoding {
                host.set_header(Dir::Request, "content-encoding", Some(enc));
            }
            let a = s.on_request_headers(&*host, false);
            if a == Action::Pause {
                feed_request(&host, &mut s, c.body, 3, false);
            }
            s.on_done(&*host);
            let rec = record(&host);
            assert_eq!(rec["reasons"][0], c.closed.1, "{} {policy}: {rec}", c.name);
            if policy == "fail_closed" {
                let reply = host.local_reply().expect("local reply");
                assert_eq!(reply.status, c.closed.0, "{}", c.name);
                let body: Value = serde_json::from_slice(&reply.body).unwrap();
                assert_eq!(body["error"]["code"], c.closed.1);
                assert_eq!(body["error"]["request_id"], "rid-1");
                assert_eq!(rec["decision"], "block");
            } else {
                assert!(host.local_reply().is_none(), "{}", c.name);
                assert_eq!(rec["decision"], "skipped");
            }
        }
    }
}

#[test]
fn replace_fixes_content_length_and_strips_accept_encoding() {
    let (host, mut s) = stream(r#"{"policies":{"default":{"replace_with":"{\"x\":1}"}}}"#);
    post(&host);
    host.set_header(
        Dir::Request,
        "content-length",
        Some(BODY.len().to_string().as_bytes()),
    );
    host.set_header(Dir::Request, "accept-encoding", Some(b"gzip"));
    s.on_request_headers(&*host, false);
    assert_eq!(host.header(Dir::Request, "accept-encoding"), None);
    feed_request(&host, &mut s, BODY, 5, false);
    assert_eq!(host.buffer(Dir::Request), br#"{"x":1}"#);
    assert_eq!(
        host.header(Dir::Request, "content-length").as_deref(),
        Some(&b"7"[..])
    );
}

#[test]
fn non_llm_requests_are_not_touched() {
    let (host, mut s) = stream("{}");
    host.set_header(Dir::Request, ":method", Some(b"GET"));
    host.set_header(Dir::Request, ":path", Some(b"/healthz"));
    host.set_header(Dir::Request, "accept-encoding", Some(b"gzip"));
    assert_eq!(s.on_request_headers(&*host, true), Action::Continue);
    assert!(s.info().is_none());
    assert!(host.header(Dir::Request, "accept-encoding").is_some());
    s.on_done(&*host);
    assert!(host.get_property(&["guard_probe"]).is_none());
}

fn streamed_response(config: &str) -> (Rc<FakeHost>, GuardStream<Probe>) {
    let (host, mut s) = stream(config);
    post(&host);
    s.on_request_headers(&*host, false);
    feed_request(&host, &mut s, BODY, BODY.len(), false);
    host.set_header(Dir::Response, ":status", Some(b"200"));
    host.set_header(Dir::Response, "content-type", Some(b"text/event-stream"));
    assert_eq!(s.on_response_headers(&*host, false), Action::Continue);
    (host, s)
}

/// Deliver one streamed chunk (the filter always continues, so the buffer is just this chunk)
/// and return what the client gets.
fn chunk(host: &FakeHost, s: &mut GuardStream<Probe>, bytes: &[u8], eos: bool) -> Vec<u8> {
    host.set_buffer(Dir::Response, bytes);
    assert_eq!(s.on_response_body(host, bytes.len(), eos), Action::Continue);
    host.buffer(Dir::Response)
}

#[test]
fn stream_holds_back_and_flushes_at_the_end() {
    let (host, mut s) = streamed_response("{}");
    let mut client = Vec::new();
    for piece in [&b"data: a"[..], b"\n\ndata: b", b"\n", b"\ndata: tail"] {
        client.extend(chunk(&host, &mut s, piece, false));
    }
    assert_eq!(client, b"data: a\n\ndata: b\n\n");
    client.extend(chunk(&host, &mut s, b"", true));
    assert_eq!(client, b"data: a\n\ndata: b\n\ndata: tail");
    assert_eq!(record(&host)["decision"], "allow");
}

#[test]
fn stream_error_fail_open_passes_everything_on() {
    let (host, mut s) =
        streamed_response(r#"{"policies":{"default":{"failure_policy":"fail_open"}}}"#);
    let mut client = Vec::new();
    client.extend(chunk(&host, &mut s, b"data: a\n\ndata: par", false));
    client.extend(chunk(&host, &mut s, b"tial BOOM\n\n", false));
    client.extend(chunk(&host, &mut s, b"data: after\n\n", true));
    assert_eq!(client, b"data: a\n\ndata: partial BOOM\n\ndata: after\n\n");
    let rec = record(&host);
    assert_eq!(rec["decision"], "skipped");
    assert_eq!(rec["reasons"][0], "unparsable_body");
}

#[test]
fn stream_error_fail_closed_ends_with_an_error_event() {
    let (host, mut s) = streamed_response("{}");
    let mut client = Vec::new();
    client.extend(chunk(&host, &mut s, b"data: a\n\n", false));
    client.extend(chunk(&host, &mut s, b"data: BOOM\n\n", false));
    client.extend(chunk(&host, &mut s, b"data: never\n\n", true));
    let text = String::from_utf8(client).unwrap();
    assert!(text.starts_with("data: a\n\ndata: {\"error\""), "{text}");
    assert!(
        text.ends_with("data: [DONE]\n\n") && !text.contains("never"),
        "{text}"
    );
    assert_eq!(record(&host)["decision"], "block");
}

#[test]
fn compressed_answer_on_fail_closed_is_replaced() {
    let (host, mut s) = stream(r#"{"policies":{"default":{"buffer_response":true}}}"#);
    post(&host);
    s.on_request_headers(&*host, false);
    feed_request(&host, &mut s, BODY, BODY.len(), false);
    host.set_header(Dir::Response, ":status", Some(b"200"));
    host.set_header(Dir::Response, "content-type", Some(b"application/json"));
    host.set_header(Dir::Response, "content-encoding", Some(b"gzip"));
    assert_eq!(s.on_response_headers(&*host, false), Action::Pause);
    host.set_buffer(Dir::Response, b"\x1f\x8b...");
    assert_eq!(s.on_response_body(&*host, 5, false), Action::Pause);
    assert_eq!(s.on_response_body(&*host, 5, true), Action::Continue);
    assert_eq!(
        host.header(Dir::Response, ":status").as_deref(),
        Some(&b"502"[..])
    );
    assert_eq!(host.header(Dir::Response, "content-encoding"), None);
    let body: Value = serde_json::from_slice(&host.buffer(Dir::Response)).unwrap();
    assert_eq!(body["error"]["code"], "compressed_body");
}

#[test]
fn oversize_answer_fail_closed_replies_and_record_is_written_once() {
    let (host, mut s) =
        stream(r#"{"policies":{"default":{"buffer_response":true,"max_response_body_bytes":4}}}"#);
    post(&host);
    s.on_request_headers(&*host, false);
    feed_request(&host, &mut s, BODY, BODY.len(), false);
    host.set_header(Dir::Response, ":status", Some(b"200"));
    host.set_header(Dir::Response, "content-type", Some(b"application/json"));
    // Fail-closed buffering holds the headers, so the answer can still be replaced.
    assert_eq!(s.on_response_headers(&*host, false), Action::Pause);
    host.set_buffer(Dir::Response, b"{\"a\":1}");
    s.on_response_body(&*host, 7, false);
    assert_eq!(host.local_reply().map(|r| r.status), Some(502));
    s.on_done(&*host);
    assert_eq!(
        host.metric("guard.probe.decision.block.reason.body_too_large.decisions"),
        1
    );
}

#[test]
fn sniffed_bodies_decide_whether_the_request_is_ours() {
    for (body, ours) in [
        (BODY, true),
        (&br#"{"query":"select 1"}"#[..], false),
        (&b"plain text"[..], false),
    ] {
        let (host, mut s) = stream("{}");
        host.set_header(Dir::Request, ":method", Some(b"POST"));
        host.set_header(Dir::Request, ":path", Some(b"/internal/llm"));
        host.set_header(Dir::Request, "accept-encoding", Some(b"gzip"));
        assert_eq!(s.on_request_headers(&*host, false), Action::Pause);
        assert_eq!(
            feed_request(&host, &mut s, body, 4, false),
            Action::Continue
        );
        assert_eq!(
            s.info().is_some(),
            ours,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(host.header(Dir::Request, "accept-encoding").is_none(), ours);
        assert!(host.local_reply().is_none());
    }
}

#[test]
fn callout_waits_then_resumes_or_replies() {
    let cases: [(&str, Option<u16>, &[u8], Option<u16>, bool); 4] = [
        ("judge allows", Some(200), b"ok", None, true),
        ("judge blocks", Some(200), b"block", Some(400), false),
        ("judge errors", Some(500), b"", None, true),
        ("timeout or reset", None, b"", Some(400), false),
    ];
    for (name, status, body, reply, resumed) in cases {
        let (host, mut s) = stream(r#"{"policies":{"default":{"callout":true}}}"#);
        post(&host);
        s.on_request_headers(&*host, false);
        assert_eq!(
            feed_request(&host, &mut s, BODY, BODY.len(), false),
            Action::Pause,
            "{name}: must wait"
        );
        let call = host
            .state
            .borrow()
            .callouts
            .first()
            .cloned()
            .expect("dispatched");
        assert_eq!(call.cluster, "judge");
        assert_eq!(call.timeout_ms, 250);
        assert!(call
            .headers
            .iter()
            .any(|(k, v)| k == ":path" && v == "/classify"));
        host.set_call_response(status, body);
        s.on_callout_response(&*host, 99, body.len()); // a stale token is ignored
        assert!(
            host.local_reply().is_none() && host.state.borrow().resumed.is_empty(),
            "{name}"
        );
        s.on_callout_response(&*host, 1, body.len());
        assert_eq!(host.local_reply().map(|r| r.status), reply, "{name}");
        assert_eq!(
            host.state.borrow().resumed == vec![Dir::Request],
            resumed,
            "{name}"
        );
    }
    // Envoy refusing the call at once goes to the same decision without waiting.
    let (host, mut s) = stream(r#"{"policies":{"default":{"callout":true}}}"#);
    host.state.borrow_mut().refuse_callouts = true;
    post(&host);
    s.on_request_headers(&*host, false);
    feed_request(&host, &mut s, BODY, BODY.len(), false);
    assert_eq!(host.local_reply().map(|r| r.status), Some(400));
}

// ------------------------------------------------------------------------------------------------
// The combined filter (`guard_host::chain::ChainStream`): stages see what they would see as
// separate Envoy filters.

fn probe_stage(config: &str, host: &Rc<FakeHost>) -> Box<dyn guard_host::chain::Stage> {
    let cfg = FilterConfig::parse::<ProbeSettings, _>(
        config.as_bytes(),
        Probe::DEFAULT_FAILURE,
        Probe::compile,
    )
    .unwrap();
    let metrics = Rc::new(Metrics::new(host.clone() as Rc<dyn Host>));
    Box::new(GuardStream::<Probe>::new(
        Rc::new(cfg),
        Rc::new(()),
        metrics,
    ))
}

/// Feed a request body to the chain as Envoy does: the buffer grows while it pauses, holds only
/// the new chunk once it continued.
fn feed_chain(
    host: &FakeHost,
    chain: &mut guard_host::chain::ChainStream,
    body: &[u8],
    chunk: usize,
) -> Action {
    let pieces: Vec<&[u8]> = body.chunks(chunk.max(1)).collect();
    let mut last = Action::Continue;
    for (i, piece) in pieces.iter().enumerate() {
        host.append_buffer(Dir::Request, piece);
        last = chain.on_request_body(host, host.buffer(Dir::Request).len(), i + 1 == pieces.len());
        if host.local_reply().is_some() {
            return last;
        }
    }
    last
}

#[test]
fn chain_stages_see_what_the_stage_before_released_for_every_chunking() {
    const NEW: &str = r#"{"rewritten":true}"#;
    for chunk in 1..=BODY.len() {
        SEEN.with(|s| s.borrow_mut().clear());
        let host = Rc::new(FakeHost::new());
        let first = probe_stage(
            &format!(
                r#"{{"policies":{{"default":{{"replace_with":{}}}}}}}"#,
                serde_json::to_string(NEW).unwrap()
            ),
            &host,
        );
        let second = probe_stage("{}", &host);
        let mut chain = guard_host::chain::ChainStream::new(vec![first, second]);
        post(&host);
        assert_eq!(chain.on_request_headers(&*host, false), Action::Pause);
        assert_eq!(
            feed_chain(&host, &mut chain, BODY, chunk),
            Action::Continue,
            "chunk {chunk}"
        );
        // The first stage saw the original whole, the second its rewrite; Envoy forwards it.
        SEEN.with(|s| {
            assert_eq!(
                s.borrow().as_slice(),
                &[BODY.to_vec(), NEW.as_bytes().to_vec()],
                "chunk {chunk}"
            )
        });
        assert_eq!(host.buffer(Dir::Request), NEW.as_bytes(), "chunk {chunk}");
        chain.on_done(&*host);
    }
}

#[test]
fn chain_local_reply_ends_the_direction_and_call_outs_resume_through_the_chain() {
    for (answer, reply, resumed) in [(&b"ok"[..], None, true), (&b"block"[..], Some(400), false)] {
        SEEN.with(|s| s.borrow_mut().clear());
        let host = Rc::new(FakeHost::new());
        let judge = probe_stage(r#"{"policies":{"default":{"callout":true}}}"#, &host);
        let after = probe_stage("{}", &host);
        let mut chain = guard_host::chain::ChainStream::new(vec![judge, after]);
        post(&host);
        chain.on_request_headers(&*host, false);
        assert_eq!(
            feed_chain(&host, &mut chain, BODY, 7),
            Action::Pause,
            "waits for the judge"
        );
        SEEN.with(|s| assert_eq!(s.borrow().len(), 1, "only the judge saw the body so far"));
        host.set_call_response(Some(200), answer);
        chain.on_callout_response(&*host, 1, answer.len());
        assert_eq!(host.local_reply().map(|r| r.status), reply);
        assert_eq!(host.state.borrow().resumed == vec![Dir::Request], resumed);
        // Allowed: the next stage got the body, and Envoy forwards it unchanged.
        let seen = SEEN.with(|s| s.borrow().len());
        assert_eq!(seen, if resumed { 2 } else { 1 });
        if resumed {
            assert_eq!(host.buffer(Dir::Request), BODY);
        }
        chain.on_done(&*host);
    }
}

#[test]
fn chain_streams_pass_every_byte_in_order_through_holding_stages() {
    let stream: &[u8] = b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
    for chunk in 1..=stream.len() {
        let host = Rc::new(FakeHost::new());
        let mut chain = guard_host::chain::ChainStream::new(vec![
            probe_stage("{}", &host),
            probe_stage("{}", &host),
        ]);
        post(&host);
        chain.on_request_headers(&*host, false);
        feed_chain(&host, &mut chain, BODY, BODY.len());
        host.set_header(Dir::Response, ":status", Some(b"200"));
        host.set_header(Dir::Response, "content-type", Some(b"text/event-stream"));
        chain.on_response_headers(&*host, false);
        let pieces: Vec<&[u8]> = stream.chunks(chunk).collect();
        let mut out = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            host.set_buffer(Dir::Response, piece);
            let a = chain.on_response_body(&*host, piece.len(), i + 1 == pieces.len());
            assert_eq!(a, Action::Continue, "chunk {chunk}");
            out.extend(host.buffer(Dir::Response));
        }
        assert_eq!(out, stream, "chunk {chunk}");
        chain.on_done(&*host);
    }
}

const ANSWER: &[u8] = br#"{"choices":[{"message":{"role":"assistant","content":"hi"}}]}"#;

/// A two-stage chain whose second stage (the first on the way back) holds the whole answer
/// for a call-out: `[after, judge]`, so responses run judge → after. Returns the host and the
/// chain once the judge waits for its answer.
fn chain_waiting_for_answer_judge(
    chunk: usize,
    trailers: bool,
) -> (Rc<FakeHost>, guard_host::chain::ChainStream) {
    SEEN_ANSWERS.with(|s| s.borrow_mut().clear());
    let host = Rc::new(FakeHost::new());
    let after = probe_stage(
        r#"{"policies":{"default":{"buffer_response":true}}}"#,
        &host,
    );
    let judge = probe_stage(
        r#"{"policies":{"default":{"response_callout":true}}}"#,
        &host,
    );
    let mut chain = guard_host::chain::ChainStream::new(vec![after, judge]);
    post(&host);
    assert_eq!(chain.on_request_headers(&*host, false), Action::Pause);
    assert_eq!(
        feed_chain(&host, &mut chain, BODY, BODY.len()),
        Action::Continue
    );
    host.set_buffer(Dir::Request, b"");
    host.set_header(Dir::Response, ":status", Some(b"200"));
    host.set_header(Dir::Response, "content-type", Some(b"application/json"));
    assert_eq!(
        chain.on_response_headers(&*host, false),
        Action::Pause,
        "the judge holds the headers"
    );
    // Envoy buffers while the chain pauses: the buffer grows, the size is the total so far.
    let pieces: Vec<&[u8]> = ANSWER.chunks(chunk.max(1)).collect();
    for (i, piece) in pieces.iter().enumerate() {
        host.append_buffer(Dir::Response, piece);
        let eos = !trailers && i + 1 == pieces.len();
        let a = chain.on_response_body(&*host, host.buffer(Dir::Response).len(), eos);
        assert_eq!(a, Action::Pause, "chunk {chunk} piece {i}");
    }
    if trailers {
        assert_eq!(chain.on_response_trailers(&*host), Action::Pause);
    }
    let calls = host.state.borrow().callouts.clone();
    assert_eq!(calls.len(), 1, "chunk {chunk}: the judge called out once");
    assert!(calls.iter().any(|c| c.body == ANSWER
        && c.headers
            .iter()
            .any(|(k, v)| k == ":path" && v == "/answers")));
    SEEN_ANSWERS.with(|s| {
        assert_eq!(
            s.borrow().as_slice(),
            &[ANSWER.to_vec()],
            "only the judge saw the answer so far"
        )
    });
    assert!(host.state.borrow().resumed.is_empty());
    (host, chain)
}

/// A response-phase call-out in a two-stage chain: the stage that holds the answer resumes in
/// the response direction (its position in the reversed order), what it releases (as is, or
/// replaced, or replaced by its refusal) flows on through the later response stage, and Envoy's
/// response is resumed with exactly that.
#[test]
fn chain_response_call_outs_resume_the_answer_through_the_later_stages() {
    const NEW: &[u8] = br#"{"choices":[{"message":{"role":"assistant","content":"edited"}}]}"#;
    let mut replace = b"replace:".to_vec();
    replace.extend_from_slice(NEW);
    for chunk in [1, 7, ANSWER.len()] {
        for trailers in [false, true] {
            for (name, answer, status) in [
                ("allows", &b"ok"[..], "200"),
                ("replaces", &replace[..], "200"),
                ("refuses", &b"block"[..], "400"),
            ] {
                let ctx = format!("{name} chunk {chunk} trailers {trailers}");
                let (host, mut chain) = chain_waiting_for_answer_judge(chunk, trailers);
                host.set_call_response(Some(200), answer);
                // A stale token changes nothing.
                chain.on_callout_response(&*host, 99, answer.len());
                assert!(host.state.borrow().resumed.is_empty(), "{ctx}");
                chain.on_callout_response(&*host, 1, answer.len());
                assert_eq!(
                    host.state.borrow().resumed,
                    vec![Dir::Response],
                    "{ctx}: Envoy's response resumed once"
                );
                assert!(host.local_reply().is_none(), "{ctx}");
                let out = host.buffer(Dir::Response);
                match name {
                    "allows" => assert_eq!(out, ANSWER, "{ctx}"),
                    "replaces" => {
                        assert_eq!(out, NEW, "{ctx}");
                        assert_eq!(
                            host.header_value(Dir::Response, "content-length"),
                            Some(NEW.len().to_string().into_bytes()),
                            "{ctx}"
                        );
                    }
                    _ => {
                        let v: Value = serde_json::from_slice(&out).unwrap();
                        assert!(v.to_string().contains("judged"), "{ctx}: {v}");
                        assert_eq!(
                            host.header_value(Dir::Response, "x-guard-reason"),
                            Some(b"judged".to_vec()),
                            "{ctx}"
                        );
                    }
                }
                assert_eq!(
                    host.header_value(Dir::Response, ":status"),
                    Some(status.as_bytes().to_vec()),
                    "{ctx}"
                );
                // The later response stage judged exactly what the judge released.
                SEEN_ANSWERS.with(|s| {
                    let seen = s.borrow();
                    assert_eq!(seen.len(), 2, "{ctx}");
                    assert_eq!(seen.get(1).map(Vec::as_slice), Some(&out[..]), "{ctx}");
                });
                // The same token again (a duplicate delivery) is ignored.
                chain.on_callout_response(&*host, 1, answer.len());
                assert_eq!(host.state.borrow().resumed.len(), 1, "{ctx}");
                chain.on_done(&*host);
            }
        }
    }
}

/// A stage that answers locally from a response-phase call-out ends the response: the later
/// stages never see the answer, and Envoy is not resumed (its local reply takes over).
#[test]
fn chain_local_reply_from_a_response_call_out_ends_the_response() {
    /// Holds the answer, calls out at its end, answers locally when the call-out returns.
    struct Replier {
        token: Option<u32>,
    }
    impl guard_host::chain::Stage for Replier {
        fn on_request_headers(&mut self, _: &dyn Host, _: bool) -> Action {
            Action::Continue
        }
        fn on_request_body(&mut self, _: &dyn Host, _: usize, _: bool) -> Action {
            Action::Continue
        }
        fn on_request_trailers(&mut self, _: &dyn Host) -> Action {
            Action::Continue
        }
        fn on_response_headers(&mut self, _: &dyn Host, _: bool) -> Action {
            Action::Pause
        }
        fn on_response_body(&mut self, host: &dyn Host, _: usize, eos: bool) -> Action {
            if eos {
                self.token = host.dispatch_http_call("judge", &[], b"", 250);
            }
            Action::Pause
        }
        fn on_response_trailers(&mut self, _: &dyn Host) -> Action {
            Action::Pause
        }
        fn on_callout_response(&mut self, host: &dyn Host, token: u32, _: usize) {
            if Some(token) == self.token {
                host.send_local_reply(403, &[], b"no");
            }
        }
        fn on_done(&mut self, _: &dyn Host) {}
    }
    SEEN_ANSWERS.with(|s| s.borrow_mut().clear());
    let host = Rc::new(FakeHost::new());
    let after = probe_stage(
        r#"{"policies":{"default":{"buffer_response":true}}}"#,
        &host,
    );
    let mut chain =
        guard_host::chain::ChainStream::new(vec![after, Box::new(Replier { token: None })]);
    post(&host);
    chain.on_request_headers(&*host, false);
    feed_chain(&host, &mut chain, BODY, BODY.len());
    host.set_header(Dir::Response, ":status", Some(b"200"));
    host.set_header(Dir::Response, "content-type", Some(b"application/json"));
    assert_eq!(chain.on_response_headers(&*host, false), Action::Pause);
    host.set_buffer(Dir::Response, ANSWER);
    assert_eq!(
        chain.on_response_body(&*host, ANSWER.len(), true),
        Action::Pause
    );
    host.set_call_response(Some(200), b"");
    chain.on_callout_response(&*host, 1, 0);
    assert_eq!(host.local_reply().map(|r| r.status), Some(403));
    assert!(host.state.borrow().resumed.is_empty());
    SEEN_ANSWERS.with(|s| assert!(s.borrow().is_empty(), "the later stage saw nothing"));
    chain.on_done(&*host);
}

/// Request- and response-phase call-outs of one chain each resume their own direction.
#[test]
fn chain_call_outs_resume_the_direction_they_were_made_in() {
    SEEN_ANSWERS.with(|s| s.borrow_mut().clear());
    let host = Rc::new(FakeHost::new());
    let after = probe_stage(
        r#"{"policies":{"default":{"buffer_response":true}}}"#,
        &host,
    );
    let judge = probe_stage(
        r#"{"policies":{"default":{"callout":true,"response_callout":true}}}"#,
        &host,
    );
    let mut chain = guard_host::chain::ChainStream::new(vec![after, judge]);
    post(&host);
    chain.on_request_headers(&*host, false);
    assert_eq!(
        feed_chain(&host, &mut chain, BODY, BODY.len()),
        Action::Pause
    );
    host.set_call_response(Some(200), b"ok");
    chain.on_callout_response(&*host, 1, 2);
    assert_eq!(host.state.borrow().resumed, vec![Dir::Request]);
    assert_eq!(host.buffer(Dir::Request), BODY);
    host.set_header(Dir::Response, ":status", Some(b"200"));
    host.set_header(Dir::Response, "content-type", Some(b"application/json"));
    assert_eq!(chain.on_response_headers(&*host, false), Action::Pause);
    host.set_buffer(Dir::Response, ANSWER);
    assert_eq!(
        chain.on_response_body(&*host, ANSWER.len(), true),
        Action::Pause
    );
    assert_eq!(host.state.borrow().callouts.len(), 2);
    chain.on_callout_response(&*host, 2, 2);
    assert_eq!(
        host.state.borrow().resumed,
        vec![Dir::Request, Dir::Response]
    );
    assert_eq!(host.buffer(Dir::Response), ANSWER);
    SEEN_ANSWERS.with(|s| assert_eq!(s.borrow().len(), 2));
    chain.on_done(&*host);
}
