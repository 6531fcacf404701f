//! The proxy-wasm adapter. Two surfaces:
//! - MCP `tools/call` requests (JSON-RPC over HTTP) from an agent to an MCP server. A gated call
//!   is held before it goes upstream (`hold`: the request waits, long-polling the approval
//!   service, bounded by `hold_max_ms`) or refused at once with the approval id (`defer`: a
//!   retry carrying `params._meta.approval_id` passes once, only if approved and its digest
//!   matches). Refusals are JSON-RPC errors (HTTP 200), so agents see them as tool errors.
//! - Tool calls in model answers (streamed or not): the whole answer waits with its headers
//!   (response-phase call-outs). `hold`: each gated call is decided by a person in turn;
//!   `defer`: each gated call is replaced at once by a message carrying its approval id, and a
//!   later request carrying `x-approval-id` lets the model's repeated call through only if the
//!   service's atomic consume accepts its digest. A refused call is removed from the answer and
//!   replaced by a deterministic message in the provider's shape, in whole answers and in
//!   streams alike.

use crate::digest::approval_digest;
use crate::policy::{self, Outcome as RuleOutcome, Policy};
use guard_core::api::ApiShape;
use guard_core::body::{RequestBody, ResponseBody, ToolArgs};
use guard_core::config::{FailurePolicy, FilterConfig};
use guard_core::error::{Error, Result};
use guard_core::segment::Source;
use guard_core::segment::Step;
use guard_core::sse::SseParser;
use guard_core::stream::{StreamAssembler, StreamDecoder};
use guard_core::stream_edit::remove_streamed_tool_calls;
use guard_core::verdict::{Decision, LocalReply};
use guard_host::driver::{
    CallOut, CallOutResult, Cx, GuardFilter, Outcome, RequestInfo, ResponsePlan,
};
use guard_host::host::Dir;
use guard_host::metrics::Metrics;
use serde::Deserialize;
use serde_json::{json, Value};
use std::rc::Rc;

pub const NAME: &str = "approval_gate";

/// Hold the request or answer at once with the approval id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Hold,
    Defer,
}

/// Where the approval service is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// The Envoy cluster of the approval service.
    pub cluster: String,
    #[serde(default)]
    pub authority: Option<String>,
    /// Timeout of a create or consume call (ms).
    #[serde(default = "default_call_ms")]
    pub timeout_ms: u64,
    /// VM environment variable holding the service's client token (sent as
    /// `x-approval-client-token`; a secret, so never in the plugin config). Unset or empty:
    /// no token is sent.
    #[serde(default = "default_token_env")]
    pub client_token_env: String,
}

fn default_token_env() -> String {
    "GUARD_APPROVAL_CLIENT_TOKEN".to_string()
}

fn default_call_ms() -> u64 {
    2000
}

/// The filter's own policy fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Rules over tool calls ([`policy::RuleDef`]); the first that matches decides.
    pub rules: Vec<policy::RuleDef>,
    /// Outcome when no rule matches.
    pub default: RuleOutcome,
    pub mode: Mode,
    pub service: Option<Service>,
    /// Longest a held request waits for a person (ms).
    pub hold_max_ms: u64,
    /// How long an approval request stays open (s).
    pub expires_in_s: u64,
    /// When the service is down or slow: `deny` (default) or `allow`.
    pub on_service_failure: RuleOutcome,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rules: Vec::new(),
            default: RuleOutcome::Allow,
            mode: Mode::Hold,
            service: None,
            hold_max_ms: 120_000,
            expires_in_s: 300,
            on_service_failure: RuleOutcome::Deny,
        }
    }
}

pub struct Compiled {
    pub settings: Settings,
    pub policy: Policy,
    /// The client token, read from the VM environment at configure time.
    client_token: Option<String>,
}

/// Longest single long poll (the service caps `wait` at 120 s; shorter polls bound a lost one).
const WAIT_SLICE_MS: u64 = 30_000;

pub struct Shared {
    metrics: Rc<Metrics>,
}

#[derive(Debug, Clone, PartialEq)]
enum Pending {
    None,
    Create,
    Wait { id: String },
    Consume { id: String },
}

