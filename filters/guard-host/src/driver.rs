//! The HTTP stream driver every guard filter shares. It owns the proxy-wasm pitfalls once:
//!
//! - request classification (API shape from path or body), per-route policy selection (route
//!   metadata, then route name), request id, caller identity (header or `jwt_authn` claims);
//! - body buffering with a read index (the body size in a paused callback is cumulative), a
//!   configured byte limit, and completion on end-of-stream *or* trailers (HTTP/2 trailers mean
//!   the body callback may never see end-of-stream);
//! - `accept-encoding` removal so answers come back uncompressed, and the failure policy for
//!   compressed, oversize and unparsable bodies;
//! - holding response headers when a filter may still replace the answer (needs
//!   `allow_on_headers_stop_iteration: true` in Envoy's wasm `PluginConfig`), so status,
//!   `content-type` and `content-length` can still change;
//! - streamed answers chunk by chunk, with a provider-shaped error event when a fail-closed
//!   stream must stop;
//! - the audit record in filter state (`guard_<filter>`) and decision counters;
//! - fallbacks (docs/fallback.md): an upstream that fails before its headers (a 5xx, a reset, a
//!   timeout, Envoy's own 503/504 included) or an answer the filter refuses gets the policy's
//!   `fallback` outcome: a provider-shaped error, the safe answer in the request's API shape
//!   (a whole stream, or the proper end of a stream under way), or an escalation to the review
//!   queue (a response-phase call-out while the headers are held); a stream the upstream cuts
//!   after its headers is recorded (`upstream_cut`).
//!
//! A filter implements [`GuardFilter`]; the wasm glue ([`crate::wasm`]) or a native test drives a
//! [`GuardStream`] through the callbacks.

use crate::host::{header_str, Dir, Host, LogLevel};
use crate::metrics::Metrics;
use guard_core::answer::{self, AnswerMeta, StreamEnding};
use guard_core::api::ApiShape;
use guard_core::audit::Chain;
use guard_core::body::{RequestBody, ResponseBody};
use guard_core::capture::Sealer;
use guard_core::config::{
    FailurePolicy, FallbackAction, FilterConfig, Policy, REVIEW_ID_PLACEHOLDER,
};
use guard_core::error::{Error, ErrorKind, Result};
use guard_core::segment::Source;
use guard_core::verdict::{AuditRecord, Decision, LocalReply};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::rc::Rc;

/// What the callback tells the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

/// What a filter wants done with a whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Pass it unchanged.
    Continue,
    /// Pass this body instead.
    Replace(Vec<u8>),
    /// Refuse: reply with this provider-shaped error.
    Reply(LocalReply),
    /// Ask another service first (request phase only): the request waits, and
    /// [`GuardFilter::on_callout`] decides when the answer (or the failure) arrives.
    CallOut(CallOut),
}

/// An HTTP call to an Envoy cluster, made while the request waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOut {
    pub cluster: String,
    /// `POST` unless the filter says otherwise.
    pub method: &'static str,
    pub authority: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

/// What came back from a call-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutResult {
    /// An HTTP answer (any status).
    Response { status: u16, body: Vec<u8> },
    /// No answer: Envoy refused the call, it timed out, or the connection failed.
    Failed,
}

/// How a filter wants the response handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponsePlan {
    /// Not interested: pass through.
    Skip,
    /// Buffer the whole body and call `on_response_body`. With `hold_headers` the headers wait
    /// for the verdict, so the answer can be replaced (status and length included).
    Buffer { hold_headers: bool },
    /// Call `on_stream_chunk` for every chunk (server-sent events).
    Stream,
}

/// What a filter made of a streamed chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Forward the chunk as it came.
    Pass,
    /// Forward the bytes the filter wrote to `out` instead.
    Rewritten,
}

/// The caller, as far as the proxy knows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Identity {
    pub subject: Option<String>,
    /// All claims (JWT payload) when they came from `jwt_authn` metadata.
    pub claims: Value,
}

/// Per-request facts the driver gathers for the filter.
#[derive(Debug)]
pub struct RequestInfo<C> {
    pub policy: Rc<Policy<C>>,
    pub api: Option<ApiShape>,
    pub method: String,
    pub path: String,
    pub request_id: String,
    pub route_name: Option<String>,
    pub identity: Option<Identity>,
    pub record: AuditRecord,
    pub start_ns: u64,
    pub response_status: Option<u16>,
    pub response_start_ns: Option<u64>,
    pub end_ns: Option<u64>,
    /// The response was buffered/streamed without our scan (fail-open, unsupported content).
    pub response_skipped: bool,
    /// The request asked for a streamed answer (read only when the policy has a fallback).
    pub stream_requested: bool,
    /// The request's `model` (read only when the policy has a fallback).
    pub request_model: Option<String>,
    /// The last user message, bounded (kept only when the policy may escalate).
    pub request_excerpt: String,
    /// Set by [`Cx::refuse_stream`]: the driver ends the stream per the policy's fallback.
    pub stream_refusal: Option<LocalReply>,
}

/// What a filter sees in every hook.
pub struct Cx<'a, F: GuardFilter> {
    pub host: &'a dyn Host,
    pub config: &'a FilterConfig<F::Compiled>,
    pub shared: &'a F::Shared,
    pub info: &'a mut RequestInfo<F::Compiled>,
}

impl<F: GuardFilter> Cx<'_, F> {
    pub fn settings(&self) -> &F::Compiled {
        &self.info.policy.settings
    }
    pub fn api(&self) -> Option<ApiShape> {
        self.info.api
    }
    /// The answer's status is 2xx (error answers are not judged).
    pub fn response_ok(&self) -> bool {
        self.info
            .response_status
            .is_some_and(|s| (200..300).contains(&s))
    }
    /// Refuse a streamed answer from here on (a guard flagged it). What the filter wrote to
    /// `out` in this callback still goes out (whole events); the driver then ends the stream as
    /// the policy's `fallback.on_flagged_answer` says: an error event in the API's stream shape
    /// (the default), the safe answer as the proper end of the stream, or an escalation. The
    /// decision is recorded as a block with the reply's reason. The filter should stop emitting.
    pub fn refuse_stream(&mut self, reply: LocalReply) {
        self.info.record.decide(Decision::Block, &reply.reason);
        self.info.stream_refusal = Some(reply);
    }
    /// The policy's bound on one server-sent event, as a buffer size.
    pub fn max_sse_event_bytes(&self) -> usize {
        usize::try_from(self.info.policy.common.max_sse_event_bytes).unwrap_or(usize::MAX)
    }
    /// The plan for a non-streamed answer a filter may replace: buffer it with its headers held
    /// when it is JSON, else pass it on.
    pub fn buffer_json_answer(&self) -> ResponsePlan {
        let json = self
            .host
            .header(Dir::Response, "content-type")
            .is_some_and(|ct| {
                String::from_utf8_lossy(&ct)
                    .to_ascii_lowercase()
                    .contains("json")
            });
        if json {
            ResponsePlan::Buffer { hold_headers: true }
        } else {
            ResponsePlan::Skip
        }
    }
}

