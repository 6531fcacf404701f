//! The schema-guard filter: requests against the operator's request schema; answers against
//! what the request declared (structured output, tools) and the operator's response schema;
//! streamed answers assembled across events and judged when each call or message completes.

use crate::check::{drop_tool_calls, Expect, Finding, Kind, Progress};
use crate::engine::{CompiledSchema, Limits, Remotes, SchemaCache};
use guard_core::body::{RequestBody, ResponseBody};
use guard_core::config::{FailurePolicy, FilterConfig};
use guard_core::error::{Error, Result};
use guard_core::sse::SseParser;
use guard_core::stream::{Channel, Delta, StreamAssembler, StreamDecoder};
use guard_core::verdict::{Decision, LocalReply};
use guard_host::driver::{CallOut, CallOutResult, Chunk, Cx, GuardFilter, Outcome, ResponsePlan};
use guard_host::host::Dir;
use guard_host::metrics::Metrics;
use serde::Deserialize;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;

pub const NAME: &str = "schema_guard";

/// Metric names (Envoy adds `wasmcustom.`).
pub mod metric {
    /// Failed checks by kind (`output`, `tool_arguments`, `undeclared_tool`, `response`,
    /// `request`) and the action taken (`dry_run_<action>` in dry run).
    pub fn violations(kind: &str, action: &str) -> String {
        format!("guard.schema_guard.category.{kind}.action.{action}.violations")
    }
    /// Checks run (tool calls, outputs, bodies).
    pub const CHECKS: &str = "guard.schema_guard.checks";
    /// Re-asks by outcome (`attempted`, `succeeded`, `failed`).
    pub fn repairs(outcome: &str) -> String {
        format!("guard.schema_guard.repair.{outcome}.answers")
    }
}

/// What to do when a check fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// 502 (answers) / 400 (requests) in the provider's error shape, or an error event that ends
    /// a stream.
    Block,
    /// Pass, with the verdict in the flag header (non-streamed answers, requests) and the record.
    Flag,
    /// Remove the offending tool call and add a deterministic assistant message (non-streamed
    /// answers; a stream is blocked instead).
    DropToolCall,
    /// Ask the model again (through Envoy's own listener, see [`RepairSettings`]) with the
    /// validation errors, up to `repair.max_attempts` times; an answer that still fails is
    /// blocked (non-streamed answers; a stream is blocked at once).
    Repair,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Block => "block",
            OnFailure::Flag => "flag",
            OnFailure::DropToolCall => "drop_tool_call",
            OnFailure::Repair => "repair",
        }
    }
}

fn block() -> OnFailure {
    OnFailure::Block
}

/// Per-kind failure actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actions {
    #[serde(default = "block")]
    pub output: OnFailure,
    #[serde(default = "block")]
    pub tool_arguments: OnFailure,
    #[serde(default = "block")]
    pub undeclared_tool: OnFailure,
    #[serde(default = "block")]
    pub response: OnFailure,
    #[serde(default = "block")]
    pub request: OnFailure,
}

impl Default for Actions {
    fn default() -> Self {
        Actions {
            output: OnFailure::Block,
            tool_arguments: OnFailure::Block,
            undeclared_tool: OnFailure::Block,
            response: OnFailure::Block,
            request: OnFailure::Block,
        }
    }
}

impl Actions {
    pub fn for_kind(&self, kind: Kind) -> OnFailure {
        match kind {
            Kind::Output => self.output,
            Kind::ToolArguments => self.tool_arguments,
            Kind::UndeclaredTool => self.undeclared_tool,
            Kind::Response => self.response,
            Kind::Request => self.request,
        }
    }
}

/// How streamed answers are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StreamMode {
    /// Hold the whole stream (bounded by `max_buffer_bytes`) until it is judged.
    #[default]
    Buffer,
    /// Forward at once; a failure ends the stream with an error event.
    Passthrough,
}

/// Limits in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    pub max_schema_bytes: usize,
    pub max_schema_depth: usize,
    pub max_instance_bytes: usize,
    pub max_errors: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        let l = Limits::default();
        LimitSettings {
            max_schema_bytes: l.max_schema_bytes,
            max_schema_depth: l.max_schema_depth,
            max_instance_bytes: l.max_instance_bytes,
            max_errors: l.max_errors,
        }
    }
}

/// What to do with a schema the request declares that cannot be compiled (invalid, too big).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalidSchema {
    /// 400, reason `invalid_schema`.
    #[default]
    Block,
    /// Leave that schema unchecked (recorded).
    Skip,
}

