//! The telemetry filter logic (native, host-agnostic: it talks to the proxy only through
//! `guard_host`).

use guard_core::api::ApiShape;
use guard_core::body::{RequestBody, ResponseBody, Usage};
use guard_core::config::{FailurePolicy, FilterConfig};
use guard_core::error::{Error, Result};
use guard_core::sse::SseParser;
use guard_core::stream::{is_usage_only_chunk, Delta, StreamDecoder};
use guard_core::verdict::Decision;
use guard_host::driver::{Chunk, Cx, GuardFilter, Outcome, ResponsePlan};
use guard_host::host::Dir;
use guard_host::metrics::{label, Metrics};
use serde::Deserialize;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

/// The filter's own policy fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Add `stream_options.include_usage` to streamed OpenAI chat requests that lack it (and
    /// hide the extra usage chunk from the client). Default `true`.
    pub inject_stream_usage: bool,
    /// Model names that get their own metric label (exact, or a prefix glob ending in `*`).
    /// Default `["*"]`.
    pub models: Vec<String>,
    /// Most distinct model labels per VM; later ones count as `other`. Default 32.
    pub max_model_labels: usize,
    /// Where the tenant label comes from (none: every request counts as tenant `none`).
    pub tenant: TenantSettings,
}

/// The tenant of a request, for the `tenant` metric label: a claim of the caller's verified
/// identity (`jwt_authn`), else a trusted request header set by an auth filter earlier in the
/// chain. Bounded like models: an allow-list and a label budget, `other` beyond.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TenantSettings {
    /// Claim path in the JWT payload, dot-separated (`org.id`).
    pub claim: Option<String>,
    /// Trusted request header.
    pub header: Option<String>,
    /// Tenants that get their own label (exact, or a prefix ending in `*`). Default `["*"]`.
    pub allowed: Vec<String>,
    /// Most distinct tenant labels per VM. Default 64.
    pub max_labels: usize,
}

impl Default for TenantSettings {
    fn default() -> Self {
        TenantSettings {
            claim: None,
            header: None,
            allowed: vec!["*".to_string()],
            max_labels: 64,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            inject_stream_usage: true,
            models: vec!["*".to_string()],
            max_model_labels: 32,
            tenant: TenantSettings::default(),
        }
    }
}

/// Per-VM state: the metric registry and the model labels handed out so far.
pub struct Shared {
    metrics: Rc<Metrics>,
    labels: RefCell<BTreeSet<String>>,
    tenants: RefCell<BTreeSet<String>>,
}

pub const NAME: &str = "llm_telemetry";

/// Per-stream state.
pub struct Telemetry {
    model: Option<String>,
    tenant: Option<String>,
    streamed_request: bool,
    usage_injected: bool,
    usage: Option<Usage>,
    ttft_ns: Option<u64>,
    parser: Option<SseParser>,
    decoder: Option<StreamDecoder>,
    deltas: Vec<Delta>,
    /// Raw bytes of the incomplete event after the last chunk (only while rewriting).
    withheld: Vec<u8>,
}

impl GuardFilter for Telemetry {
    type Settings = Settings;
    type Compiled = Settings;
    type Shared = Shared;
    const NAME: &'static str = NAME;
    const DEFAULT_FAILURE: FailurePolicy = FailurePolicy::FailOpen;