/// A guard filter's logic, driven by [`GuardStream`].
pub trait GuardFilter: Sized + 'static {
    /// The filter's own policy fields, side by side with the common ones in each policy.
    type Settings: DeserializeOwned;
    /// The compiled form of the settings, shared by every stream.
    type Compiled: 'static;
    /// State shared by every stream of a VM (metric ids, caches), built at configure time.
    type Shared: 'static;
    /// Filter name: filter-state key `guard_<NAME>` and metric prefix `guard.<NAME>.`.
    const NAME: &'static str;
    /// Failure policy when a policy does not set one.
    const DEFAULT_FAILURE: FailurePolicy;
    /// Every request is this filter's (not only LLM API traffic): no API shape, no sniffing,
    /// and a request without a body is judged too (`on_request_body` with an empty body).
    /// For filters on routes to other back ends (vector databases).
    const ALL_REQUESTS: bool = false;

    fn compile(settings: Self::Settings, path: &str) -> Result<Self::Compiled>;
    fn init_shared(metrics: &Rc<Metrics>, config: &FilterConfig<Self::Compiled>) -> Self::Shared;
    fn new_stream() -> Self;

    /// Whether to buffer and inspect the request body (default: yes).
    fn wants_request_body(&mut self, _cx: &mut Cx<'_, Self>) -> bool {
        true
    }
    /// The whole request body. The API shape is known (from the path or sniffed).
    fn on_request_body(&mut self, cx: &mut Cx<'_, Self>, body: &[u8]) -> Result<Outcome>;
    /// The answer to a call-out the filter asked for in `on_request_body` (or in
    /// `on_response_body`, when the answer's headers are held). It may ask for
    /// another (up to [`MAX_CALLOUTS`] per request; past that the next is treated as a failed
    /// call-out).
    fn on_callout(&mut self, _cx: &mut Cx<'_, Self>, _result: CallOutResult) -> Result<Outcome> {
        Ok(Outcome::Continue)
    }
    /// Decide how to handle the response, given its status and whether it streams.
    fn response_plan(&mut self, cx: &mut Cx<'_, Self>, streaming: bool) -> ResponsePlan;
    /// The whole (non-streamed) response body.
    fn on_response_body(&mut self, _cx: &mut Cx<'_, Self>, _body: &[u8]) -> Result<Outcome> {
        Ok(Outcome::Continue)
    }
    /// One streamed chunk. Bytes held back inside the filter must be released later through
    /// `out` (or `on_stream_end`).
    fn on_stream_chunk(
        &mut self,
        _cx: &mut Cx<'_, Self>,
        _chunk: &[u8],
        _out: &mut Vec<u8>,
    ) -> Result<Chunk> {
        Ok(Chunk::Pass)
    }
    /// End of a stream: append whatever the filter still holds to `out`.
    fn on_stream_end(&mut self, _cx: &mut Cx<'_, Self>, _out: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
    /// After a stream error on a fail-open policy: append the bytes of *earlier* chunks that the
    /// filter withheld and never emitted. The driver then appends the current chunk and passes
    /// the rest of the stream through, so the client still gets the whole upstream stream.
    fn take_unemitted(&mut self, _out: &mut Vec<u8>) {}
    /// The exchange is over (also after a local reply or a reset): final metrics and record
    /// fields.
    fn on_done(&mut self, _cx: &mut Cx<'_, Self>) {}
    /// The body of a local reply, when the filter speaks another API's error shape (default:
    /// the LLM provider's, from [`LocalReply::body`]).
    fn reply_body(_info: &RequestInfo<Self::Compiled>, _reply: &LocalReply) -> Option<Vec<u8>> {
        None
    }
}

/// Most call-outs one request may make (a filter chaining lookups, or long polls of a hold).
pub const MAX_CALLOUTS: u8 = 8;

/// Request body handling state.
#[derive(Debug, PartialEq)]
enum ReqState {
    Pass,
    Buffering,
    /// Waiting for the answer to call-out `token`; `buffered` bytes of body are held.
    Waiting {
        token: u32,
        buffered: usize,
    },
    Done,
}

#[derive(Debug, PartialEq)]
enum RespState {
    Pass,
    Buffering {
        hold_headers: bool,
    },
    /// Compressed or otherwise unscannable answer on a fail-closed policy: replace at the end.
    Rejecting(LocalReply),
    Streaming,
    /// A fail-closed stream was stopped: drop everything else the upstream sends.
    StreamStopped,
    /// A whole answer waits for call-out `token` (its headers held when `hold`).
    Waiting {
        token: u32,
        hold: bool,
        body_size: usize,
    },
    /// The upstream failed before its headers: Envoy's (or the upstream's) error body is
    /// collected with the headers held, then replaced by the fallback (`size`: bytes buffered).
    Collecting {
        action: FallbackAction,
        reply: LocalReply,
        size: usize,
    },
    /// The driver's escalation call-out `token` is under way; `body_size` bytes are held.
    Escalating {
        token: u32,
        body_size: usize,
        esc: Box<Escalation>,
    },
    Done,
}

/// What triggered a fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The upstream failed before its response headers.
    UpstreamFailure,
    /// The filter refused the answer.
    FlaggedAnswer,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::UpstreamFailure => "upstream_failure",
            Trigger::FlaggedAnswer => "flagged_answer",
        }
    }
}

/// How a fallback reaches the client.
#[derive(Debug, PartialEq)]
enum Delivery {
    /// The response headers are held: status, headers and body are replaced.
    Held,
    /// The upstream's headers ended the stream (no body to replace): a local reply.
    Direct,
    /// A stream under way: `prefix` (what the filter released in the refusing callback) goes
    /// out, then the end of the stream. `eos`: the upstream's stream has ended.
    Stream { prefix: Vec<u8>, eos: bool },
}

/// An escalation waiting for the review queue's answer.
#[derive(Debug, PartialEq)]
pub struct Escalation {
    trigger: Trigger,
    /// The error the client gets when neither the queue nor a safe answer can answer.
    reply: LocalReply,
    delivery: Delivery,
}

/// One HTTP exchange driven through a [`GuardFilter`].
pub struct GuardStream<F: GuardFilter> {
    filter: F,
    config: Rc<FilterConfig<F::Compiled>>,
    shared: Rc<F::Shared>,
    metrics: Rc<Metrics>,
    info: Option<RequestInfo<F::Compiled>>,
    req: ReqState,
    resp: RespState,
    buf: Vec<u8>,
    read: usize,
    out: Vec<u8>,
    recorded: bool,
    local_reply_sent: bool,
    /// Call-outs made for this request.
    callouts: u8,
    /// The request is judged in its headers callback (no body).
    headers_only: bool,
    /// The VM's audit chain: records are sealed (chain id, sequence number, MAC) when set.
    chain: Option<Rc<RefCell<Chain>>>,
    /// The VM's capture sealer (None: no `GUARD_CAPTURE_KEY`).
    sealer: Option<Rc<RefCell<Sealer>>>,
    /// Bodies as this filter judged them, when the policy captures (capped).
    cap_req: Vec<u8>,
    cap_resp: Vec<u8>,
    cap_truncated: bool,
    /// What the client has seen of a stream, when a refusal may end it with an answer.
    ending: Option<StreamEnding>,
}

impl<F: GuardFilter> GuardStream<F> {
    pub fn new(
        config: Rc<FilterConfig<F::Compiled>>,
        shared: Rc<F::Shared>,
        metrics: Rc<Metrics>,
    ) -> Self {
        GuardStream {
            filter: F::new_stream(),
            config,
            shared,
            metrics,
            info: None,
            req: ReqState::Pass,
            resp: RespState::Pass,
            buf: Vec::new(),
            read: 0,
            out: Vec::new(),
            recorded: false,
            local_reply_sent: false,
            callouts: 0,
            headers_only: false,
            chain: None,
            sealer: None,
            cap_req: Vec::new(),
            cap_resp: Vec::new(),
            cap_truncated: false,
            ending: None,
        }
    }

    /// Encrypt captures with the VM's sealer.
    pub fn with_sealer(mut self, sealer: Option<Rc<RefCell<Sealer>>>) -> Self {
        self.sealer = sealer;
        self
    }

    /// Keep (a capped copy of) a body for the capture, when the policy captures.
    fn capture(&mut self, response: bool, bytes: &[u8]) {
        let Some(info) = self.info.as_ref() else {
            return;
        };
        if !info.policy.common.capture {
            return;
        }
        let max = usize::try_from(info.policy.common.capture_max_bytes).unwrap_or(usize::MAX);
        let buf = if response {
            &mut self.cap_resp
        } else {
            &mut self.cap_req
        };
        let room = max.saturating_sub(buf.len());
        if bytes.len() > room {
            self.cap_truncated = true;
        }
        buf.extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
    }

    /// Seal this stream's record into the VM's audit chain.
    pub fn with_chain(mut self, chain: Rc<RefCell<Chain>>) -> Self {
        self.chain = Some(chain);
        self
    }

    /// The request facts, once headers were seen and the request is one this filter handles.
    pub fn info(&self) -> Option<&RequestInfo<F::Compiled>> {
        self.info.as_ref()
    }