/// schema-guard settings of one policy (see docs/schema-guard.md).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Check answers against the structured-output schema the request declared.
    #[serde(default = "yes")]
    pub structured_output: bool,
    /// Check tool calls in answers (declared tool, arguments against its schema).
    #[serde(default = "yes")]
    pub tool_calls: bool,
    /// Operator schema for request bodies (whole JSON body).
    #[serde(default)]
    pub request_schema: Option<Value>,
    /// Operator schema for answer bodies (whole JSON body, non-streamed answers).
    #[serde(default)]
    pub response_schema: Option<Value>,
    #[serde(default)]
    pub on_failure: Actions,
    #[serde(default)]
    pub on_invalid_schema: OnInvalidSchema,
    #[serde(default)]
    pub stream_mode: StreamMode,
    /// Most bytes a `buffer`-mode stream holds.
    #[serde(default = "default_max_buffer")]
    pub max_buffer_bytes: usize,
    #[serde(default)]
    pub limits: LimitSettings,
    #[serde(default = "default_flag_header")]
    pub flag_header: String,
    #[serde(default)]
    pub dry_run: bool,
    /// Where and how a `repair` re-asks the model.
    #[serde(default)]
    pub repair: Option<RepairSettings>,
}

/// A `repair` sends the original request again, with the model's failed answer and the
/// validation errors appended, to `cluster` — a cluster that points back at Envoy's own
/// listener, so the re-ask passes every filter (pii-redact, prompt-guard, ...) like any request
/// and its answer is restored and checked like any answer. The re-ask carries the header
/// `x-guard-repair` (its attempt number); a request that carries it is never repaired again.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairSettings {
    /// The Envoy cluster of Envoy's own listener.
    pub cluster: String,
    /// `:authority` of the re-ask (default: the original request's).
    #[serde(default)]
    pub authority: Option<String>,
    /// Re-asks per answer (1..=3).
    #[serde(default = "one")]
    pub max_attempts: u32,
    /// Deadline of one re-ask (ms).
    #[serde(default = "default_repair_ms")]
    pub timeout_ms: u64,
    /// Request headers copied onto the re-ask (credentials, API versions, identity).
    #[serde(default = "default_forward_headers")]
    pub forward_headers: Vec<String>,
}

fn one() -> u32 {
    1
}
fn default_repair_ms() -> u64 {
    60_000
}
fn default_forward_headers() -> Vec<String> {
    [
        "authorization",
        "x-api-key",
        "api-key",
        "anthropic-version",
        "anthropic-beta",
        "openai-organization",
        "openai-project",
        "x-user",
        "x-conversation-id",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect()
}

/// The header that marks a re-ask (its value is the attempt number).
pub const REPAIR_HEADER: &str = "x-guard-repair";

fn yes() -> bool {
    true
}
fn default_max_buffer() -> usize {
    1 << 20
}
fn default_flag_header() -> String {
    "x-guard-schema".to_string()
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            structured_output: true,
            tool_calls: true,
            request_schema: None,
            response_schema: None,
            on_failure: Actions::default(),
            on_invalid_schema: OnInvalidSchema::Block,
            stream_mode: StreamMode::Buffer,
            max_buffer_bytes: default_max_buffer(),
            limits: LimitSettings::default(),
            flag_header: default_flag_header(),
            dry_run: false,
            repair: None,
        }
    }
}

/// A policy's compiled form.
#[derive(Debug)]
pub struct Compiled {
    pub settings: Settings,
    pub limits: Limits,
    pub request: Option<Rc<CompiledSchema>>,
    pub response: Option<Rc<CompiledSchema>>,
    /// Request-declared schemas, compiled once per VM and policy.
    pub cache: RefCell<SchemaCache>,
}

impl Compiled {
    pub fn compile(settings: Settings, path: &str) -> Result<Compiled> {
        let err = |field: &str, msg: String| Error::config(format!("{path}/{field}: {msg}"));
        let l = settings.limits;
        if l.max_errors == 0 || l.max_schema_depth == 0 || l.max_schema_bytes == 0 {
            return Err(err("limits", "limits must be greater than 0".to_string()));
        }
        for (k, a) in [
            ("output", settings.on_failure.output),
            ("response", settings.on_failure.response),
            ("request", settings.on_failure.request),
        ] {
            if a == OnFailure::DropToolCall {
                return Err(err(
                    &format!("on_failure/{k}"),
                    "drop_tool_call applies to tool calls only (tool_arguments, undeclared_tool)"
                        .to_string(),
                ));
            }
        }
        if settings.on_failure.request == OnFailure::Repair {
            return Err(err(
                "on_failure/request",
                "repair applies to answers only".to_string(),
            ));
        }
        let a = settings.on_failure;
        let repairs = [a.output, a.tool_arguments, a.undeclared_tool, a.response]
            .contains(&OnFailure::Repair);
        match &settings.repair {
            None if repairs => {
                return Err(err(
                    "repair",
                    "an on_failure action is repair: set repair.cluster (a cluster of Envoy's own listener)"
                        .to_string(),
                ))
            }
            Some(r) => {
                if r.cluster.is_empty() {
                    return Err(err("repair/cluster", "must not be empty".to_string()));
                }
                if !(1..=3).contains(&r.max_attempts) {
                    return Err(err(
                        "repair/max_attempts",
                        format!("{} is not within 1..=3", r.max_attempts),
                    ));
                }
                if !(100..=300_000).contains(&r.timeout_ms) {
                    return Err(err(
                        "repair/timeout_ms",
                        format!("{} is not within 100..=300000", r.timeout_ms),
                    ));
                }
            }
            None => {}
        }
        if settings.flag_header.is_empty()
            || !settings
                .flag_header
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(err(
                "flag_header",
                format!("{:?} is not a lower-case header name", settings.flag_header),
            ));
        }
        let limits = Limits {
            max_schema_bytes: l.max_schema_bytes,
            max_schema_depth: l.max_schema_depth,
            max_instance_bytes: l.max_instance_bytes,
            max_errors: l.max_errors,
        };
        let compile = |field: &str, v: &Option<Value>| -> Result<Option<Rc<CompiledSchema>>> {
            match v {
                None => Ok(None),
                Some(s) => CompiledSchema::compile(s, limits, &Remotes::default())
                    .map(|c| Some(Rc::new(c)))
                    .map_err(|e| err(field, e.message().to_string())),
            }
        };
        let request = compile("request_schema", &settings.request_schema)?;
        let response = compile("response_schema", &settings.response_schema)?;
        Ok(Compiled {
            cache: RefCell::new(SchemaCache::new(
                SchemaCache::DEFAULT_CAPACITY,
                limits,
                Remotes::default(),
            )),
            settings,
            limits,
            request,
            response,
        })
    }
}