/// Where a tool call of an answer sits, to remove it when refused.
#[derive(Debug, Clone, PartialEq)]
enum Loc {
    /// Not in an answer (an MCP request).
    None,
    /// A whole answer: the call's JSON location and its choice.
    Whole(Vec<Step>, usize),
    /// A stream: the choice and the call's index as the stream names it.
    Stream(usize, usize),
}

/// One tool call under judgement.
#[derive(Debug, Clone)]
struct Call {
    tool: String,
    args: Value,
    digest: String,
    rule: Option<String>,
    loc: Loc,
}

impl Default for Call {
    fn default() -> Self {
        Call {
            tool: String::new(),
            args: Value::Null,
            digest: String::new(),
            rule: None,
            loc: Loc::None,
        }
    }
}

/// Most approval ids one request may carry in `x-approval-id`.
const MAX_APPROVAL_IDS: usize = 4;
/// Longest conversation excerpt sent to the approval service (the tail is kept).
const MAX_EXCERPT_BYTES: usize = 4096;
/// Messages of the conversation the excerpt shows (the last ones).
const EXCERPT_MESSAGES: usize = 4;

pub struct ApprovalGate {
    call: Call,
    pending: Pending,
    deadline_ns: u64,
    /// An LLM API request: its answer's tool calls are judged.
    api: Option<ApiShape>,
    streaming: bool,
    /// A streamed answer could hold a gated call (else it streams through unheld).
    stream_may_gate: bool,
    /// Gated calls of the answer still to be approved (after `call`), last first.
    queue: Vec<Call>,
    caller: String,
    conversation: String,
    /// The whole answer under judgement (non-streamed), parsed, to rewrite when a call is
    /// refused.
    answer: Option<ResponseBody>,
    /// The streamed answer under judgement, as received, to rewrite when a call is refused.
    stream_body: Vec<u8>,
    /// Refused calls of the answer, with why.
    refused: Vec<(Call, String)>,
    /// The last messages of an LLM request (real values: the service masks them for the
    /// approvers who may not see PII).
    excerpt: String,
    /// Approval ids of earlier deferred calls this request carries (`x-approval-id`), in the
    /// order of the answer's gated calls.
    approval_ids: Vec<String>,
}

/// A tool call of an answer: name, arguments, location.
type AnswerCall = (String, Value, Loc);

/// JSON-RPC error code of a refused tool call (server-defined range).
pub const REFUSED_CODE: i64 = -32001;

impl ApprovalGate {
    fn service<'a>(cx: &'a Cx<'_, Self>) -> Option<&'a Service> {
        cx.settings().settings.service.as_ref()
    }

    fn call_out(
        cx: &Cx<'_, Self>,
        method: &'static str,
        path: String,
        body: Value,
        timeout_ms: u64,
    ) -> Option<CallOut> {
        let s = Self::service(cx)?;
        Some(CallOut {
            cluster: s.cluster.clone(),
            method,
            authority: s.authority.clone().unwrap_or_else(|| s.cluster.clone()),
            path,
            headers: cx
                .settings()
                .client_token
                .iter()
                .map(|t| ("x-approval-client-token".to_string(), t.clone()))
                .collect(),
            body: if body.is_null() {
                Vec::new()
            } else {
                body.to_string().into_bytes()
            },
            timeout_ms,
        })
    }

    fn count(cx: &Cx<'_, Self>, outcome: &str) {
        cx.shared
            .metrics
            .counter(&format!("guard.{NAME}.outcome.{outcome}.tool_calls"), 1);
    }

    /// Refuse the call: a JSON-RPC error (the reply body is built in `reply_body`).
    fn refuse(&self, cx: &mut Cx<'_, Self>, reason: &str, message: &str) -> Result<Outcome> {
        Self::count(cx, reason);
        cx.info.record.extra.insert("outcome".into(), json!(reason));
        // JSON-RPC errors travel in a 200; an answer's refusal is the provider's error shape.
        let status = if self.api.is_some() { 403 } else { 200 };
        Ok(Outcome::Reply(LocalReply::new(status, reason, message)))
    }