    fn compile(settings: Settings, path: &str) -> Result<Settings> {
        if settings.max_model_labels > 1000 {
            return Err(Error::config(format!(
                "{path}/max_model_labels: {} is above the maximum 1000",
                settings.max_model_labels
            )));
        }
        for (i, m) in settings.models.iter().enumerate() {
            if m.is_empty() || m.trim_end_matches('*').contains('*') {
                return Err(Error::config(format!(
                    "{path}/models/{i}: {m:?} is not a model name or a prefix ending in '*'"
                )));
            }
        }
        for (i, m) in settings.tenant.allowed.iter().enumerate() {
            if m.is_empty() || m.trim_end_matches('*').contains('*') {
                return Err(Error::config(format!(
                    "{path}/tenant/allowed/{i}: {m:?} is not a tenant or a prefix ending in '*'"
                )));
            }
        }
        if settings.tenant.max_labels > 1000 {
            return Err(Error::config(format!(
                "{path}/tenant/max_labels: {} is above the maximum 1000",
                settings.tenant.max_labels
            )));
        }
        if let Some(h) = &settings.tenant.header {
            if h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase() || b == b' ') {
                return Err(Error::config(format!(
                    "{path}/tenant/header: {h:?} is not a lower-case header name"
                )));
            }
        }
        Ok(settings)
    }

    fn init_shared(metrics: &Rc<Metrics>, _config: &FilterConfig<Settings>) -> Shared {
        Shared {
            metrics: Rc::clone(metrics),
            labels: RefCell::new(BTreeSet::new()),
            tenants: RefCell::new(BTreeSet::new()),
        }
    }

    fn new_stream() -> Self {
        Telemetry {
            model: None,
            tenant: None,
            streamed_request: false,
            usage_injected: false,
            usage: None,
            ttft_ns: None,
            parser: None,
            decoder: None,
            deltas: Vec::new(),
            withheld: Vec::new(),
        }
    }

    fn on_request_body(&mut self, cx: &mut Cx<'_, Self>, body: &[u8]) -> Result<Outcome> {
        let Some(api) = cx.api() else {
            return Ok(Outcome::Continue);
        };
        let mut req = RequestBody::parse(api, body)?;
        self.model = req.model().map(str::to_string);
        self.tenant = tenant_of(cx);
        self.streamed_request = req.is_stream();
        let inject = cx.settings().inject_stream_usage
            && api == ApiShape::OpenAiChat
            && self.streamed_request
            && !stream_usage_requested(req.json());
        if !inject {
            return Ok(Outcome::Continue);
        }
        let Some(obj) = req.json_mut().as_object_mut() else {
            return Ok(Outcome::Continue);
        };
        match obj.get_mut("stream_options").and_then(Value::as_object_mut) {
            Some(opts) => {
                opts.insert("include_usage".to_string(), Value::Bool(true));
            }
            None => {
                obj.insert("stream_options".to_string(), json!({"include_usage": true}));
            }
        }
        self.usage_injected = true;
        cx.info
            .record
            .decide(Decision::Modify, "stream_usage_added");
        Ok(Outcome::Replace(req.to_bytes()))
    }

    fn response_plan(&mut self, cx: &mut Cx<'_, Self>, streaming: bool) -> ResponsePlan {
        let Some(api) = cx.api() else {
            return ResponsePlan::Skip;
        };
        if streaming {
            self.parser = Some(SseParser::new(cx.max_sse_event_bytes()));
            self.decoder = Some(StreamDecoder::new(api));
            ResponsePlan::Stream
        } else if !is_json(cx.host.header(Dir::Response, "content-type").as_deref()) {
            // Not an API answer (an Envoy local reply such as "no healthy upstream", an HTML
            // error page): nothing to count, and not ours to judge.
            ResponsePlan::Skip
        } else {
            ResponsePlan::Buffer {
                hold_headers: false,
            }
        }
    }

    fn on_response_body(&mut self, cx: &mut Cx<'_, Self>, body: &[u8]) -> Result<Outcome> {
        let Some(api) = cx.api() else {
            return Ok(Outcome::Continue);
        };
        let resp = ResponseBody::parse(api, body)?;
        self.usage = resp.usage();
        if self.model.is_none() {
            self.model = resp.model().map(str::to_string);
        }
        Ok(Outcome::Continue)
    }

    fn on_stream_chunk(
        &mut self,
        cx: &mut Cx<'_, Self>,
        chunk: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Chunk> {
        let (Some(parser), Some(decoder)) = (self.parser.as_mut(), self.decoder.as_mut()) else {
            return Ok(Chunk::Pass);
        };
        let api = cx.api().unwrap_or(ApiShape::OpenAiChat);
        let strip = self.usage_injected;
        let mut first_error: Option<Error> = None;
        let deltas = &mut self.deltas;
        let mut saw_token = false;
        let mut usage = None;
        parser.push(chunk, &mut |ev| {
            deltas.clear();
            if let Err(e) = decoder.decode(&ev, deltas) {
                first_error.get_or_insert(e);
            }
            for d in deltas.iter() {
                match d {
                    Delta::Text { .. } | Delta::ToolCallStart { .. } => saw_token = true,
                    Delta::Usage(u) => usage = Some(*u),
                    _ => {}
                }
            }
            if strip && !is_usage_only_chunk(api, &ev) {
                out.extend_from_slice(&ev.raw);
            }
        })?;
        if let Some(e) = first_error {
            return Err(e);
        }
        if saw_token && self.ttft_ns.is_none() {
            self.ttft_ns = Some(cx.host.now_nanos());
        }
        if usage.is_some() {
            self.usage = usage;
        }
        if strip {
            parser.take_skipped_raw(out);
            self.withheld.clear();
            self.withheld.extend_from_slice(parser.pending_raw());
            Ok(Chunk::Rewritten)
        } else {
            Ok(Chunk::Pass)
        }
    }

    fn on_stream_end(&mut self, _cx: &mut Cx<'_, Self>, out: &mut Vec<u8>) -> Result<()> {
        if self.usage_injected {
            if let Some(parser) = self.parser.as_mut() {
                out.extend_from_slice(&parser.take_pending_raw());
            }
        }
        self.withheld.clear();
        Ok(())
    }

    fn take_unemitted(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.withheld);
        self.parser = None;
    }

    fn on_done(&mut self, cx: &mut Cx<'_, Self>) {
        let api = cx.api().map_or("unknown", ApiShape::as_str);
        let model = self.model.clone().unwrap_or_default();
        let model_label = cx.shared.model_label(&model, cx.settings());
        let tenant_label = cx
            .shared
            .tenant_label(self.tenant.as_deref(), &cx.settings().tenant);
        let base = format!("guard.{NAME}.api.{api}.model.{model_label}.tenant.{tenant_label}");
        let m = &cx.shared.metrics;
        m.counter(&format!("{base}.requests"), 1);
        let rec = &mut cx.info.record;
        if let Some(u) = self.usage {
            m.counter(&format!("{base}.tokens_in"), u.input_tokens);
            m.counter(&format!("{base}.tokens_out"), u.output_tokens);
            if u.reasoning_tokens > 0 {
                m.counter(&format!("{base}.reasoning_tokens"), u.reasoning_tokens);
                rec.extra
                    .insert("reasoning_tokens".into(), json!(u.reasoning_tokens));
            }
            rec.extra.insert("tokens_in".into(), json!(u.input_tokens));
            rec.extra
                .insert("tokens_out".into(), json!(u.output_tokens));
        }
        let start = cx.info.start_ns;
        if let Some(t) = self.ttft_ns {
            let ms = t.saturating_sub(start) / 1_000_000;
            m.histogram(&format!("{base}.ttft_ms"), ms);
            rec.extra.insert("ttft_ms".into(), json!(ms));
        }
        if let Some(end) = cx.info.end_ns {
            let ms = end.saturating_sub(start) / 1_000_000;
            m.histogram(&format!("{base}.duration_ms"), ms);
            rec.extra.insert("duration_ms".into(), json!(ms));
        }
        if !model.is_empty() {
            rec.extra.insert("model".into(), json!(model));
        }
        if let Some(t) = &self.tenant {
            rec.extra.insert("tenant".into(), json!(t));
        }
        rec.extra
            .insert("stream".into(), json!(self.streamed_request));
        if let Some(s) = cx.info.response_status {
            rec.extra.insert("status".into(), json!(s));
        }
    }
}