impl Compiled {
    /// What the answer to `req` must look like under this policy, and the request's schemas
    /// that could not be compiled (as messages).
    pub fn expect_for(&self, req: &RequestBody) -> (Expect, Vec<String>) {
        let s = &self.settings;
        let mut expect = Expect {
            check_tools: s.tool_calls,
            response: self.response.clone(),
            ..Expect::default()
        };
        let mut unusable: Vec<String> = Vec::new();
        let mut cache = match self.cache.try_borrow_mut() {
            Ok(c) => c,
            Err(_) => return (expect, vec!["schema cache busy".to_string()]),
        };
        for t in req.tools() {
            let schema = match t.schema {
                Some(sch) if s.tool_calls => match cache.get_or_compile(sch) {
                    Ok(compiled) => Some(compiled),
                    Err(e) => {
                        unusable.push(format!("tool {:?}: {}", t.name, e.message()));
                        None
                    }
                },
                _ => None,
            };
            expect.tools.push(crate::check::DeclaredTool {
                name: t.name.to_string(),
                schema,
            });
        }
        if s.structured_output {
            if let Some(sch) = req.response_schema() {
                match cache.get_or_compile(sch) {
                    Ok(compiled) => expect.output = Some(compiled),
                    Err(e) => unusable.push(format!("response format: {}", e.message())),
                }
            }
        }
        (expect, unusable)
    }

    /// The action for a set of findings: `block` over `repair` over `drop_tool_call` over
    /// `flag`; a stream cannot drop a call it may already have sent nor be re-asked, so there
    /// `drop_tool_call` and `repair` block.
    pub fn action_for(&self, findings: &[Finding], streamed: bool) -> OnFailure {
        let mut worst = OnFailure::Flag;
        for f in findings {
            match self.settings.on_failure.for_kind(f.kind) {
                OnFailure::Block => return OnFailure::Block,
                OnFailure::DropToolCall | OnFailure::Repair if streamed => return OnFailure::Block,
                OnFailure::Repair => worst = OnFailure::Repair,
                OnFailure::DropToolCall if worst != OnFailure::Repair => {
                    worst = OnFailure::DropToolCall
                }
                OnFailure::DropToolCall | OnFailure::Flag => {}
            }
        }
        worst
    }

    /// The decision for findings on an answer (`block`, `flag`, `modify` for drops, `allow`).
    pub fn decision_for(&self, findings: &[Finding], streamed: bool) -> &'static str {
        if findings.is_empty() {
            return "allow";
        }
        match self.action_for(findings, streamed) {
            OnFailure::Block | OnFailure::Repair => "block",
            OnFailure::DropToolCall => "modify",
            OnFailure::Flag => "flag",
        }
    }
}

/// Parse a whole schema-guard filter configuration (the same code as `on_configure`).
pub fn parse_config(bytes: &[u8]) -> Result<FilterConfig<Compiled>> {
    FilterConfig::parse::<Settings, _>(bytes, FailurePolicy::FailClosed, Compiled::compile)
}

pub struct Shared {
    metrics: Rc<Metrics>,
}

/// A streamed answer being judged.
struct StreamState {
    parser: SseParser,
    decoder: StreamDecoder,
    assembler: StreamAssembler,
    deltas: Vec<Delta>,
    /// `buffer` mode: everything so far (with `by_event`: from the first tool call on).
    held: Vec<u8>,
    /// What has been judged, and which tool-call channels ended.
    progress: Progress,
    done: bool,
    /// `buffer` mode with only tool calls to check (no structured output, no response
    /// schema): text streams on at once; the stream is held from its first tool call on.
    by_event: bool,
    /// A tool call has started (`by_event`): everything from here on is held.
    holding: bool,
}

impl StreamState {
    /// Send `raw` on, or hold it once a tool call has started (`by_event` mode).
    fn route(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        if !self.holding
            && self
                .assembler
                .result()
                .choices
                .iter()
                .any(|c| !c.tool_calls.is_empty())
        {
            self.holding = true;
        }
        if self.holding {
            self.held.extend_from_slice(raw);
        } else {
            out.extend_from_slice(raw);
        }
    }
}