    /// Ask the service for an approval of `self.call`.
    fn create(&mut self, cx: &mut Cx<'_, Self>) -> Result<Outcome> {
        let s = &cx.settings().settings;
        let mode = s.mode;
        let body = json!({
            "tool": self.call.tool,
            "arguments": self.call.args,
            "digest": self.call.digest,
            "caller": self.caller,
            "conversation": self.conversation,
            "excerpt_raw": self.excerpt,
            "rule": self.call.rule,
            "mode": match mode { Mode::Hold => "hold", Mode::Defer => "defer" },
            "expires_in_s": s.expires_in_s,
            "request_id": cx.info.request_id,
        });
        if self.deadline_ns == 0 {
            self.deadline_ns = cx
                .host
                .now_nanos()
                .saturating_add(s.hold_max_ms.saturating_mul(1_000_000));
        }
        let timeout = Self::service(cx).map_or(2000, |s| s.timeout_ms);
        let Some(call) = Self::call_out(cx, "POST", "/v1/approvals".into(), body, timeout) else {
            return self.service_failed(cx);
        };
        self.pending = Pending::Create;
        Ok(Outcome::CallOut(call))
    }

    /// Whether a streamed answer to this LLM request could hold a call the policy gates: the
    /// request declares tools and one of them could be gated (a tool the body model cannot
    /// name, such as a provider's built-in or remote tool, counts as gated). Otherwise the stream
    /// is not held and keeps its time to first token; a call of an undeclared tool in it is
    /// schema-guard's to refuse (`undeclared_tool`). Whole answers are always judged.
    fn answer_may_need_judging(&self, cx: &Cx<'_, Self>, api: ApiShape, v: Value) -> bool {
        let declared = v.get("tools").and_then(Value::as_array).map_or(0, Vec::len);
        if declared == 0 {
            return false;
        }
        let Ok(req) = RequestBody::from_value(api, v) else {
            return true;
        };
        let tools = req.tools();
        let policy = &cx.settings().policy;
        tools.len() < declared
            || tools
                .iter()
                .any(|t| t.name.is_empty() || policy.could_gate(t.name))
    }