    fn with_cx<R>(
        &mut self,
        host: &dyn Host,
        f: impl FnOnce(&mut F, &mut Cx<'_, F>) -> R,
    ) -> Option<R> {
        let info = self.info.as_mut()?;
        let mut cx = Cx {
            host,
            config: &*self.config,
            shared: &*self.shared,
            info,
        };
        Some(f(&mut self.filter, &mut cx))
    }

    // ---------------------------------------------------------------- request

    pub fn on_request_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Action {
        let method = header_str(host, Dir::Request, ":method").unwrap_or_default();
        let path_bytes = host.header(Dir::Request, ":path").unwrap_or_default();
        let path = String::from_utf8_lossy(&path_bytes).into_owned();
        let api = if F::ALL_REQUESTS {
            None
        } else {
            self.config.apis.shape_for_path(&path)
        };
        let content_type = host
            .header(Dir::Request, "content-type")
            .unwrap_or_default();
        let json_body = content_type.is_empty() || contains_ascii_ci(&content_type, b"json");
        if !F::ALL_REQUESTS
            && api.is_none()
            && !(self.config.apis.sniff_body && method == "POST" && json_body)
        {
            return Action::Continue; // not LLM traffic: not ours
        }
        let route_name = route_name(host);
        let metadata_policy = self
            .config
            .route_metadata_namespace
            .as_deref()
            .and_then(|ns| route_metadata_string(host, ns, "policy"));
        let policy = self
            .config
            .select(metadata_policy.as_deref(), route_name.as_deref());
        let request_id = host
            .header(Dir::Request, "x-request-id")
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_else(|| format!("{:016x}", host.now_nanos()));
        let identity = resolve_identity(host, &self.config);
        let record = AuditRecord {
            request_id: request_id.clone(),
            filter: F::NAME,
            policy: format!("{}/{}", self.config.name, policy.name),
            policy_version: self.config.version.clone(),
            api,
            identity: identity.as_ref().and_then(|i| i.subject.clone()),
            ..AuditRecord::default()
        };
        let start_ns = host.now_nanos();
        self.info = Some(RequestInfo {
            policy,
            api,
            method,
            path,
            request_id,
            route_name,
            identity,
            record,
            start_ns,
            response_status: None,
            response_start_ns: None,
            end_ns: None,
            response_skipped: false,
            stream_requested: false,
            request_model: None,
            request_excerpt: String::new(),
            stream_refusal: None,
        });
        let Some(info) = self.info.as_ref() else {
            return Action::Continue;
        };
        let policy = Rc::clone(&info.policy);

        // Ask for an uncompressed answer; a request whose shape is still to be sniffed gets
        // this once its body proved it is LLM traffic.
        if policy.common.request_identity_encoding && (api.is_some() || F::ALL_REQUESTS) {
            host.set_header(Dir::Request, "accept-encoding", None);
        }
        if let Some(enc) = host.header(Dir::Request, "content-encoding") {
            if !enc.eq_ignore_ascii_case(b"identity") {
                return self.request_failure(
                    host,
                    Error::new(ErrorKind::Unparsable, "request body is compressed"),
                    "compressed_body",
                    415,
                );
            }
        }
        if end_of_stream && F::ALL_REQUESTS {
            // Judged on its headers alone (a GET, a DELETE).
            self.headers_only = true;
            self.req = ReqState::Done;
            let outcome = self.with_cx(host, |f, cx| f.on_request_body(cx, b""));
            return match outcome {
                None => Action::Continue,
                Some(o) => self.apply_request_outcome(host, o, 0, false),
            };
        }
        if end_of_stream {
            self.req = ReqState::Done;
            self.note(Decision::Skipped, "no_request_body");
            return Action::Continue;
        }
        let wants = self
            .with_cx(host, |f, cx| f.wants_request_body(cx))
            .unwrap_or(false);
        if !wants {
            self.req = ReqState::Done;
            return Action::Continue;
        }
        self.req = ReqState::Buffering;
        self.buf.clear();
        self.read = 0;
        // Hold the headers until the body is judged: a rewrite can then fix content-length
        // and a refusal never reaches the upstream.
        Action::Pause
    }

    pub fn on_request_body(
        &mut self,
        host: &dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        if self.req != ReqState::Buffering {
            return Action::Continue;
        }
        let limit = self
            .info
            .as_ref()
            .map_or(0, |i| i.policy.common.max_request_body_bytes);
        if body_size as u64 > limit {
            let err = Error::too_large(format!("request body is over the {limit} byte limit"));
            return self.request_failure(host, err, "body_too_large", 413);
        }
        if !self.read_new(host, Dir::Request, body_size) {
            let err = Error::new(ErrorKind::BadLocation, "request body buffer unavailable");
            return self.request_failure(host, err, "internal_error", 500);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.finish_request(host)
    }

    pub fn on_request_trailers(&mut self, host: &dyn Host) -> Action {
        if self.req != ReqState::Buffering {
            return Action::Continue;
        }
        // HTTP/2 (or chunked) trailers: the body never saw end-of-stream, it is complete now.
        self.finish_request(host)
    }

    fn finish_request(&mut self, host: &dyn Host) -> Action {
        self.req = ReqState::Done;
        let body = std::mem::take(&mut self.buf);
        let buffered = self.read;
        if let Some(info) = self.info.as_mut().filter(|_| !F::ALL_REQUESTS) {
            if info.api.is_none() {
                info.api = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| ApiShape::sniff_request(&v));
                info.record.api = info.api;
                if info.api.is_none() {
                    // Not an LLM API body after all: pass it on untouched, without a record.
                    self.info = None;
                    return Action::Continue;
                }
                if info.policy.common.request_identity_encoding {
                    host.set_header(Dir::Request, "accept-encoding", None);
                }
            }
        }
        self.capture(false, &body);
        self.request_facts(&body);
        if let Some(info) = self.info.as_mut().filter(|i| i.policy.common.capture) {
            // What this filter judged, for `guardctl replay` of the capture (never the text
            // itself). Only with a capture: SHA-256 of a 4 KB body is ~20 µs in V8.
            info.record.extra.insert(
                "request_sha256".into(),
                Value::String(guard_core::config::hex_prefix(&Sha256::digest(&body), 8)),
            );
        }
        let outcome = self.with_cx(host, |f, cx| f.on_request_body(cx, &body));
        self.buf = body;
        match outcome {
            None => Action::Continue,
            Some(o) => self.apply_request_outcome(host, o, buffered, false),
        }
    }

    /// Carry out a filter's request verdict. `resumed`: we are outside a request callback (in a
    /// call-out answer), so continuing means resuming the paused request.
    fn apply_request_outcome(
        &mut self,
        host: &dyn Host,
        outcome: Result<Outcome>,
        buffered: usize,
        resumed: bool,
    ) -> Action {
        let action = match outcome {
            Ok(Outcome::Continue) => Action::Continue,
            Ok(Outcome::Replace(new)) => {
                if self.headers_only || !host.set_body(Dir::Request, 0, buffered, &new) {
                    let err =
                        Error::new(ErrorKind::BadLocation, "request body could not be replaced");
                    self.request_failure(host, err, "internal_error", 500)
                } else {
                    if host.header(Dir::Request, "content-length").is_some() {
                        host.set_header(
                            Dir::Request,
                            "content-length",
                            Some(new.len().to_string().as_bytes()),
                        );
                    }
                    Action::Continue
                }
            }
            Ok(Outcome::Reply(reply)) => {
                self.note(Decision::Block, &reply.reason.clone());
                self.send_reply(host, &reply);
                Action::Pause
            }
            Ok(Outcome::CallOut(call)) if self.callouts < MAX_CALLOUTS => {
                self.callouts += 1;
                match dispatch(host, &call) {
                    Some(token) => {
                        self.req = ReqState::Waiting { token, buffered };
                        return Action::Pause;
                    }
                    None => {
                        // Refused at once (unknown cluster...): the filter's failure rule decides.
                        let next =
                            self.with_cx(host, |f, cx| f.on_callout(cx, CallOutResult::Failed));
                        match next {
                            None => Action::Continue,
                            // The same callback still: its result is this callback's.
                            Some(o) => {
                                return self.apply_request_outcome(host, o, buffered, resumed)
                            }
                        }
                    }
                }
            }
            Ok(Outcome::CallOut(_)) => {
                // Past the bound: what the filter makes of a failed call-out.
                let next = self.with_cx(host, |f, cx| f.on_callout(cx, CallOutResult::Failed));
                match next {
                    None | Some(Ok(Outcome::CallOut(_))) => {
                        let err = Error::new(ErrorKind::BadLocation, "too many call-outs");
                        self.request_failure(host, err, "internal_error", 500)
                    }
                    Some(o) => return self.apply_request_outcome(host, o, buffered, resumed),
                }
            }
            Err(e) => {
                let (reason, status) = failure_reason(&e, true);
                self.request_failure(host, e, reason, status)
            }
        };
        if resumed && action == Action::Continue {
            host.resume(Dir::Request);
        }
        action
    }

    /// The answer (or failure) of a call-out this stream started.
    pub fn on_callout_response(&mut self, host: &dyn Host, token: u32, body_size: usize) {
        if matches!(self.resp, RespState::Escalating { token: want, .. } if want == token) {
            let RespState::Escalating {
                body_size: held,
                esc,
                ..
            } = std::mem::replace(&mut self.resp, RespState::Done)
            else {
                return;
            };
            let result = callout_result(host, body_size);
            self.escalation_answered(host, *esc, result, held);
            return;
        }
        if let RespState::Waiting {
            token: want,
            hold,
            body_size: answer_size,
        } = self.resp
        {
            if want != token {
                return;
            }
            self.resp = RespState::Done;
            let result = callout_result(host, body_size);
            let outcome = self.with_cx(host, |f, cx| f.on_callout(cx, result));
            self.apply_response_outcome(host, outcome, hold, answer_size, true);
            return;
        }
        let ReqState::Waiting {
            token: want,
            buffered,
        } = self.req
        else {
            return;
        };
        if want != token {
            return;
        }
        self.req = ReqState::Done;
        let result = callout_result(host, body_size);
        let outcome = self.with_cx(host, |f, cx| f.on_callout(cx, result));
        match outcome {
            None => host.resume(Dir::Request),
            Some(o) => {
                self.apply_request_outcome(host, o, buffered, true);
            }
        }
    }

    /// Apply the failure policy to a request the filter could not judge.
    fn request_failure(
        &mut self,
        host: &dyn Host,
        err: Error,
        reason: &str,
        status: u16,
    ) -> Action {
        self.req = ReqState::Done;
        host.log(LogLevel::Debug, &format!("{}: {reason}: {err}", F::NAME));
        if self.fail_closed() {
            self.note(Decision::Block, reason);
            let reply = LocalReply::new(status, reason, err.message());
            self.send_reply(host, &reply);
            Action::Pause
        } else {
            self.note(Decision::Skipped, reason);
            Action::Continue
        }
    }

    // ---------------------------------------------------------------- response

    pub fn on_response_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Action {
        if self.info.is_none() || self.local_reply_sent {
            return Action::Continue;
        }
        let status = header_str(host, Dir::Response, ":status").and_then(|s| s.parse::<u16>().ok());
        let now = host.now_nanos();
        if let Some(info) = self.info.as_mut() {
            info.response_status = status;
            info.response_start_ns = Some(now);
        }
        if let Some(action) = self.upstream_failure_action(host, status) {
            let status = status.unwrap_or(502);
            return self.upstream_failure(host, action, status, end_of_stream);
        }
        if end_of_stream {
            self.resp = RespState::Done;
            self.finish(host);
            return Action::Continue;
        }
        if host.header(Dir::Response, FALLBACK_HEADER).is_some() {
            // A fallback a filter below made: not the model's answer, not ours to judge.
            self.resp = RespState::Pass;
            return Action::Continue;
        }
        let content_type = host
            .header(Dir::Response, "content-type")
            .unwrap_or_default();
        let streaming = starts_with_ascii_ci(&content_type, b"text/event-stream");
        let plan = self
            .with_cx(host, |f, cx| f.response_plan(cx, streaming))
            .unwrap_or(ResponsePlan::Skip);
        if plan == ResponsePlan::Skip {
            self.resp = RespState::Pass;
            return Action::Continue;
        }
        if let Some(enc) = host.header(Dir::Response, "content-encoding") {
            if !enc.eq_ignore_ascii_case(b"identity") {
                let fail_closed = self.fail_closed();
                if fail_closed {
                    self.note(Decision::Block, "compressed_body");
                    self.resp = RespState::Rejecting(LocalReply::new(
                        502,
                        "compressed_body",
                        "the upstream answer is compressed and cannot be checked",
                    ));
                    return Action::Pause;
                }
                self.note(Decision::Skipped, "compressed_body");
                self.mark_response_skipped();
                self.resp = RespState::Pass;
                return Action::Continue;
            }
        }
        match plan {
            ResponsePlan::Buffer { hold_headers } => {
                // A fail-closed policy must be able to replace the answer when it cannot judge
                // it (oversize, unparsable): hold the headers too.
                let fail_closed = self.fail_closed();
                let hold_headers = hold_headers || fail_closed;
                self.resp = RespState::Buffering { hold_headers };
                self.buf.clear();
                self.read = 0;
                if hold_headers {
                    Action::Pause
                } else {
                    Action::Continue
                }
            }
            ResponsePlan::Stream => {
                self.resp = RespState::Streaming;
                self.ending = self.new_ending(host);
                // The filter may change the length of the stream.
                host.set_header(Dir::Response, "content-length", None);
                Action::Continue
            }
            ResponsePlan::Skip => Action::Continue,
        }
    }

    pub fn on_response_body(
        &mut self,
        host: &dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        match &self.resp {
            RespState::Buffering { hold_headers } => {
                let hold = *hold_headers;
                let limit = self
                    .info
                    .as_ref()
                    .map_or(0, |i| i.policy.common.max_response_body_bytes);
                if body_size as u64 > limit {
                    let err =
                        Error::too_large(format!("response body is over the {limit} byte limit"));
                    return self.response_failure(host, err, hold, body_size, end_of_stream);
                }
                if !self.read_new(host, Dir::Response, body_size) {
                    let err =
                        Error::new(ErrorKind::BadLocation, "response body buffer unavailable");
                    return self.response_failure(host, err, hold, body_size, end_of_stream);
                }
                if !end_of_stream {
                    return Action::Pause;
                }
                self.finish_response_body(host, hold, body_size)
            }
            RespState::Rejecting(_) => {
                if !end_of_stream {
                    return Action::Pause;
                }
                let RespState::Rejecting(reply) =
                    std::mem::replace(&mut self.resp, RespState::Done)
                else {
                    return Action::Continue;
                };
                self.replace_response(host, &reply, body_size);
                self.finish(host);
                Action::Continue
            }
            RespState::Streaming => self.stream_chunk(host, body_size, end_of_stream),
            // The whole answer waits for a call-out: keep it.
            RespState::Waiting { .. } => Action::Pause,
            RespState::Collecting { .. } => {
                if let RespState::Collecting { size, .. } = &mut self.resp {
                    *size = body_size;
                }
                if !end_of_stream {
                    return Action::Pause;
                }
                let RespState::Collecting { action, reply, .. } =
                    std::mem::replace(&mut self.resp, RespState::Done)
                else {
                    return Action::Continue;
                };
                self.fallback(
                    host,
                    Trigger::UpstreamFailure,
                    action,
                    reply,
                    Delivery::Held,
                    body_size,
                    false,
                )
            }
            RespState::Escalating { .. } => {
                // Everything that arrives meanwhile is held and replaced with the answer.
                if let RespState::Escalating {
                    body_size: held,
                    esc,
                    ..
                } = &mut self.resp
                {
                    *held = body_size;
                    if let Delivery::Stream { eos, .. } = &mut esc.delivery {
                        *eos = *eos || end_of_stream;
                    }
                }
                Action::Pause
            }
            RespState::StreamStopped => {
                host.set_body(Dir::Response, 0, body_size, b"");
                if end_of_stream {
                    self.finish(host);
                }
                Action::Continue
            }
            RespState::Pass | RespState::Done => {
                if end_of_stream {
                    self.resp = RespState::Done;
                    self.finish(host);
                }
                Action::Continue
            }
        }
    }

    pub fn on_response_trailers(&mut self, host: &dyn Host) -> Action {
        match &self.resp {
            RespState::Buffering { hold_headers } => {
                let hold = *hold_headers;
                let size = self.read;
                self.finish_response_body(host, hold, size)
            }
            RespState::Rejecting(_) => self.on_response_body(host, self.read, true),
            RespState::Streaming => self.stream_chunk(host, 0, true),
            RespState::Waiting { .. } => Action::Pause,
            RespState::Collecting { size, .. } => {
                let size = *size;
                self.on_response_body(host, size, true)
            }
            RespState::Escalating { .. } => {
                if let RespState::Escalating { esc, .. } = &mut self.resp {
                    if let Delivery::Stream { eos, .. } = &mut esc.delivery {
                        *eos = true;
                    }
                }
                Action::Pause
            }
            _ => {
                self.finish(host);
                Action::Continue
            }
        }
    }

    fn finish_response_body(&mut self, host: &dyn Host, hold: bool, body_size: usize) -> Action {
        self.resp = RespState::Done;
        let body = std::mem::take(&mut self.buf);
        self.capture(true, &body);
        let outcome = self.with_cx(host, |f, cx| f.on_response_body(cx, &body));
        self.buf = body;
        self.apply_response_outcome(host, outcome, hold, body_size, false)
    }

    /// Carry out a filter's verdict on a whole answer. `resumed`: outside a response callback
    /// (a call-out's answer), so continuing means resuming the paused response.
    fn apply_response_outcome(
        &mut self,
        host: &dyn Host,
        outcome: Option<Result<Outcome>>,
        hold: bool,
        body_size: usize,
        resumed: bool,
    ) -> Action {
        self.resp = RespState::Done;
        let action = match outcome {
            // A call-out while the answer waits: only with its headers held (the verdict may
            // still replace the answer), within the per-request bound.
            Some(Ok(Outcome::CallOut(call))) if hold && self.callouts < MAX_CALLOUTS => {
                self.callouts += 1;
                match dispatch(host, &call) {
                    Some(token) => {
                        self.resp = RespState::Waiting {
                            token,
                            hold,
                            body_size,
                        };
                        return Action::Pause;
                    }
                    None => {
                        let next =
                            self.with_cx(host, |f, cx| f.on_callout(cx, CallOutResult::Failed));
                        return self.apply_response_outcome(host, next, hold, body_size, resumed);
                    }
                }
            }
            Some(Ok(Outcome::CallOut(_))) => {
                let next = self.with_cx(host, |f, cx| f.on_callout(cx, CallOutResult::Failed));
                if matches!(next, Some(Ok(Outcome::CallOut(_)))) {
                    let err = Error::new(ErrorKind::BadLocation, "too many call-outs");
                    let a = self.response_failure(host, err, hold, body_size, true);
                    if resumed {
                        host.resume(Dir::Response);
                    }
                    return a;
                }
                return self.apply_response_outcome(host, next, hold, body_size, resumed);
            }
            None | Some(Ok(Outcome::Continue)) => Action::Continue,
            Some(Ok(Outcome::Replace(new))) => {
                host.set_body(Dir::Response, 0, body_size, &new);
                if hold {
                    host.set_header(
                        Dir::Response,
                        "content-length",
                        Some(new.len().to_string().as_bytes()),
                    );
                }
                Action::Continue
            }
            Some(Ok(Outcome::Reply(reply))) => {
                self.note(Decision::Block, &reply.reason.clone());
                // A refused answer whose headers are held: the policy's fallback decides.
                if let Some(action) = self.flagged_action().filter(|_| hold) {
                    return self.fallback(
                        host,
                        Trigger::FlaggedAnswer,
                        action,
                        reply,
                        Delivery::Held,
                        body_size,
                        resumed,
                    );
                }
                if hold {
                    self.replace_response(host, &reply, body_size);
                } else {
                    self.send_reply(host, &reply);
                }
                Action::Continue
            }
            Some(Err(e)) => {
                let a = self.response_failure(host, e, hold, body_size, true);
                if resumed {
                    host.resume(Dir::Response);
                }
                return a;
            }
        };
        self.finish(host);
        if resumed {
            host.resume(Dir::Response);
        }
        action
    }

    fn response_failure(
        &mut self,
        host: &dyn Host,
        err: Error,
        hold: bool,
        body_size: usize,
        eos: bool,
    ) -> Action {
        self.resp = RespState::Done;
        let (reason, _) = failure_reason(&err, false);
        host.log(LogLevel::Debug, &format!("{}: {reason}: {err}", F::NAME));
        let fail_closed = self.fail_closed();
        if fail_closed {
            self.note(Decision::Block, reason);
            let reply = LocalReply::new(502, reason, err.message());
            if hold && eos {
                self.replace_response(host, &reply, body_size);
            } else {
                // Headers are still held (oversize before the end) or already sent: Envoy
                // replies directly, or resets a stream whose headers went out.
                self.send_reply(host, &reply);
            }
        } else {
            self.note(Decision::Skipped, reason);
            self.mark_response_skipped();
        }
        if eos || !fail_closed {
            self.finish(host);
        }
        Action::Continue
    }

    fn stream_chunk(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Action {
        let chunk = if body_size > 0 {
            host.body(Dir::Response, 0, body_size).unwrap_or_default()
        } else {
            Vec::new()
        };
        if !chunk.is_empty() && host.property(&[FALLBACK_PROPERTY]).is_some() {
            // A filter below ended this stream with a fallback: the rest is not the model's
            // answer, and not ours to judge. What the filter still holds goes out first.
            let mut out = Vec::new();
            self.filter.take_unemitted(&mut out);
            out.extend_from_slice(&chunk);
            host.set_body(Dir::Response, 0, body_size, &out);
            self.resp = RespState::Pass;
            if end_of_stream {
                self.resp = RespState::Done;
                self.finish(host);
            }
            return Action::Continue;
        }
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        self.capture(true, &chunk);
        let mut result = self
            .with_cx(host, |f, cx| f.on_stream_chunk(cx, &chunk, &mut out))
            .unwrap_or(Ok(Chunk::Pass));
        if end_of_stream {
            result = result.and_then(|r| {
                if r == Chunk::Pass {
                    out.clear();
                    out.extend_from_slice(&chunk);
                }
                if self
                    .info
                    .as_ref()
                    .is_some_and(|i| i.stream_refusal.is_none())
                {
                    self.with_cx(host, |f, cx| f.on_stream_end(cx, &mut out))
                        .unwrap_or(Ok(()))?;
                }
                Ok(if out == chunk {
                    Chunk::Pass
                } else {
                    Chunk::Rewritten
                })
            });
        }
        let refusal = self.info.as_mut().and_then(|i| i.stream_refusal.take());
        match result {
            Ok(r) if refusal.is_some() => {
                let Some(reply) = refusal else {
                    return Action::Continue;
                };
                // What the filter released in this callback goes out before the end.
                let prefix = if r == Chunk::Pass {
                    chunk
                } else {
                    std::mem::take(&mut out)
                };
                self.out = out;
                return self.stream_refused(host, reply, prefix, body_size, end_of_stream);
            }
            Ok(Chunk::Pass) => {
                if let Some(e) = self.ending.as_mut() {
                    e.observe(&chunk);
                }
            }
            Ok(Chunk::Rewritten) => {
                host.set_body(Dir::Response, 0, body_size, &out);
                if let Some(e) = self.ending.as_mut() {
                    e.observe(&out);
                }
            }
            Err(e) => {
                let (reason, _) = failure_reason(&e, false);
                host.log(
                    LogLevel::Debug,
                    &format!("{}: stream: {reason}: {e}", F::NAME),
                );
                let fail_closed = self.fail_closed();
                out.clear();
                if fail_closed {
                    self.note(Decision::Block, reason);
                    let reply = LocalReply::new(502, reason, e.message());
                    let (api, rid) = self.reply_context();
                    out.extend_from_slice(&reply.stream_event(api, &rid));
                    self.resp = RespState::StreamStopped;
                } else {
                    self.note(Decision::Skipped, reason);
                    self.mark_response_skipped();
                    self.filter.take_unemitted(&mut out);
                    out.extend_from_slice(&chunk);
                    self.resp = RespState::Pass;
                }
                host.set_body(Dir::Response, 0, body_size, &out);
            }
        }
        self.out = out;
        if end_of_stream {
            if self.resp == RespState::Streaming {
                self.resp = RespState::Done;
            }
            self.finish(host);
        }
        Action::Continue
    }

    /// The filter refused a stream under way ([`Cx::refuse_stream`]): `prefix` goes out, then
    /// the end the policy's fallback says (by default an error event, as before fallbacks).
    fn stream_refused(
        &mut self,
        host: &dyn Host,
        reply: LocalReply,
        prefix: Vec<u8>,
        body_size: usize,
        eos: bool,
    ) -> Action {
        let delivery = Delivery::Stream { prefix, eos };
        match self.flagged_action() {
            Some(action) => self.fallback(
                host,
                Trigger::FlaggedAnswer,
                action,
                reply,
                delivery,
                body_size,
                false,
            ),
            None => self.deliver(
                host,
                Delivered {
                    trigger: Trigger::FlaggedAnswer,
                    outcome: FallbackAction::Error,
                    text: None,
                    review_id: None,
                    escalation_failed: false,
                    record: false,
                },
                &reply,
                delivery,
                body_size,
                false,
            ),
        }
    }

    // ---------------------------------------------------------------- fallbacks

    /// The fallback for a refused answer: `None` when the policy has none configured (the
    /// error as before fallbacks, with no fallback record).
    fn flagged_action(&self) -> Option<FallbackAction> {
        let info = self.info.as_ref()?;
        info.api?;
        let fb = &info.policy.common.fallback;
        fb.active().then_some(fb.on_flagged_answer)
    }

    /// Whether this response is an upstream failure this filter's policy acts on: a 5xx that no
    /// guard filter made (no `x-guard-reason` / `x-guard-fallback`) on LLM API traffic.
    fn upstream_failure_action(
        &self,
        host: &dyn Host,
        status: Option<u16>,
    ) -> Option<FallbackAction> {
        let info = self.info.as_ref()?;
        info.api?;
        let action = info.policy.common.fallback.on_upstream_failure?;
        if !(500..=599).contains(&status?) {
            return None;
        }
        if host.header(Dir::Response, "x-guard-reason").is_some()
            || host.header(Dir::Response, FALLBACK_HEADER).is_some()
        {
            return None;
        }
        Some(action)
    }

    /// The upstream failed before its headers: record it, then hold the error (its body is
    /// replaced at its end) or, when the headers ended the stream, answer directly.
    fn upstream_failure(
        &mut self,
        host: &dyn Host,
        action: FallbackAction,
        status: u16,
        eos: bool,
    ) -> Action {
        let details = code_details(host);
        let kind = failure_kind(&details);
        self.metrics
            .counter(&crate::metrics::upstream_failures(F::NAME, kind), 1);
        if let Some(info) = self.info.as_mut() {
            info.record.decide(Decision::Modify, "upstream_failure");
            info.record.extra.insert(
                "upstream_failure".into(),
                json!({"status": status, "kind": kind, "details": details}),
            );
        }
        let message = match kind {
            "status" => "the model provider answered with an error; try again later",
            "timeout" => "the model provider did not answer in time; try again later",
            "reset" | "connect_failure" | "no_healthy_upstream" | "overflow" => {
                "the model provider could not be reached; try again later"
            }
            _ => "the model provider failed before answering; try again later",
        };
        let reply = LocalReply::new(status, "upstream_failure", message);
        if eos {
            return self.fallback(
                host,
                Trigger::UpstreamFailure,
                action,
                reply,
                Delivery::Direct,
                0,
                false,
            );
        }
        self.resp = RespState::Collecting {
            action,
            reply,
            size: 0,
        };
        Action::Pause
    }

    /// Carry out `action` for `trigger`. `resumed`: outside the response callbacks (a
    /// call-out's answer), so continuing means resuming the held response.
    #[allow(clippy::too_many_arguments)]
    fn fallback(
        &mut self,
        host: &dyn Host,
        trigger: Trigger,
        action: FallbackAction,
        reply: LocalReply,
        delivery: Delivery,
        body_size: usize,
        resumed: bool,
    ) -> Action {
        let Some(policy) = self.info.as_ref().map(|i| Rc::clone(&i.policy)) else {
            return Action::Continue;
        };
        let fb = &policy.common.fallback;
        let done = |outcome, text: Option<String>| Delivered {
            trigger,
            outcome,
            text,
            review_id: None,
            escalation_failed: false,
            record: true,
        };
        match action {
            FallbackAction::Error => self.deliver(
                host,
                done(action, None),
                &reply,
                delivery,
                body_size,
                resumed,
            ),
            FallbackAction::SafeAnswer => {
                let text = fb.safe_answer.clone();
                let outcome = if text.is_some() {
                    action
                } else {
                    FallbackAction::Error
                };
                self.deliver(
                    host,
                    done(outcome, text),
                    &reply,
                    delivery,
                    body_size,
                    resumed,
                )
            }
            FallbackAction::Escalate => {
                if let Some(cfg) = fb
                    .escalate
                    .as_ref()
                    .filter(|_| self.callouts < MAX_CALLOUTS)
                {
                    self.callouts += 1;
                    let call = self.escalation_call(trigger, &reply, cfg, &delivery);
                    if let Some(token) = dispatch(host, &call) {
                        self.resp = RespState::Escalating {
                            token,
                            body_size,
                            esc: Box::new(Escalation {
                                trigger,
                                reply,
                                delivery,
                            }),
                        };
                        return Action::Pause;
                    }
                }
                // Refused at once (unknown cluster, too many call-outs).
                self.escalation_failed(host, trigger, reply, delivery, body_size, resumed)
            }
        }
    }

    /// The review queue's answer to an escalation.
    fn escalation_answered(
        &mut self,
        host: &dyn Host,
        esc: Escalation,
        result: CallOutResult,
        body_size: usize,
    ) {
        let id = match result {
            CallOutResult::Response {
                status: 200 | 201,
                body,
            } => serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
                .filter(|id| valid_review_id(id)),
            _ => None,
        };
        let Escalation {
            trigger,
            reply,
            delivery,
        } = esc;
        let Some(id) = id else {
            self.escalation_failed(host, trigger, reply, delivery, body_size, true);
            return;
        };
        self.metrics
            .counter(&crate::metrics::escalations(F::NAME, "created"), 1);
        let message = self
            .info
            .as_ref()
            .and_then(|i| i.policy.common.fallback.escalate.as_ref())
            .map(|e| e.message.replace(REVIEW_ID_PLACEHOLDER, &id))
            .unwrap_or_default();
        let d = Delivered {
            trigger,
            outcome: FallbackAction::Escalate,
            text: Some(message),
            review_id: Some(id),
            escalation_failed: false,
            record: true,
        };
        self.deliver(host, d, &reply, delivery, body_size, true);
    }

    /// The review queue did not take the escalation: the safe answer if the policy has one,
    /// else the error. Counted.
    fn escalation_failed(
        &mut self,
        host: &dyn Host,
        trigger: Trigger,
        reply: LocalReply,
        delivery: Delivery,
        body_size: usize,
        resumed: bool,
    ) -> Action {
        self.metrics
            .counter(&crate::metrics::escalations(F::NAME, "failed"), 1);
        let text = self
            .info
            .as_ref()
            .and_then(|i| i.policy.common.fallback.safe_answer.clone());
        let d = Delivered {
            trigger,
            outcome: if text.is_some() {
                FallbackAction::SafeAnswer
            } else {
                FallbackAction::Error
            },
            text,
            review_id: None,
            escalation_failed: true,
            record: true,
        };
        self.deliver(host, d, &reply, delivery, body_size, resumed)
    }

    /// The escalation call-out: `POST <path>` to the review queue (docs/approval-api.md).
    fn escalation_call(
        &self,
        trigger: Trigger,
        reply: &LocalReply,
        cfg: &guard_core::config::Escalate,
        delivery: &Delivery,
    ) -> CallOut {
        let mut body = json!({});
        if let Some(info) = self.info.as_ref() {
            let mut excerpt = String::new();
            if !info.request_excerpt.is_empty() {
                excerpt.push_str("user: ");
                excerpt.push_str(&info.request_excerpt);
            }
            let answer = match delivery {
                Delivery::Held if trigger == Trigger::FlaggedAnswer => info
                    .api
                    .and_then(|api| ResponseBody::parse(api, &self.buf).ok())
                    .map(|r| {
                        r.segments()
                            .iter()
                            .filter(|s| s.source == Source::Assistant)
                            .map(|s| s.text.to_string())
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default(),
                Delivery::Stream { .. } => self
                    .ending
                    .as_ref()
                    .map(|e| e.excerpt().to_string())
                    .unwrap_or_default(),
                _ => String::new(),
            };
            if !answer.is_empty() {
                if !excerpt.is_empty() {
                    excerpt.push_str("\n\n");
                }
                excerpt.push_str("assistant: ");
                excerpt.push_str(&answer);
            }
            body = json!({
                "trigger": trigger.as_str(),
                "reason": reply.reason,
                "request_id": info.request_id,
                "caller": info.identity.as_ref().and_then(|i| i.subject.clone()).unwrap_or_default(),
                "filter": F::NAME,
                "policy": info.record.policy,
                "route": info.route_name.clone().unwrap_or_default(),
                "api": info.api.map(ApiShape::as_str).unwrap_or_default(),
                "model": info.request_model.clone().unwrap_or_default(),
                "http_status": reply.status,
                "excerpt_raw": excerpt,
            });
        }
        let mut headers = Vec::new();
        if let Some(token) = std::env::var(&cfg.client_token_env)
            .ok()
            .filter(|t| !t.is_empty())
        {
            headers.push(("x-approval-client-token".to_string(), token));
        }
        CallOut {
            cluster: cfg.cluster.clone(),
            method: "POST",
            authority: cfg.authority.clone().unwrap_or_else(|| cfg.cluster.clone()),
            path: cfg.path.clone(),
            headers,
            body: serde_json::to_vec(&body).unwrap_or_default(),
            timeout_ms: cfg.timeout_ms,
        }
    }

    /// Send a fallback's outcome the way `delivery` allows, record it, and end the response.
    fn deliver(
        &mut self,
        host: &dyn Host,
        d: Delivered,
        reply: &LocalReply,
        delivery: Delivery,
        body_size: usize,
        resumed: bool,
    ) -> Action {
        if d.record {
            self.record_fallback(host, &d);
        }
        match delivery {
            Delivery::Held => {
                match &d.text {
                    Some(text) => self.replace_answer(host, text, d.outcome, body_size),
                    None => self.replace_response(host, reply, body_size),
                }
                self.resp = RespState::Done;
                self.finish(host);
                if resumed {
                    host.resume(Dir::Response);
                }
                Action::Continue
            }
            Delivery::Direct => {
                self.resp = RespState::Done;
                match &d.text {
                    Some(text) => self.send_answer(host, text, d.outcome),
                    None => self.send_reply(host, reply),
                }
                Action::Pause
            }
            Delivery::Stream { mut prefix, eos } => {
                match &d.text {
                    Some(text) => {
                        let meta_created = host.now_nanos() / 1_000_000_000;
                        let mut ending = match self.ending.take() {
                            Some(e) => e,
                            None => StreamEnding::new(&self.answer_meta(meta_created)),
                        };
                        // A refusal that came with the upstream's end: the end is ours.
                        let keep = ending.observe_until_end(&prefix);
                        prefix.truncate(keep);
                        prefix.extend_from_slice(&ending.finish(text));
                    }
                    None => {
                        let (api, rid) = self.reply_context();
                        prefix.extend_from_slice(&reply.stream_event(api, &rid));
                    }
                }
                host.set_body(Dir::Response, 0, body_size, &prefix);
                self.resp = RespState::StreamStopped;
                if eos {
                    self.finish(host);
                }
                if resumed {
                    host.resume(Dir::Response);
                }
                Action::Continue
            }
        }
    }

    /// The fallback in the record (`fallback`), its counter, and the `guard_fallback` filter
    /// state (filters above pass the rest of a stream on; access logs can show it).
    fn record_fallback(&mut self, host: &dyn Host, d: &Delivered) {
        let mut v = json!({"trigger": d.trigger.as_str(), "outcome": d.outcome.as_str()});
        if let Some(obj) = v.as_object_mut() {
            if let Some(id) = &d.review_id {
                obj.insert("review_id".into(), json!(id));
            }
            if d.escalation_failed {
                obj.insert("escalation".into(), json!("failed"));
            }
        }
        self.metrics.counter(
            &crate::metrics::fallbacks(F::NAME, d.trigger.as_str(), d.outcome.as_str()),
            1,
        );
        if let Some(info) = self.info.as_mut() {
            info.record.extra.insert("fallback".into(), v.clone());
        }
        if let Some(obj) = v.as_object_mut() {
            obj.insert("filter".into(), json!(F::NAME));
        }
        host.set_property(&[FALLBACK_PROPERTY], v.to_string().as_bytes());
    }

    /// The request facts of an answer made here.
    fn answer_meta(&self, created: u64) -> AnswerMeta<'_> {
        let info = self.info.as_ref();
        AnswerMeta {
            api: info.and_then(|i| i.api).unwrap_or(ApiShape::OpenAiChat),
            model: info.and_then(|i| i.request_model.as_deref()).unwrap_or(""),
            request_id: info.map_or("", |i| i.request_id.as_str()),
            created,
        }
    }

    /// A whole answer with `text`: JSON, or a complete SSE stream when the request streams.
    fn answer_bytes(&self, host: &dyn Host, text: &str) -> (Vec<u8>, &'static [u8]) {
        let meta = self.answer_meta(host.now_nanos() / 1_000_000_000);
        if self.info.as_ref().is_some_and(|i| i.stream_requested) {
            (answer::stream(&meta, text), b"text/event-stream")
        } else {
            (answer::whole(&meta, text), b"application/json")
        }
    }

    /// Replace a held response with an answer: status 200, `x-guard-fallback`.
    fn replace_answer(
        &mut self,
        host: &dyn Host,
        text: &str,
        outcome: FallbackAction,
        body_size: usize,
    ) {
        let (body, content_type) = self.answer_bytes(host, text);
        host.set_header(Dir::Response, ":status", Some(b"200"));
        host.set_header(Dir::Response, "content-type", Some(content_type));
        host.set_header(Dir::Response, "content-encoding", None);
        host.set_header(
            Dir::Response,
            "content-length",
            Some(body.len().to_string().as_bytes()),
        );
        host.set_header(Dir::Response, "x-guard-reason", None);
        host.set_header(
            Dir::Response,
            FALLBACK_HEADER,
            Some(outcome.as_str().as_bytes()),
        );
        host.set_body(Dir::Response, 0, body_size, &body);
        if let Some(info) = self.info.as_mut() {
            info.response_status = Some(200);
        }
    }

    /// Answer with `text` as a local reply (the upstream's headers ended its response).
    fn send_answer(&mut self, host: &dyn Host, text: &str, outcome: FallbackAction) {
        let (body, content_type) = self.answer_bytes(host, text);
        let (_, rid) = self.reply_context();
        let headers: [(&str, &[u8]); 3] = [
            ("content-type", content_type),
            (FALLBACK_HEADER, outcome.as_str().as_bytes()),
            ("x-request-id", rid.as_bytes()),
        ];
        self.local_reply_sent = true;
        if let Some(info) = self.info.as_mut() {
            info.response_status = Some(200);
        }
        self.finish(host);
        host.send_local_reply(200, &headers, &body);
    }

    /// A stream's ending tracker, when a refusal may end the stream with an answer.
    fn new_ending(&self, host: &dyn Host) -> Option<StreamEnding> {
        let action = self.flagged_action()?;
        if action == FallbackAction::Error {
            return None;
        }
        Some(StreamEnding::new(
            &self.answer_meta(host.now_nanos() / 1_000_000_000),
        ))
    }

    /// What a fallback needs of the request (only when the policy has one): whether it
    /// streams, its model, and (when it may escalate) the last user message.
    fn request_facts(&mut self, body: &[u8]) {
        #[derive(Deserialize)]
        struct Facts {
            #[serde(default)]
            stream: Option<Value>,
            #[serde(default)]
            model: Option<Value>,
        }
        let Some(info) = self.info.as_mut() else {
            return;
        };
        let Some(api) = info.api else {
            return;
        };
        let fb = &info.policy.common.fallback;
        if !fb.active() {
            return;
        }
        let escalates = fb.escalates();
        if let Ok(f) = serde_json::from_slice::<Facts>(body) {
            info.stream_requested = f.stream.and_then(|v| v.as_bool()).unwrap_or(false);
            info.request_model = f.model.and_then(|v| v.as_str().map(str::to_string));
        }
        if escalates {
            if let Ok(req) = RequestBody::parse(api, body) {
                if let Some(seg) = req
                    .segments()
                    .iter()
                    .rev()
                    .find(|s| s.source == Source::User)
                {
                    info.request_excerpt = tail_chars(&seg.text, MAX_REQUEST_EXCERPT).to_string();
                }
            }
        }
    }

    /// Replace a response whose headers are held: new status, JSON error body.
    fn replace_response(&mut self, host: &dyn Host, reply: &LocalReply, body_size: usize) {
        let body = self.reply_bytes(reply);
        host.set_header(
            Dir::Response,
            ":status",
            Some(reply.status.to_string().as_bytes()),
        );
        host.set_header(Dir::Response, "content-type", Some(b"application/json"));
        host.set_header(Dir::Response, "content-encoding", None);
        host.set_header(
            Dir::Response,
            "content-length",
            Some(body.len().to_string().as_bytes()),
        );
        host.set_header(
            Dir::Response,
            "x-guard-reason",
            Some(reply.reason.as_bytes()),
        );
        host.set_body(Dir::Response, 0, body_size, &body);
        if let Some(info) = self.info.as_mut() {
            info.response_status = Some(reply.status);
        }
    }

    /// A local reply's body: the filter's own shape, else the LLM provider's.
    fn reply_bytes(&self, reply: &LocalReply) -> Vec<u8> {
        let (api, rid) = self.reply_context();
        self.info
            .as_ref()
            .and_then(|i| F::reply_body(i, reply))
            .unwrap_or_else(|| reply.body(api, &rid))
    }

    fn send_reply(&mut self, host: &dyn Host, reply: &LocalReply) {
        let (_, rid) = self.reply_context();
        let body = self.reply_bytes(reply);
        let headers: [(&str, &[u8]); 3] = [
            ("content-type", b"application/json"),
            ("x-guard-reason", reply.reason.as_bytes()),
            ("x-request-id", rid.as_bytes()),
        ];
        self.local_reply_sent = true;
        if let Some(info) = self.info.as_mut() {
            info.response_status = Some(reply.status);
        }
        // Write the record now: after a local reply the response callbacks may not run.
        self.finish(host);
        host.send_local_reply(reply.status, &headers, &body);
    }

    /// Copy the bytes not read yet (`[read, body_size)`) into our buffer.
    fn read_new(&mut self, host: &dyn Host, dir: Dir, body_size: usize) -> bool {
        if body_size <= self.read {
            return true;
        }
        let len = body_size - self.read;
        match host.body(dir, self.read, len) {
            Some(bytes) if bytes.len() == len => {
                self.buf.extend_from_slice(&bytes);
                self.read = body_size;
                true
            }
            _ => false,
        }
    }

    /// The API shape and request id a reply is rendered for.
    fn reply_context(&self) -> (Option<ApiShape>, String) {
        self.info
            .as_ref()
            .map(|i| (i.api, i.request_id.clone()))
            .unwrap_or((None, String::new()))
    }

    /// Whether the request's policy fails closed (false before a request is ours).
    fn fail_closed(&self) -> bool {
        self.info
            .as_ref()
            .is_some_and(|i| i.policy.failure_policy == FailurePolicy::FailClosed)
    }

    fn note(&mut self, decision: Decision, reason: &str) {
        if let Some(info) = self.info.as_mut() {
            info.record.decide(decision, reason);
        }
    }

    fn mark_response_skipped(&mut self) {
        if let Some(info) = self.info.as_mut() {
            info.response_skipped = true;
        }
    }

    /// The exchange is complete (or was answered locally): final hook, record, counters. Runs
    /// once.
    fn finish(&mut self, host: &dyn Host) {
        if self.recorded || self.info.is_none() {
            return;
        }
        self.recorded = true;
        let now = host.now_nanos();
        if let Some(info) = self.info.as_mut() {
            info.end_ns = Some(now);
        }
        self.with_cx(host, |f, cx| f.on_done(cx));
        self.seal_capture();
        if let Some(info) = self.info.as_ref() {
            let rec = &info.record;
            let json = rec.to_json();
            let sealed = match self.chain.as_ref().and_then(|c| c.try_borrow_mut().ok()) {
                Some(mut chain) => chain.seal(&json),
                None => json,
            };
            host.set_property(&[&format!("guard_{}", F::NAME)], &sealed);
            let reason = rec.reasons.first().map_or("none", String::as_str);
            self.metrics.count_decision(F::NAME, rec.decision, reason);
        }
    }

    /// Put the encrypted capture into the record (policies with `capture: true`).
    fn seal_capture(&mut self) {
        let Some(info) = self.info.as_mut() else {
            return;
        };
        if !info.policy.common.capture {
            return;
        }
        let value = match self.sealer.as_ref().and_then(|s| s.try_borrow_mut().ok()) {
            Some(mut sealer) => {
                let plain = serde_json::json!({
                    "api": info.api.map(ApiShape::as_str),
                    "request": String::from_utf8_lossy(&self.cap_req),
                    "response": String::from_utf8_lossy(&self.cap_resp),
                    "truncated": self.cap_truncated,
                });
                sealer.seal(plain.to_string().as_bytes())
            }
            None => Value::String("unavailable: no GUARD_CAPTURE_KEY in the VM".into()),
        };
        info.record.extra.insert("capture".into(), value);
    }

    /// The host is done with the stream (also after resets): make sure the record exists.
    pub fn on_done(&mut self, host: &dyn Host) {
        if !self.recorded && self.info.is_some() {
            if self.resp != RespState::Done && !self.local_reply_sent {
                let started = self
                    .info
                    .as_ref()
                    .is_some_and(|i| i.response_status.is_some());
                let details = if started {
                    code_details(host)
                } else {
                    String::new()
                };
                if started && is_upstream_cut(&details) {
                    self.upstream_cut(details);
                } else {
                    self.note(Decision::Allow, "incomplete");
                }
            }
            self.finish(host);
        }
    }

    /// The upstream cut the response after its headers (a reset, a timeout): nothing can be
    /// answered for it any more. Recorded (`upstream_cut`), and counted by a filter whose
    /// policy acts on upstream failures.
    fn upstream_cut(&mut self, details: String) {
        let Some(info) = self.info.as_mut() else {
            return;
        };
        info.record.decide(Decision::Allow, "upstream_cut");
        info.record.extra.insert(
            "upstream_cut".into(),
            json!({"status": info.response_status, "details": details}),
        );
        if info.policy.common.fallback.on_upstream_failure.is_some() {
            self.metrics
                .counter(&crate::metrics::upstream_failures(F::NAME, "cut"), 1);
        }
    }
}

/// Map an engine error to a reason code and a request-phase status.
fn failure_reason(err: &Error, request: bool) -> (&'static str, u16) {
    match err.kind() {
        ErrorKind::Unparsable => ("unparsable_body", if request { 400 } else { 502 }),
        ErrorKind::TooLarge => ("body_too_large", if request { 413 } else { 502 }),
        ErrorKind::CallOut => ("callout_failed", if request { 503 } else { 502 }),
        ErrorKind::Config | ErrorKind::BadLocation => {
            ("internal_error", if request { 500 } else { 502 })
        }
    }
}

/// Marks an answer a fallback made (value: `safe_answer` or `escalate`).
pub const FALLBACK_HEADER: &str = "x-guard-fallback";
/// Filter state set when a filter ended an answer with a fallback (read by filters above it,
/// and by access logs as `%FILTER_STATE(wasm.guard_fallback:PLAIN)%`).
pub const FALLBACK_PROPERTY: &str = "guard_fallback";
/// Most bytes of the last user message sent with an escalation.
const MAX_REQUEST_EXCERPT: usize = 4096;

/// A fallback's outcome, for [`GuardStream::deliver`].
struct Delivered {
    trigger: Trigger,
    outcome: FallbackAction,
    /// The answer text (`None`: the error).
    text: Option<String>,
    review_id: Option<String>,
    escalation_failed: bool,
    /// Record it (`false`: a policy without fallbacks, the error as before).
    record: bool,
}

/// Envoy's response code details (`via_upstream`, `response_timeout`,
/// `upstream_reset_before_response_started{connection_termination}`, ...).
fn code_details(host: &dyn Host) -> String {
    host.property(&["response", "code_details"])
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// What kind of upstream failure Envoy's code details describe (a metric label).
pub fn failure_kind(details: &str) -> &'static str {
    if details == "via_upstream" {
        "status"
    } else if details.contains("overflow") {
        "overflow"
    } else if details.starts_with("upstream_reset_before_response_started") {
        if details.contains("connection_failure") || details.contains("connection_timeout") {
            "connect_failure"
        } else {
            "reset"
        }
    } else if details.contains("timeout") {
        "timeout"
    } else if details == "no_healthy_upstream" {
        "no_healthy_upstream"
    } else {
        "other"
    }
}

/// Whether an unfinished response was cut by the upstream (code details of a reset or a
/// timeout after the response started) rather than by the client.
pub fn is_upstream_cut(details: &str) -> bool {
    details.starts_with("upstream_reset_after_response_started")
        || (details.contains("timeout")
            && !details.contains("stream_idle")
            && !details.contains("downstream"))
        || details.starts_with("upstream_max_stream_duration")
}

/// Review ids are the service's: `[A-Za-z0-9_-]`, 1..=64 chars.
fn valid_review_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The last at most `max` bytes of `s`, on a char boundary.
fn tail_chars(s: &str, max: usize) -> &str {
    let mut cut = s.len().saturating_sub(max);
    while cut < s.len() && !s.is_char_boundary(cut) {
        cut += 1;
    }
    s.get(cut..).unwrap_or_default()
}

fn contains_ascii_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len().max(1))
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn starts_with_ascii_ci(hay: &[u8], prefix: &[u8]) -> bool {
    hay.get(..prefix.len())
        .is_some_and(|h| h.eq_ignore_ascii_case(prefix))
}

/// The route name (Envoy's `xds.route_name`, older `route_name`).
/// Send a call-out through Envoy: its token, or `None` when Envoy refused it at once.
fn dispatch(host: &dyn Host, call: &CallOut) -> Option<u32> {
    let mut headers: Vec<(&str, &str)> = vec![
        (":method", call.method),
        (":path", call.path.as_str()),
        (":authority", call.authority.as_str()),
        ("content-type", "application/json"),
    ];
    headers.extend(call.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    host.dispatch_http_call(&call.cluster, &headers, &call.body, call.timeout_ms)
}

/// What came back from the call-out whose answer is being delivered.
fn callout_result(host: &dyn Host, body_size: usize) -> CallOutResult {
    let status = host
        .call_response_header(":status")
        .and_then(|s| String::from_utf8(s).ok())
        .and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(status) => CallOutResult::Response {
            status,
            body: host.call_response_body(body_size).unwrap_or_default(),
        },
        None => CallOutResult::Failed,
    }
}

pub fn route_name(host: &dyn Host) -> Option<String> {
    host.property(&["xds", "route_name"])
        .or_else(|| host.property(&["route_name"]))
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| !s.is_empty())
}

/// A string in the route's metadata: `filter_metadata.<namespace>.<key>`.
pub fn route_metadata_string(host: &dyn Host, namespace: &str, key: &str) -> Option<String> {
    host.property(&["xds", "route_metadata", "filter_metadata", namespace, key])
        .or_else(|| host.property(&["route_metadata", "filter_metadata", namespace, key]))
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| !s.is_empty())
}