/// What a repair needs of the original request.
struct RepairState {
    api: guard_core::api::ApiShape,
    /// The original request body (JSON).
    request: Value,
    path: String,
    authority: String,
    /// The forwarded headers, read while the request passed.
    headers: Vec<(String, String)>,
    /// Re-asks made so far.
    attempts: u32,
    /// What the model said in the first failed answer (quoted in every re-ask).
    failed_answer: String,
}

/// Per-stream state.
pub struct SchemaGuard {
    expect: Option<Expect>,
    stream: Option<StreamState>,
    stopped: bool,
    checks: u64,
    /// Set when the policy may repair this request's answer (and it is not itself a re-ask).
    repair: Option<RepairState>,
}

const MAX_SHOWN: usize = 3;

impl GuardFilter for SchemaGuard {
    type Settings = Settings;
    type Compiled = Compiled;
    type Shared = Shared;
    const NAME: &'static str = NAME;
    const DEFAULT_FAILURE: FailurePolicy = FailurePolicy::FailClosed;

    fn compile(settings: Settings, path: &str) -> Result<Compiled> {
        Compiled::compile(settings, path)
    }

    fn init_shared(metrics: &Rc<Metrics>, _config: &FilterConfig<Compiled>) -> Shared {
        Shared {
            metrics: Rc::clone(metrics),
        }
    }

    fn new_stream() -> Self {
        SchemaGuard {
            expect: None,
            stream: None,
            stopped: false,
            checks: 0,
            repair: None,
        }
    }

    fn on_request_body(&mut self, cx: &mut Cx<'_, Self>, body: &[u8]) -> Result<Outcome> {
        let Some(api) = cx.api() else {
            return Ok(Outcome::Continue);
        };
        let req = RequestBody::parse(api, body)?;
        let policy = Rc::clone(&cx.info.policy);
        let c = &policy.settings;
        let s = &c.settings;
        // The operator's request schema.
        if let Some(schema) = &c.request {
            self.checks += 1;
            let v = schema.validate(req.json());
            if !v.is_empty() {
                let f = Finding {
                    kind: Kind::Request,
                    choice: 0,
                    call: None,
                    tool: None,
                    location: None,
                    violations: v,
                };
                if let Some(out) = self.judge(cx, &[f], None) {
                    return Ok(out);
                }
            }
        }
        // What the answer must look like.
        let (expect, unusable) = c.expect_for(&req);
        if !unusable.is_empty() {
            cx.info
                .record
                .extra
                .insert("unusable_schemas".into(), json!(unusable));
            if s.on_invalid_schema == OnInvalidSchema::Block && s.dry_run {
                let rec = &mut cx.info.record;
                rec.extra.insert("would".into(), json!("block"));
                rec.extra.insert("dry_run".into(), json!(true));
                rec.decide(Decision::Allow, "invalid_schema");
            } else if s.on_invalid_schema == OnInvalidSchema::Block {
                return Ok(Outcome::Reply(LocalReply::new(
                    400,
                    "invalid_schema",
                    &format!(
                        "a schema in this request cannot be used: {}",
                        unusable.join("; ")
                    ),
                )));
            }
        }
        self.expect = Some(expect);
        let is_reask = cx.host.header(Dir::Request, REPAIR_HEADER).is_some();
        if let (Some(r), false) = (&s.repair, is_reask) {
            let header = |name: &str| {
                cx.host
                    .header(Dir::Request, name)
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
            };
            let headers = r
                .forward_headers
                .iter()
                .filter_map(|h| header(h).map(|v| (h.to_ascii_lowercase(), v)))
                .collect();
            self.repair = Some(RepairState {
                api,
                path: cx.info.path.clone(),
                authority: r
                    .authority
                    .clone()
                    .or_else(|| header(":authority"))
                    .unwrap_or_else(|| r.cluster.clone()),
                headers,
                request: req.into_json(),
                attempts: 0,
                failed_answer: String::new(),
            });
        }
        Ok(Outcome::Continue)
    }

    fn on_callout(&mut self, cx: &mut Cx<'_, Self>, result: CallOutResult) -> Result<Outcome> {
        let (Some(api), Some(expect)) = (cx.api(), self.expect.as_ref()) else {
            return Ok(Outcome::Continue);
        };
        let body = match result {
            CallOutResult::Response { status: 200, body } => body,
            CallOutResult::Response { status, body } => {
                // The re-ask's own schema-guard blocked its answer (a re-ask is never repaired
                // again, so an invalid one comes back as this 502): ask again if attempts are
                // left, with the errors it gave.
                let err: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let code = err
                    .pointer("/error/code")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let message = err
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if status == 502 && code == "schema_violation" {
                    if let Some(out) = self.reask_with(cx, &message) {
                        return Ok(out);
                    }
                    return Ok(self.repair_failed(cx, &message));
                }
                return Ok(
                    self.repair_failed(cx, &format!("the re-ask was answered with {status}"))
                );
            }
            CallOutResult::Failed => {
                return Ok(self.repair_failed(cx, "the re-ask got no answer"));
            }
        };
        let Ok(resp) = ResponseBody::parse(api, &body) else {
            return Ok(self.repair_failed(cx, "the re-ask's answer is not a valid answer"));
        };
        if resp.is_error() {
            return Ok(self.repair_failed(cx, "the re-ask was answered with an error"));
        }
        self.checks += resp.tool_calls().len() as u64 + u64::from(expect.output.is_some());
        let findings = expect.answer(&resp);
        if findings.is_empty() {
            let attempts = self.repair.as_ref().map_or(0, |r| r.attempts);
            Self::count_repair(cx, "succeeded");
            let rec = &mut cx.info.record;
            rec.extra.insert("repaired".into(), json!(true));
            rec.extra.insert("repair_attempts".into(), json!(attempts));
            rec.decide(Decision::Modify, "schema_repaired");
            return Ok(Outcome::Replace(body));
        }
        let errors = summary(&findings);
        self.reask_with(cx, &errors)
            .map_or_else(|| Ok(self.repair_failed(cx, &errors)), Ok)
    }