    /// The answer's tool calls (name, arguments), from a whole body or an assembled stream.
    fn answer_calls(
        &mut self,
        cx: &Cx<'_, Self>,
        api: ApiShape,
        body: &[u8],
    ) -> Result<Vec<AnswerCall>> {
        let args_of = |text: &str| {
            serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::String(text.to_string()))
        };
        if !self.streaming {
            let resp = ResponseBody::parse(api, body)?;
            let calls = resp
                .tool_calls()
                .into_iter()
                .map(|c| {
                    let args = match c.arguments {
                        ToolArgs::Text(t) => args_of(t),
                        ToolArgs::Json(v) => v.clone(),
                    };
                    let loc = Loc::Whole(c.path.0.clone(), c.choice.unwrap_or(0));
                    (c.name.to_string(), args, loc)
                })
                .collect();
            // Kept parsed, to rewrite when a call is refused.
            self.answer = Some(resp);
            return Ok(calls);
        }
        let mut parser = SseParser::new(cx.max_sse_event_bytes());
        let mut events = Vec::new();
        parser.push(body, &mut |e| events.push(e))?;
        parser.finish(&mut |e| events.push(e))?;
        let mut decoder = StreamDecoder::new(api);
        let mut asm = StreamAssembler::new(body.len().saturating_add(1024));
        let mut deltas = Vec::new();
        for ev in &events {
            deltas.clear();
            decoder.decode(ev, &mut deltas)?;
            for d in &deltas {
                asm.apply(d)?;
            }
        }
        // Kept as received, to rewrite when a call is refused.
        body.clone_into(&mut self.stream_body);
        Ok(asm
            .result()
            .choices
            .iter()
            .enumerate()
            .flat_map(|(choice, c)| c.tool_calls.iter().map(move |t| (choice, t)))
            .map(|(choice, t)| {
                (
                    t.name.clone().unwrap_or_default(),
                    args_of(&t.arguments),
                    Loc::Stream(choice, t.index),
                )
            })
            .collect())
    }

    fn pass(&self, cx: &mut Cx<'_, Self>, outcome: &str) -> Result<Outcome> {
        Self::count(cx, outcome);
        cx.info
            .record
            .extra
            .insert("outcome".into(), json!(outcome));
        Ok(Outcome::Continue)
    }

    fn service_failed(&mut self, cx: &mut Cx<'_, Self>) -> Result<Outcome> {
        if cx.settings().settings.on_service_failure == RuleOutcome::Allow {
            cx.info
                .record
                .decide(Decision::Flag, "approval_unavailable");
            return self.pass(cx, "service_failed_allowed");
        }
        if self.api.is_some() {
            // An answer goes on without the call, as for any refusal.
            return self.not_granted(
                cx,
                "approval_unavailable",
                "the approval service is unavailable".into(),
            );
        }
        cx.info
            .record
            .decide(Decision::Block, "approval_unavailable");
        self.refuse(
            cx,
            "approval_unavailable",
            "the approval service is unavailable; the tool call was not run",
        )
    }

    fn wait(&mut self, cx: &mut Cx<'_, Self>, id: String) -> Result<Outcome> {
        let now = cx.host.now_nanos();
        let left_ms = self.deadline_ns.saturating_sub(now) / 1_000_000;
        if left_ms == 0 {
            return self.not_granted(cx, "approval_expired", "nobody approved it in time".into());
        }
        let slice = left_ms.min(WAIT_SLICE_MS);
        let path = format!("/v1/approvals/{id}/wait?timeout_ms={slice}");
        let Some(call) = Self::call_out(cx, "GET", path, Value::Null, slice.saturating_add(2000))
        else {
            return self.service_failed(cx);
        };
        self.pending = Pending::Wait { id };
        Ok(Outcome::CallOut(call))
    }

    /// The record's status decides a held call.
    fn decided(&mut self, cx: &mut Cx<'_, Self>, id: String, record: &Value) -> Result<Outcome> {
        match record.get("status").and_then(Value::as_str) {
            Some("approved") => {
                Self::count(cx, "approved");
                self.next_or_finish(cx)
            }
            Some("denied") => {
                let why = record
                    .get("reason")
                    .and_then(Value::as_str)
                    .filter(|r| !r.is_empty())
                    .unwrap_or("no reason given");
                self.not_granted(cx, "approval_denied", format!("a person denied it ({why})"))
            }
            Some("pending") => self.wait(cx, id),
            _ => self.not_granted(cx, "approval_expired", "nobody approved it in time".into()),
        }
    }

    /// The current call was not granted: an answer goes on without it (the call replaced by a
    /// deterministic message), an MCP call is refused.
    fn not_granted(&mut self, cx: &mut Cx<'_, Self>, reason: &str, why: String) -> Result<Outcome> {
        if self.api.is_some() {
            Self::count(cx, reason);
            cx.info.record.reasons.push(reason.to_string());
            let call = std::mem::take(&mut self.call);
            self.refused.push((call, why));
            return self.next_or_finish(cx);
        }
        cx.info.record.decide(Decision::Block, reason);
        let msg = format!("the tool call was not run: {why}");
        self.refuse(cx, reason, &msg)
    }

    /// Ask for the current call of an answer: consume the approval id the request carries for
    /// it (a retry of a deferred call), else create an approval request.
    fn ask(&mut self, cx: &mut Cx<'_, Self>) -> Result<Outcome> {
        if cx.settings().settings.mode == Mode::Defer && !self.approval_ids.is_empty() {
            let id = self.approval_ids.remove(0);
            return self.consume(cx, id);
        }
        self.create(cx)
    }

    /// Spend approval `id` on the current call (the service checks the digest, once).
    fn consume(&mut self, cx: &mut Cx<'_, Self>, id: String) -> Result<Outcome> {
        let body = json!({"digest": self.call.digest});
        let timeout = Self::service(cx).map_or(2000, |s| s.timeout_ms);
        let Some(call) = Self::call_out(
            cx,
            "POST",
            format!("/v1/approvals/{id}/consume"),
            body,
            timeout,
        ) else {
            return self.service_failed(cx);
        };
        cx.info.record.extra.insert("approval_id".into(), json!(id));
        self.pending = Pending::Consume { id };
        Ok(Outcome::CallOut(call))
    }

    /// The answer's next gated call, or the end: the answer unchanged when every call was
    /// granted, else rewritten without the refused calls.
    fn next_or_finish(&mut self, cx: &mut Cx<'_, Self>) -> Result<Outcome> {
        if let Some(next) = self.queue.pop() {
            self.call = next;
            return self.ask(cx);
        }
        if self.refused.is_empty() {
            // Every gated call was granted (each counted as `approved` when decided).
            cx.info.record.decide(Decision::Allow, "approved");
            cx.info
                .record
                .extra
                .insert("outcome".into(), json!("approved"));
            return Ok(Outcome::Continue);
        }
        let message = self
            .refused
            .iter()
            .map(|(c, why)| format!("The tool call `{}` was not run: {why}.", c.tool))
            .collect::<Vec<_>>()
            .join(" ");
        let bytes = if self.streaming {
            let locs: Vec<(usize, usize)> = self
                .refused
                .iter()
                .filter_map(|(c, _)| match c.loc {
                    Loc::Stream(choice, index) => Some((choice, index)),
                    _ => None,
                })
                .collect();
            let api = self
                .api
                .ok_or_else(|| Error::unparsable("no API for the answer"))?;
            if locs.len() != self.refused.len() {
                return Err(Error::unparsable(
                    "a refused tool call could not be located in the stream",
                ));
            }
            let body = std::mem::take(&mut self.stream_body);
            match remove_streamed_tool_calls(api, &body, cx.max_sse_event_bytes(), &locs, &message)
            {
                Ok(bytes) => bytes,
                Err(e) => {
                    // The stream cannot be rewritten faithfully: refuse it whole (nothing of it
                    // has reached the client).
                    cx.host.log(
                        guard_host::host::LogLevel::Warn,
                        &format!("approval-gate: refused stream not rewritten: {e}"),
                    );
                    let reason = cx
                        .info
                        .record
                        .reasons
                        .last()
                        .cloned()
                        .unwrap_or_else(|| "tool_denied".into());
                    cx.info.record.decide(Decision::Block, &reason);
                    let msg = format!("the tool call was not run: {message}");
                    let status = 403;
                    return Ok(Outcome::Reply(LocalReply::new(status, &reason, &msg)));
                }
            }
        } else {
            // Whole answers are kept parsed.
            let Some(mut resp) = self.answer.take() else {
                return Err(Error::unparsable(
                    "a refused tool call has no answer to be removed from",
                ));
            };
            let locs: Vec<(&[Step], usize)> = self
                .refused
                .iter()
                .filter_map(|(c, _)| match &c.loc {
                    Loc::Whole(l, ch) => Some((l.as_slice(), *ch)),
                    _ => None,
                })
                .collect();
            if locs.len() != self.refused.len() || !resp.remove_tool_calls(&locs, &message) {
                return Err(Error::unparsable(
                    "a refused tool call could not be located in the answer",
                ));
            }
            resp.to_bytes()
        };
        cx.info.record.decide(Decision::Modify, "tool_call_removed");
        cx.info
            .record
            .extra
            .insert("calls_removed".into(), json!(self.refused.len()));
        Ok(Outcome::Replace(bytes))
    }
}