/// The caller's identity: from the configured trusted header, else from a trusted claims
/// header, else from `jwt_authn` claims in dynamic metadata (protobuf `Struct` bytes, decoded by [`guard_core::protobuf`]).
pub fn resolve_identity<C>(host: &dyn Host, config: &FilterConfig<C>) -> Option<Identity> {
    if let Some(name) = config.identity.header.as_deref() {
        if let Some(v) = host.header(Dir::Request, name) {
            // A value that is not UTF-8 names nobody: treat it as absent rather than guess.
            if let Ok(s) = String::from_utf8(v) {
                if !s.is_empty() {
                    return Some(Identity {
                        subject: Some(s),
                        claims: Value::Null,
                    });
                }
            }
        }
    }
    if let Some(name) = config.identity.claims_header.as_deref() {
        // A value that is not claims names nobody (never a guess); the jwt metadata may.
        if let Some(claims) = host
            .header(Dir::Request, name)
            .and_then(|v| guard_core::config::decode_claims(&v))
        {
            let subject = match claims.get("sub") {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                _ => None,
            };
            return Some(Identity { subject, claims });
        }
    }
    let jwt = config.identity.jwt.as_ref()?;
    let base = [
        "metadata",
        "filter_metadata",
        jwt.namespace.as_str(),
        jwt.payload_key.as_str(),
    ];
    let bytes = host.property(&base)?;
    // Envoy 1.40 hands maps over as proxy-wasm pairs; older builds as a protobuf Struct.
    let claims = match guard_core::protobuf::decode_envoy_value(&bytes) {
        Value::Object(m) => Value::Object(m),
        other => guard_core::protobuf::decode_struct(&bytes).unwrap_or(other),
    };
    // The subject read on its own comes back as plain text: no decoding guesswork.
    let subject = host
        .property(&[
            base[0],
            base[1],
            base[2],
            base[3],
            jwt.subject_claim.as_str(),
        ])
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| !s.is_empty())
        .or_else(|| match claims.get(&jwt.subject_claim) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        });
    Some(Identity { subject, claims })
}