    fn response_plan(&mut self, cx: &mut Cx<'_, Self>, streaming: bool) -> ResponsePlan {
        let Some(expect) = &self.expect else {
            return ResponsePlan::Skip;
        };
        let Some(api) = cx.api() else {
            return ResponsePlan::Skip;
        };
        if !cx.response_ok()
            || (!expect.check_tools && expect.output.is_none() && expect.response.is_none())
        {
            return ResponsePlan::Skip;
        }
        if streaming {
            let p = &cx.info.policy;
            self.stream = Some(StreamState {
                parser: SseParser::new(cx.max_sse_event_bytes()),
                decoder: StreamDecoder::new(api),
                assembler: StreamAssembler::new(p.settings.settings.max_buffer_bytes),
                deltas: Vec::new(),
                held: Vec::new(),
                progress: Progress::default(),
                done: false,
                by_event: expect.output.is_none() && expect.response.is_none(),
                holding: false,
            });
            return ResponsePlan::Stream;
        }
        cx.buffer_json_answer()
    }

    fn on_response_body(&mut self, cx: &mut Cx<'_, Self>, body: &[u8]) -> Result<Outcome> {
        let (Some(api), Some(expect)) = (cx.api(), self.expect.as_ref()) else {
            return Ok(Outcome::Continue);
        };
        let mut resp = ResponseBody::parse(api, body)?;
        if resp.is_error() {
            return Ok(Outcome::Continue);
        }
        self.checks += resp.tool_calls().len() as u64 + u64::from(expect.output.is_some());
        let findings = expect.answer(&resp);
        if findings.is_empty() {
            return Ok(Outcome::Continue);
        }
        Ok(self
            .judge(cx, &findings, Some((api, &mut resp)))
            .unwrap_or(Outcome::Continue))
    }