/// Whether `id` can be an approval id (it goes into a path).
fn valid_approval_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The approval ids of an `x-approval-id` header (comma-separated, in order; invalid ones and
/// those past [`MAX_APPROVAL_IDS`] are dropped).
fn approval_ids(header: &str) -> Vec<String> {
    header
        .split(',')
        .map(str::trim)
        .filter(|id| valid_approval_id(id))
        .take(MAX_APPROVAL_IDS)
        .map(str::to_string)
        .collect()
}

/// The last [`EXCERPT_MESSAGES`] messages of an LLM request (end-user, assistant and tool
/// results; not system prompts), one `role: text` line each, the tail of at most
/// [`MAX_EXCERPT_BYTES`].
fn excerpt(api: ApiShape, body: &[u8]) -> String {
    let Ok(req) = RequestBody::parse(api, body) else {
        return String::new();
    };
    let mut lines: Vec<(Option<usize>, String)> = Vec::new();
    for seg in req.segments() {
        let role = match seg.source {
            Source::User => "user",
            Source::Assistant => "assistant",
            Source::ToolResult => "tool",
            _ => continue,
        };
        match lines.last_mut() {
            Some((m, text)) if *m == seg.message && seg.message.is_some() => {
                text.push(' ');
                text.push_str(&seg.text);
            }
            _ => lines.push((seg.message, format!("{role}: {}", seg.text))),
        }
    }
    let skip = lines.len().saturating_sub(EXCERPT_MESSAGES);
    let joined = lines
        .into_iter()
        .skip(skip)
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\n");
    if joined.len() <= MAX_EXCERPT_BYTES {
        return joined;
    }
    let mut start = joined.len().saturating_sub(MAX_EXCERPT_BYTES);
    while !joined.is_char_boundary(start) {
        start = start.saturating_add(1);
    }
    format!("…{}", joined.get(start..).unwrap_or_default())
}

/// The JSON-RPC id of a request body, for the reply.
fn rpc_id(v: &Value) -> Value {
    v.get("id").cloned().unwrap_or(Value::Null)
}

impl GuardFilter for ApprovalGate {
    type Settings = Settings;
    type Compiled = Compiled;
    type Shared = Shared;
    const NAME: &'static str = NAME;
    const DEFAULT_FAILURE: FailurePolicy = FailurePolicy::FailClosed;
    const ALL_REQUESTS: bool = true;

    fn compile(settings: Settings, path: &str) -> Result<Compiled> {
        let policy = policy::compile(
            policy::Settings {
                rules: settings.rules.clone(),
                default: settings.default,
            },
            path,
        )?;
        let needs_service = settings.default == RuleOutcome::RequireApproval
            || settings
                .rules
                .iter()
                .any(|r| r.outcome == RuleOutcome::RequireApproval);
        if needs_service && settings.service.is_none() {
            return Err(Error::config(format!(
                "{path}/service: a rule requires approval, so the approval service's cluster is needed"
            )));
        }
        if !(1_000..=600_000).contains(&settings.hold_max_ms) {
            return Err(Error::config(format!(
                "{path}/hold_max_ms: {} is not within 1000..=600000",
                settings.hold_max_ms
            )));
        }
        if !(1..=86_400).contains(&settings.expires_in_s) {
            return Err(Error::config(format!(
                "{path}/expires_in_s: {} is not within 1..=86400",
                settings.expires_in_s
            )));
        }
        if settings.on_service_failure == RuleOutcome::RequireApproval {
            return Err(Error::config(format!(
                "{path}/on_service_failure: allow or deny"
            )));
        }
        let client_token = settings
            .service
            .as_ref()
            .and_then(|s| std::env::var(&s.client_token_env).ok())
            .filter(|t| !t.is_empty());
        Ok(Compiled {
            settings,
            policy,
            client_token,
        })
    }

    fn init_shared(metrics: &Rc<Metrics>, _config: &FilterConfig<Compiled>) -> Shared {
        Shared {
            metrics: Rc::clone(metrics),
        }
    }

    fn new_stream() -> Self {
        ApprovalGate {
            call: Call::default(),
            pending: Pending::None,
            deadline_ns: 0,
            api: None,
            streaming: false,
            stream_may_gate: true,
            queue: Vec::new(),
            caller: String::new(),
            conversation: String::new(),
            answer: None,
            stream_body: Vec::new(),
            refused: Vec::new(),
            excerpt: String::new(),
            approval_ids: Vec::new(),
        }
    }

    fn on_request_body(&mut self, cx: &mut Cx<'_, Self>, body: &[u8]) -> Result<Outcome> {
        let v = match guard_core::body::parse_strict(body) {
            Ok(v) => v,
            // A body that starts like JSON but is not strict JSON (truncated, trailing data, a
            // member named twice, invalid UTF-8) may still be a tools/call to an MCP server whose
            // parser is lenient (keeps the first of two `name`s, ignores trailing data): the
            // failure policy decides (fail_closed: 400 `unparsable_body`), never a silent pass.
            Err(e) if looks_like_json(body) => return Err(e),
            Err(_) => return Ok(Outcome::Continue), // neither JSON-RPC nor an LLM request
        };
        self.caller = cx
            .info
            .identity
            .as_ref()
            .and_then(|i| i.subject.clone())
            .unwrap_or_else(|| "anonymous".into());
        let jsonrpc = v.get("jsonrpc").is_some()
            || v.as_array()
                .is_some_and(|a| a.iter().any(|m| m.get("jsonrpc").is_some()));
        if !jsonrpc {
            // An LLM API request: the answer's tool calls are judged.
            let api = cx
                .config
                .apis
                .shape_for_path(&cx.info.path)
                .or_else(|| ApiShape::sniff_request(&v));
            if let Some(api) = api {
                self.stream_may_gate = self.answer_may_need_judging(cx, api, v);
                self.api = Some(api);
                cx.info.api = Some(api);
                cx.info.record.api = Some(api);
                self.conversation = cx
                    .host
                    .header(Dir::Request, "x-conversation-id")
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                self.approval_ids = cx
                    .host
                    .header(Dir::Request, "x-approval-id")
                    .map(|b| approval_ids(&String::from_utf8_lossy(&b)))
                    .unwrap_or_default();
                if self.stream_may_gate || !self.approval_ids.is_empty() {
                    self.excerpt = excerpt(api, body);
                }
            }
            return Ok(Outcome::Continue);
        }
        cx.info.record.extra.insert("rpc_id".into(), rpc_id(&v));
        if v.is_array() {
            // Batches (dropped from MCP in 2025-06): any tools/call in one is judged strictly.
            let gated = v
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m.get("method") == Some(&json!("tools/call")));
            if gated {
                cx.info.record.decide(Decision::Block, "batched_tool_call");
                return self.refuse(
                    cx,
                    "batched_tool_call",
                    "tool calls in a JSON-RPC batch are not accepted here",
                );
            }
            return Ok(Outcome::Continue);
        }
        if v.get("method").and_then(Value::as_str) != Some("tools/call") {
            return Ok(Outcome::Continue);
        }
        let params = v.get("params").cloned().unwrap_or(Value::Null);
        let tool = params
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let args = params
            .get("arguments")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let claims = cx
            .info
            .identity
            .as_ref()
            .map(|i| i.claims.clone())
            .unwrap_or(Value::Null);
        let caller = self.caller.clone();
        let conversation = cx
            .host
            .header(Dir::Request, "mcp-session-id")
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let verdict = cx.settings().policy.evaluate(&tool, &args, &claims);
        cx.info.record.extra.insert("tool".into(), json!(tool));
        if let Some(r) = &verdict.rule {
            cx.info.record.rules.push(r.clone());
        }
        self.conversation = conversation.clone();
        self.call = Call {
            digest: approval_digest(&tool, &args, &caller, &conversation),
            tool,
            args,
            rule: verdict.rule,
            loc: Loc::None,
        };
        match verdict.outcome {
            RuleOutcome::Allow => self.pass(cx, "allowed"),
            RuleOutcome::Deny => {
                cx.info.record.decide(Decision::Block, "tool_denied");
                self.refuse(
                    cx,
                    "tool_denied",
                    "the policy does not allow this tool call",
                )
            }
            RuleOutcome::RequireApproval => {
                // A retry of a deferred call names its approval.
                let approval_id = params
                    .pointer("/_meta/approval_id")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if let Some(id) = approval_id.filter(|id| valid_approval_id(id)) {
                    return self.consume(cx, id);
                }
                self.create(cx)
            }
        }
    }

    fn on_callout(&mut self, cx: &mut Cx<'_, Self>, result: CallOutResult) -> Result<Outcome> {
        let pending = std::mem::replace(&mut self.pending, Pending::None);
        let (status, body) = match result {
            CallOutResult::Response { status, body } => (status, body),
            CallOutResult::Failed => return self.service_failed(cx),
        };
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        match pending {
            Pending::None => Ok(Outcome::Continue),
            Pending::Create => {
                let Some(id) = v
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|_| status == 201)
                    .map(str::to_string)
                else {
                    return self.service_failed(cx);
                };
                cx.info.record.extra.insert("approval_id".into(), json!(id));
                if cx.settings().settings.mode == Mode::Defer && self.api.is_some() {
                    // The call is replaced by a message naming its approval.
                    let why = format!("it waits for a person's approval (approval id {id}); once approved, send the same request again with the header `x-approval-id: {id}`");
                    return self.not_granted(cx, "approval_required", why);
                }
                if cx.settings().settings.mode == Mode::Defer {
                    cx.info.record.decide(Decision::Block, "approval_required");
                    return self.refuse(cx, "approval_required", &format!("the tool call waits for a person's approval (approval id {id}); retry it unchanged with params._meta.approval_id once approved"));
                }
                self.wait(cx, id)
            }
            Pending::Wait { id } => {
                if status != 200 {
                    return self.service_failed(cx);
                }
                self.decided(cx, id, &v)
            }
            Pending::Consume { id: _ } => match (status, v.get("error").and_then(Value::as_str)) {
                (200, _) if self.api.is_some() => {
                    Self::count(cx, "approved");
                    self.next_or_finish(cx)
                }
                (200, _) => {
                    cx.info.record.decide(Decision::Allow, "approved");
                    self.pass(cx, "approved")
                }
                (409 | 410 | 404, Some(code)) => {
                    let code = match code {
                        "digest_mismatch" => "approval_mismatch",
                        "already_used" => "approval_used",
                        "expired" => "approval_expired",
                        _ => "approval_not_granted",
                    };
                    let why = "the approval does not cover this tool call (not approved, already used, expired, or the arguments changed)";
                    if self.api.is_some() {
                        return self.not_granted(cx, code, why.to_string());
                    }
                    cx.info.record.decide(Decision::Block, code);
                    self.refuse(cx, code, why)
                }
                _ => self.service_failed(cx),
            },
        }
    }

    fn response_plan(&mut self, cx: &mut Cx<'_, Self>, streaming: bool) -> ResponsePlan {
        if self.api.is_none() || !cx.response_ok() || (streaming && !self.stream_may_gate) {
            return ResponsePlan::Skip;
        }
        // A gated call must not reach the client before it is judged: the whole answer waits,
        // streamed ones included (bounded by max_response_body_bytes).
        self.streaming = streaming;
        ResponsePlan::Buffer { hold_headers: true }
    }

    fn on_response_body(&mut self, cx: &mut Cx<'_, Self>, body: &[u8]) -> Result<Outcome> {
        let Some(api) = self.api else {
            return Ok(Outcome::Continue);
        };
        let calls = self.answer_calls(cx, api, body)?;
        let claims = cx
            .info
            .identity
            .as_ref()
            .map(|i| i.claims.clone())
            .unwrap_or(Value::Null);
        let mut gated = Vec::new();
        for (tool, args, loc) in calls {
            let verdict = cx.settings().policy.evaluate(&tool, &args, &claims);
            if let Some(r) = &verdict.rule {
                cx.info.record.rules.push(r.clone());
            }
            match verdict.outcome {
                RuleOutcome::Allow => {}
                RuleOutcome::Deny => {
                    // The answer goes on without the call.
                    Self::count(cx, "tool_denied");
                    cx.info.record.reasons.push("tool_denied".into());
                    let call = Call {
                        tool,
                        args,
                        loc,
                        ..Call::default()
                    };
                    self.refused
                        .push((call, "the policy does not allow it".into()));
                }
                RuleOutcome::RequireApproval => gated.push(Call {
                    digest: approval_digest(&tool, &args, &self.caller, &self.conversation),
                    tool,
                    args,
                    rule: verdict.rule,
                    loc,
                }),
            }
        }
        if gated.is_empty() {
            if !self.refused.is_empty() {
                return self.next_or_finish(cx);
            }
            return self.pass(cx, "allowed");
        }
        cx.info
            .record
            .extra
            .insert("gated_calls".into(), json!(gated.len()));
        gated.reverse();
        let Some(first) = gated.pop() else {
            return Ok(Outcome::Continue);
        };
        cx.info
            .record
            .extra
            .insert("tool".into(), json!(first.tool));
        self.queue = gated;
        self.call = first;
        self.ask(cx)
    }

    fn reply_body(info: &RequestInfo<Compiled>, reply: &LocalReply) -> Option<Vec<u8>> {
        let extra = &info.record.extra;
        if info.api.is_some() || !extra.contains_key("rpc_id") {
            return None; // the provider's error shape
        }
        let mut data = serde_json::Map::new();
        data.insert("reason".into(), json!(reply.reason));
        data.insert("request_id".into(), json!(info.request_id));
        if let Some(id) = extra.get("approval_id") {
            data.insert("approval_id".into(), id.clone());
        }
        let v = json!({
            "jsonrpc": "2.0",
            "id": extra.get("rpc_id").cloned().unwrap_or(Value::Null),
            "error": {"code": REFUSED_CODE, "message": reply.message, "data": data},
        });
        serde_json::to_vec(&v).ok()
    }
}

/// Whether a body's first non-whitespace byte opens a JSON object or array.
fn looks_like_json(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{' || *b == b'[')
}