/// The request's tenant: the configured claim of the verified identity, else the trusted header.
fn tenant_of(cx: &Cx<'_, Telemetry>) -> Option<String> {
    let t = &cx.settings().tenant;
    if let (Some(path), Some(id)) = (&t.claim, &cx.info.identity) {
        match guard_core::config::claim_at(&id.claims, path) {
            Some(Value::String(s)) if !s.is_empty() => return Some(s.clone()),
            Some(Value::Number(n)) => return Some(n.to_string()),
            _ => {}
        }
    }
    let h = t.header.as_ref()?;
    let v = cx.host.header(Dir::Request, h)?;
    let v = String::from_utf8_lossy(&v).trim().to_string();
    (!v.is_empty()).then_some(v)
}

impl Shared {
    /// The metric label for a tenant: `none` without one, itself if allowed and within the
    /// label budget, else `other`.
    fn tenant_label(&self, tenant: Option<&str>, t: &TenantSettings) -> String {
        let Some(tenant) = tenant else {
            return "none".to_string();
        };
        let allowed = t.allowed.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => tenant.starts_with(prefix),
            None => p == tenant,
        });
        if !allowed {
            return "other".to_string();
        }
        let l = label(tenant);
        let mut labels = self.tenants.borrow_mut();
        if labels.contains(&l) {
            return l;
        }
        if labels.len() >= t.max_labels {
            return "other".to_string();
        }
        labels.insert(l.clone());
        l
    }

    /// The metric label for a model: itself if allowed and within the label budget, else
    /// `other`.
    fn model_label(&self, model: &str, settings: &Settings) -> String {
        if model.is_empty() {
            return "unknown".to_string();
        }
        let allowed = settings.models.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => model.starts_with(prefix),
            None => p == model,
        });
        if !allowed {
            return "other".to_string();
        }
        let l = label(model);
        let mut labels = self.labels.borrow_mut();
        if labels.contains(&l) {
            return l;
        }
        if labels.len() >= settings.max_model_labels {
            return "other".to_string();
        }
        labels.insert(l.clone());
        l
    }
}

/// Whether a content type is JSON (`application/json`, `application/problem+json`, ...).
fn is_json(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|ct| {
        let ct = String::from_utf8_lossy(ct).to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim().to_string();
        essence == "application/json" || essence.ends_with("+json")
    })
}

/// Whether a chat request already asks for the usage chunk.
fn stream_usage_requested(json: &Value) -> bool {
    json.pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}