    fn on_stream_chunk(
        &mut self,
        cx: &mut Cx<'_, Self>,
        chunk: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Chunk> {
        if self.stopped {
            return Ok(Chunk::Rewritten);
        }
        let mode = cx.info.policy.settings.settings.stream_mode;
        let max = cx.info.policy.settings.settings.max_buffer_bytes;
        let Some(st) = self.stream.as_mut() else {
            return Ok(Chunk::Pass);
        };
        let mut events = Vec::new();
        st.parser.push(chunk, &mut |e| events.push(e))?;
        if mode == StreamMode::Buffer {
            let over = || {
                Error::too_large(format!(
                    "streamed answer over the schema buffer limit of {max} bytes"
                ))
            };
            if st.by_event {
                // Only what is held counts: text streams on, however large a chunk Envoy
                // hands over at once (after back-pressure from a slow client, more than 1 MiB).
                for ev in &events {
                    apply_event(st, ev)?;
                    st.route(&ev.raw, out);
                }
                let mut skipped = Vec::new();
                st.parser.take_skipped_raw(&mut skipped);
                st.route(&skipped, out);
                if st.held.len() > max {
                    return Err(over());
                }
                return Ok(Chunk::Rewritten);
            }
            if st.held.len().saturating_add(chunk.len()) > max {
                return Err(over());
            }
            st.held.extend_from_slice(chunk);
            for ev in &events {
                apply_event(st, ev)?;
            }
            return Ok(Chunk::Rewritten);
        }
        self.passthrough(cx, &events, out)?;
        if !self.stopped {
            if let Some(st) = self.stream.as_mut() {
                st.parser.take_skipped_raw(out);
            }
        }
        Ok(Chunk::Rewritten)
    }

    fn on_stream_end(&mut self, cx: &mut Cx<'_, Self>, out: &mut Vec<u8>) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        let mode = cx.info.policy.settings.settings.stream_mode;
        let Some(st) = self.stream.as_mut() else {
            return Ok(());
        };
        let mut events = Vec::new();
        st.parser.flush_unterminated(&mut |e| events.push(e))?;
        if mode == StreamMode::Passthrough {
            self.passthrough(cx, &events, out)?;
            if self.stopped {
                return Ok(());
            }
            if let Some(st) = self.stream.as_mut() {
                st.done = true;
                out.extend_from_slice(&st.parser.take_pending_raw());
            }
            let findings = self.complete_findings(true);
            if !findings.is_empty() {
                self.stream_failure(cx, &findings);
            }
            return Ok(());
        }
        for ev in &events {
            // A truncated last event: judged on what arrived.
            let _ = apply_event(st, ev);
            if st.by_event {
                st.route(&ev.raw, out);
            }
        }
        if st.by_event {
            let pending = st.parser.take_pending_raw();
            st.route(&pending, out);
        }
        st.done = true;
        let findings = self.complete_findings(true);
        let held = self
            .stream
            .as_mut()
            .map(|s| std::mem::take(&mut s.held))
            .unwrap_or_default();
        if findings.is_empty() {
            out.extend_from_slice(&held);
            return Ok(());
        }
        let blocked = self.stream_failure(cx, &findings);
        if !blocked {
            out.extend_from_slice(&held);
        }
        Ok(())
    }

    fn take_unemitted(&mut self, out: &mut Vec<u8>) {
        if let Some(st) = self.stream.as_mut() {
            // Buffer mode: everything held; passthrough: the partial event in the parser.
            let held = std::mem::take(&mut st.held);
            if held.is_empty() {
                out.extend_from_slice(&st.parser.take_pending_raw());
            } else {
                out.extend_from_slice(&held);
            }
        }
    }

    fn on_done(&mut self, cx: &mut Cx<'_, Self>) {
        if self.checks > 0 {
            cx.shared.metrics.counter(metric::CHECKS, self.checks);
            cx.info
                .record
                .extra
                .insert("checks".into(), json!(self.checks));
        }
    }
}

/// Decode one event into the assembler; whether it ends the stream.
fn apply_event(st: &mut StreamState, ev: &guard_core::sse::SseEvent) -> Result<bool> {
    st.deltas.clear();
    st.decoder.decode(ev, &mut st.deltas)?;
    let mut terminal = false;
    for d in &st.deltas {
        st.assembler.apply(d)?;
        match d {
            Delta::Done | Delta::Error { .. } => {
                st.done = true;
                terminal = true;
            }
            Delta::ChannelEnd { key } => {
                if let Channel::ToolArgs { index } = key.channel {
                    st.progress.channel_ended(key.choice, index);
                }
            }
            _ => {}
        }
    }
    Ok(terminal)
}

impl SchemaGuard {
    /// Passthrough: forward event by event; an event that completes something invalid is
    /// replaced by the error event and the rest of the stream is dropped (so the error never
    /// lands inside a partial event or after the terminal event).
    fn passthrough(
        &mut self,
        cx: &mut Cx<'_, Self>,
        events: &[guard_core::sse::SseEvent],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        for ev in events {
            let Some(st) = self.stream.as_mut() else {
                return Ok(());
            };
            let terminal = apply_event(st, ev)?;
            let findings = self.complete_findings(terminal);
            if !findings.is_empty() && self.stream_failure(cx, &findings) {
                return Ok(());
            }
            out.extend_from_slice(&ev.raw);
        }
        Ok(())
    }

    /// Findings on what is complete and not judged yet: tool calls whose arguments channel
    /// ended (or whose choice finished), choices that finished.
    fn complete_findings(&mut self, end: bool) -> Vec<Finding> {
        let (Some(expect), Some(st)) = (self.expect.as_ref(), self.stream.as_mut()) else {
            return Vec::new();
        };
        let before = st.progress.checks;
        let findings = expect.stream(st.assembler.result(), &mut st.progress, end || st.done);
        self.checks += st.progress.checks - before;
        findings
    }

    /// Record a streamed failure; end the stream with an error event unless every finding is
    /// only flagged. Returns whether the stream was blocked.
    fn stream_failure(&mut self, cx: &mut Cx<'_, Self>, findings: &[Finding]) -> bool {
        let policy = Rc::clone(&cx.info.policy);
        let dry = policy.settings.settings.dry_run;
        let action = policy.settings.action_for(findings, true);
        self.record(cx, findings, action);
        if dry || action == OnFailure::Flag {
            return false;
        }
        // The driver ends the stream: an error event, or the policy's fallback.
        cx.refuse_stream(LocalReply::new(502, "schema_violation", &summary(findings)));
        self.stopped = true;
        true
    }

    /// Carry out findings on a request (`resp` None) or a non-streamed answer.
    fn judge(
        &mut self,
        cx: &mut Cx<'_, Self>,
        findings: &[Finding],
        resp: Option<(guard_core::api::ApiShape, &mut ResponseBody)>,
    ) -> Option<Outcome> {
        let policy = Rc::clone(&cx.info.policy);
        let s = &policy.settings.settings;
        let worst = policy.settings.action_for(findings, false);
        self.record(cx, findings, worst);
        if s.dry_run {
            return None;
        }
        let is_request = resp.is_none();
        match worst {
            OnFailure::Block => {
                let status = if is_request { 400 } else { 502 };
                Some(Outcome::Reply(LocalReply::new(
                    status,
                    "schema_violation",
                    &summary(findings),
                )))
            }
            OnFailure::DropToolCall => {
                let (api, resp) = resp?;
                let drops: Vec<&Finding> = findings
                    .iter()
                    .filter(|f| s.on_failure.for_kind(f.kind) == OnFailure::DropToolCall)
                    .collect();
                if !drop_tool_calls(api, resp, &drops) {
                    return Some(Outcome::Reply(LocalReply::new(
                        502,
                        "schema_violation",
                        &summary(findings),
                    )));
                }
                self.flag_header(cx, findings, !is_request);
                Some(Outcome::Replace(resp.to_bytes()))
            }
            OnFailure::Repair => {
                let (_, resp) = resp?;
                let out = self.reask(cx, resp, findings);
                Some(out.unwrap_or_else(|| {
                    // No repair possible here (a re-ask itself, or no request kept): block.
                    cx.info.record.decide(Decision::Block, "schema_violation");
                    Outcome::Reply(LocalReply::new(502, "schema_violation", &summary(findings)))
                }))
            }
            OnFailure::Flag => {
                self.flag_header(cx, findings, !is_request);
                None
            }
        }
    }

    /// Re-ask the model about `resp` (which failed `findings`), when a repair is possible and
    /// attempts are left.
    fn reask(
        &mut self,
        cx: &mut Cx<'_, Self>,
        resp: &ResponseBody,
        findings: &[Finding],
    ) -> Option<Outcome> {
        self.repair.as_mut()?.failed_answer = answer_text(resp);
        self.reask_with(cx, &summary(findings))
    }

    /// Re-ask with `errors` (the first failed answer quoted), when attempts are left.
    fn reask_with(&mut self, cx: &mut Cx<'_, Self>, errors: &str) -> Option<Outcome> {
        let policy = Rc::clone(&cx.info.policy);
        let settings = policy.settings.settings.repair.as_ref()?;
        let r = self.repair.as_mut()?;
        if r.attempts >= settings.max_attempts {
            return None;
        }
        r.attempts += 1;
        let body = reask_body(r.api, &r.request, &r.failed_answer, errors)?;
        let mut headers = r.headers.clone();
        headers.push(("content-type".into(), "application/json".into()));
        headers.push((REPAIR_HEADER.into(), r.attempts.to_string()));
        let call = CallOut {
            cluster: settings.cluster.clone(),
            method: "POST",
            authority: r.authority.clone(),
            path: r.path.clone(),
            headers,
            body: serde_json::to_vec(&body).ok()?,
            timeout_ms: settings.timeout_ms,
        };
        Self::count_repair(cx, "attempted");
        Some(Outcome::CallOut(call))
    }

    /// The repair did not produce a valid answer: blocked, counted.
    fn repair_failed(&mut self, cx: &mut Cx<'_, Self>, why: &str) -> Outcome {
        Self::count_repair(cx, "failed");
        let attempts = self.repair.as_ref().map_or(0, |r| r.attempts);
        let rec = &mut cx.info.record;
        rec.extra.insert("repaired".into(), json!(false));
        rec.extra.insert("repair_attempts".into(), json!(attempts));
        rec.decide(Decision::Block, "schema_violation");
        Outcome::Reply(LocalReply::new(
            502,
            "schema_violation",
            &format!(
                "the answer does not match its schema, and asking again did not fix it: {why}"
            ),
        ))
    }

    fn count_repair(cx: &mut Cx<'_, Self>, outcome: &str) {
        cx.shared.metrics.counter(&metric::repairs(outcome), 1);
    }

    fn flag_header(&self, cx: &mut Cx<'_, Self>, findings: &[Finding], response: bool) {
        let header = cx.info.policy.settings.settings.flag_header.clone();
        let kinds: Vec<&str> = findings.iter().map(|f| f.kind.as_str()).collect();
        let value = format!("schema_violation;kind={}", kinds.join(","));
        let dir = if response {
            Dir::Response
        } else {
            Dir::Request
        };
        cx.host.set_header(dir, &header, Some(value.as_bytes()));
    }

    /// Record and count findings (paths and kinds only: messages may quote answer values).
    fn record(&self, cx: &mut Cx<'_, Self>, findings: &[Finding], action: OnFailure) {
        let dry = cx.info.policy.settings.settings.dry_run;
        let action_label = if dry {
            format!("dry_run_{}", action.as_str())
        } else {
            action.as_str().to_string()
        };
        for f in findings {
            cx.shared
                .metrics
                .counter(&metric::violations(f.kind.as_str(), &action_label), 1);
        }
        let rec = &mut cx.info.record;
        let list: Vec<Value> = findings
            .iter()
            .take(8)
            .map(|f| {
                json!({
                    "kind": f.kind.as_str(),
                    "choice": f.choice,
                    "tool": f.tool,
                    "paths": f.violations.iter().map(|v| v.path.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        rec.extra.insert("violations".into(), json!(list));
        if dry {
            rec.extra.insert("would".into(), json!(action.as_str()));
            rec.extra.insert("dry_run".into(), json!(true));
            rec.decide(Decision::Allow, "schema_violation");
            return;
        }
        let decision = match action {
            OnFailure::Block => Decision::Block,
            // Until the re-ask says otherwise (repaired: modify; still failing: block).
            OnFailure::DropToolCall | OnFailure::Repair => Decision::Modify,
            OnFailure::Flag => Decision::Flag,
        };
        rec.decide(decision, "schema_violation");
    }
}

fn summary(findings: &[Finding]) -> String {
    let parts: Vec<String> = findings
        .iter()
        .take(MAX_SHOWN)
        .map(|f| f.summary(MAX_SHOWN))
        .collect();
    let what = if findings.iter().any(|f| f.kind == Kind::Request) {
        "the request does not match the schema of this route"
    } else {
        "the answer does not match its schema"
    };
    format!("{what}: {}", parts.join(" | "))
}

/// What the model said in an answer: its text, and its tool calls as text.
fn answer_text(resp: &ResponseBody) -> String {
    use guard_core::segment::Source;
    let mut said: Vec<String> = resp
        .segments()
        .iter()
        .filter(|seg| seg.source == Source::Assistant)
        .map(|seg| seg.text.to_string())
        .collect();
    for call in resp.tool_calls() {
        let args = match call.arguments {
            guard_core::body::ToolArgs::Text(t) => t.to_string(),
            guard_core::body::ToolArgs::Json(v) => v.to_string(),
        };
        said.push(format!("(called the tool {} with {args})", call.name));
    }
    said.join("\n")
}

/// The re-ask: the original request with the model's failed answer and the validation errors
/// appended as the last two turns, not streamed. `None` for a request shape it cannot extend.
fn reask_body(
    api: guard_core::api::ApiShape,
    request: &Value,
    answer: &str,
    errors: &str,
) -> Option<Value> {
    use guard_core::api::ApiShape;
    let ask = format!(
        "Your previous answer was rejected because it does not match the required schema: \
         {errors}. Answer the request again and make the output match the schema exactly."
    );
    let mut body = request.clone();
    let obj = body.as_object_mut()?;
    obj.insert("stream".into(), Value::Bool(false));
    obj.remove("stream_options");
    match api {
        ApiShape::OpenAiChat | ApiShape::AnthropicMessages => {
            let messages = obj.get_mut("messages")?.as_array_mut()?;
            messages.push(json!({"role": "assistant", "content": answer}));
            messages.push(json!({"role": "user", "content": ask}));
        }
        ApiShape::OpenAiResponses => {
            let input = match obj.remove("input") {
                Some(Value::String(text)) => vec![json!({"role": "user", "content": text})],
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            };
            let mut input = input;
            input.push(json!({"role": "assistant", "content": answer}));
            input.push(json!({"role": "user", "content": ask}));
            obj.insert("input".into(), Value::Array(input));
            // The earlier turns are ours now: do not chain to a stored response.
            obj.remove("previous_response_id");
        }
    }
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped policy file parses to the defaults (`guardctl` and the docs rely on them).
    #[test]
    fn shipped_policy_is_the_default() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../envoy/policies/schema-guard.json"
        );
        let cfg = parse_config(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(
            cfg.select(None, None).settings.settings,
            Settings::default()
        );
    }

    #[test]
    fn repair_needs_its_settings_and_never_applies_to_streams() {
        let err = parse_config(br#"{"policies":{"default":{"on_failure":{"output":"repair"}}}}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/policies/default/repair"), "{err}");
        let err = parse_config(
            br#"{"policies":{"default":{"on_failure":{"request":"repair"},"repair":{"cluster":"self"}}}}"#,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("/policies/default/on_failure/request"),
            "{err}"
        );
        let err = parse_config(
            br#"{"policies":{"default":{"on_failure":{"output":"repair"},"repair":{"cluster":"self","max_attempts":9}}}}"#,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("/policies/default/repair/max_attempts"),
            "{err}"
        );
        let cfg = parse_config(
            br#"{"policies":{"default":{"on_failure":{"output":"repair","tool_arguments":"drop_tool_call"},"repair":{"cluster":"self"}}}}"#,
        )
        .unwrap();
        let c = &cfg.select(None, None).settings;
        let f = |kind| Finding {
            kind,
            choice: 0,
            call: None,
            tool: None,
            location: None,
            violations: Vec::new(),
        };
        let both = [f(Kind::Output), f(Kind::ToolArguments)];
        assert_eq!(c.action_for(&both, false), OnFailure::Repair);
        assert_eq!(c.action_for(&both, true), OnFailure::Block);
        assert_eq!(c.action_for(&both[1..], false), OnFailure::DropToolCall);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (
                r#"{"policies":{"default":{"on_failure":{"output":"drop_tool_call"}}}}"#,
                "/policies/default/on_failure/output",
            ),
            (
                r#"{"policies":{"default":{"request_schema":{"type":"nope"}}}}"#,
                "/policies/default/request_schema",
            ),
            (
                r#"{"policies":{"default":{"stream_mode":"later"}}}"#,
                "/policies/default/stream_mode",
            ),
            (
                r#"{"policies":{"default":{"flag_header":"X Bad"}}}"#,
                "/policies/default/flag_header",
            ),
        ];
        for (cfg, want) in cases {
            let e = parse_config(cfg.as_bytes()).unwrap_err();
            assert!(e.message().starts_with(want), "{cfg}: {}", e.message());
        }
    }
}
