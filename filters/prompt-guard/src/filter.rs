//! The prompt-guard filter: requests are scanned segment by segment (per-source scope and
//! thresholds), grey-zone scores can ask a second opinion, answers lose exfiltration links
//! (streams included, through the core hold-back).

use crate::engine::{AnswerAction, Compiled, Engine, Scan, Scratch, SecondOpinionKind, Verdict};
use crate::exfil::ExfilScanner;
use guard_core::body::{RequestBody, ResponseBody};
use guard_core::config::{FailurePolicy, FilterConfig};
use guard_core::error::Result;
use guard_core::holdback::{StreamRewriter, StreamScanner};
use guard_core::segment::Source;
use guard_core::verdict::{Decision, LocalReply};
use guard_host::driver::{CallOut, CallOutResult, Chunk, Cx, GuardFilter, Outcome, ResponsePlan};
use guard_host::host::Dir;
use guard_host::metrics::Metrics;
use guard_host::scratch::ScratchPool;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::rc::Rc;

pub const NAME: &str = "prompt_guard";

/// Metric names (Envoy adds `wasmcustom.`); `<action>` is allow/flag/block/dry_run_*, `<category>`
/// a rule category, `topic` or `none`.
pub mod metric {
    pub fn detections(action: &str, category: &str) -> String {
        format!("guard.prompt_guard.action.{action}.category.{category}.detections")
    }
    pub const SCAN_US: &str = "guard.prompt_guard.scan_us";
    /// Second-opinion call-out latency (dispatch to answer or failure), milliseconds.
    pub const SECOND_OPINION_MS: &str = "guard.prompt_guard.second_opinion_ms";
    pub const EXFIL_LINKS: &str = "guard.prompt_guard.answer.exfil_links";
    pub fn second_opinion(outcome: &str) -> String {
        format!("guard.prompt_guard.second_opinion.{outcome}.calls")
    }
}

pub struct Shared {
    metrics: Rc<Metrics>,
    /// Scan scratch per compiled engine, shared by every stream of the VM.
    scratch: ScratchPool<Scratch>,
}

impl Shared {
    fn with_scratch<R>(&self, engine: &Rc<Engine>, f: impl FnOnce(&mut Scratch) -> R) -> R {
        self.scratch
            .with(Rc::as_ptr(engine) as usize, || engine.scratch(), f)
    }
}

/// Per-stream state.
pub struct PromptGuard {
    /// The worst segment's scan, kept for the call-out decision and the record.
    worst: Option<(Source, Scan)>,
    /// When the second-opinion call-out was asked for (ns).
    callout_ns: Option<u64>,
    rewriter: Option<StreamRewriter>,
    exfil_found: usize,
    stopped: bool,
}

impl GuardFilter for PromptGuard {
    type Settings = crate::engine::Settings;
    type Compiled = Compiled;
    type Shared = Shared;
    const NAME: &'static str = NAME;
    const DEFAULT_FAILURE: FailurePolicy = FailurePolicy::FailClosed;

    fn compile(settings: Self::Settings, path: &str) -> Result<Compiled> {
        let engine = Engine::compile(settings.clone(), path)?;
        Ok(Compiled {
            settings,
            engine: Rc::new(engine),
        })
    }

    fn init_shared(metrics: &Rc<Metrics>, _config: &FilterConfig<Compiled>) -> Shared {
        metrics.define(guard_host::host::MetricKind::Histogram, metric::SCAN_US);
        metrics.define(
            guard_host::host::MetricKind::Histogram,
            metric::SECOND_OPINION_MS,
        );
        Shared {
            metrics: Rc::clone(metrics),
            scratch: ScratchPool::default(),
        }
    }

    fn new_stream() -> Self {
        PromptGuard {
            worst: None,
            callout_ns: None,
            rewriter: None,
            exfil_found: 0,
            stopped: false,
        }
    }

    fn on_request_body(&mut self, cx: &mut Cx<'_, Self>, body: &[u8]) -> Result<Outcome> {
        let Some(api) = cx.api() else {
            return Ok(Outcome::Continue);
        };
        let req = RequestBody::parse(api, body)?;
        let engine = Rc::clone(&cx.settings().engine);
        let t0 = cx.host.now_nanos();
        let mut worst: Option<(Source, Scan, String)> = None;
        let mut denied: Vec<String> = Vec::new();
        let mut last_user: Option<Scan> = None;
        let mut hasher = Sha256::new();
        let mut scanned = 0usize;
        for seg in req.segments() {
            let scan = cx.shared.with_scratch(&engine, |scratch| {
                engine.scan(scratch, &seg.text, seg.source)
            });
            if scan.skipped {
                continue;
            }
            scanned += 1;
            hasher.update(seg.text.as_bytes());
            for t in &scan.denied_topics {
                if !denied.contains(t) {
                    denied.push(t.clone());
                }
            }
            if seg.source == Source::User {
                last_user = Some(scan.clone());
            }
            let better = match &worst {
                None => true,
                Some((_, w, _)) => (scan.verdict, scan.score) > (w.verdict, w.score),
            };
            if better {
                worst = Some((seg.source, scan, seg.text.into_owned()));
            }
        }
        let scan_us = cx.host.now_nanos().saturating_sub(t0) / 1000;
        cx.shared.metrics.histogram(metric::SCAN_US, scan_us);
        let rec = &mut cx.info.record;
        rec.extra.insert("scan_us".into(), json!(scan_us));
        rec.extra.insert("segments_scanned".into(), json!(scanned));
        rec.extra.insert(
            "scanned_sha256".into(),
            json!(guard_core::config::hex_prefix(&hasher.finalize(), 8)),
        );

        // Topic policy first: a denied topic or an off-topic request has its own reason.
        let off_topic = engine.has_allowed_topics()
            && last_user
                .as_ref()
                .is_some_and(|s| s.allowed_topics.is_empty());
        if !denied.is_empty() || off_topic {
            let reason = if denied.is_empty() {
                "off_topic"
            } else {
                "denied_topic"
            };
            rec.extra.insert("topics".into(), json!(denied));
            let verdict = engine.topic_action();
            return Ok(self.act(cx, verdict, reason, "topic"));
        }

        let Some((source, scan, worst_text)) = worst else {
            return Ok(Outcome::Continue);
        };
        let reason = injection_reason(source);
        let rec = &mut cx.info.record;
        rec.rules = scan.rules.clone();
        rec.extra.insert("score".into(), json!(round3(scan.score)));
        rec.extra
            .insert("rule_score".into(), json!(round3(scan.rule_score)));
        rec.extra
            .insert("model_score".into(), json!(round3(scan.model_score)));
        rec.extra.insert("source".into(), json!(source.as_str()));
        if scan.obfuscated {
            rec.extra.insert("obfuscated".into(), json!(true));
        }
        let category = scan.categories.first().map_or("none", |c| c.as_str());
        rec.extra.insert(
            "categories".into(),
            json!(scan
                .categories
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()),
        );
        let verdict = scan.verdict;
        // Grey zone: ask a second opinion before deciding.
        if let Some(so) = &engine.settings.second_opinion {
            let [lo, hi] = so.grey_zone.unwrap_or([scan.flag_at, scan.block_at]);
            if scan.score >= lo && scan.score < hi && !engine.settings.dry_run {
                // The text of the worst segment, bounded.
                let text = truncate(&worst_text, so.max_text_bytes);
                let body = match so.kind {
                    SecondOpinionKind::OpenaiModeration => json!({
                        "model": so.model.clone().unwrap_or_else(|| "omni-moderation-latest".into()),
                        "input": text,
                    }),
                    SecondOpinionKind::Classifier => json!({ "text": text }),
                };
                let path = so.path.clone().unwrap_or_else(|| match so.kind {
                    SecondOpinionKind::OpenaiModeration => "/v1/moderations".into(),
                    SecondOpinionKind::Classifier => "/classify".into(),
                });
                self.worst = Some((source, scan));
                self.callout_ns = Some(cx.host.now_nanos());
                return Ok(Outcome::CallOut(CallOut {
                    method: "POST",
                    cluster: so.cluster.clone(),
                    authority: so.authority.clone().unwrap_or_else(|| so.cluster.clone()),
                    path,
                    headers: so
                        .headers
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    body: serde_json::to_vec(&body).unwrap_or_default(),
                    timeout_ms: so.timeout_ms,
                }));
            }
        }
        Ok(self.act(cx, verdict, reason, category))
    }

    fn on_callout(&mut self, cx: &mut Cx<'_, Self>, result: CallOutResult) -> Result<Outcome> {
        if let Some(t0) = self.callout_ns.take() {
            let ms = cx.host.now_nanos().saturating_sub(t0) / 1_000_000;
            cx.shared.metrics.histogram(metric::SECOND_OPINION_MS, ms);
            cx.info
                .record
                .extra
                .insert("second_opinion_ms".into(), json!(ms));
        }
        let Some((source, scan)) = self.worst.take() else {
            return Ok(Outcome::Continue);
        };
        let engine = Rc::clone(&cx.settings().engine);
        let Some(so) = engine.settings.second_opinion.as_ref() else {
            return Ok(Outcome::Continue);
        };
        let reason = injection_reason(source);
        let category = scan.categories.first().map_or("none", |c| c.as_str());
        let opinion = match &result {
            CallOutResult::Response { status, body } if (200..300).contains(status) => {
                parse_opinion(so.kind, body)
            }
            _ => None,
        };
        let m = &cx.shared.metrics;
        match opinion {
            Some(true) => {
                m.counter(&metric::second_opinion("injection"), 1);
                cx.info
                    .record
                    .extra
                    .insert("second_opinion".into(), json!("injection"));
                Ok(self.act(cx, Verdict::Block, reason, category))
            }
            Some(false) => {
                m.counter(&metric::second_opinion("benign"), 1);
                cx.info
                    .record
                    .extra
                    .insert("second_opinion".into(), json!("benign"));
                Ok(self.act(cx, Verdict::Allow, "second_opinion_benign", category))
            }
            None => {
                m.counter(&metric::second_opinion("failed"), 1);
                cx.info
                    .record
                    .extra
                    .insert("second_opinion".into(), json!("failed"));
                match so.on_failure.unwrap_or(FailurePolicy::FailOpen) {
                    FailurePolicy::FailClosed => {
                        Ok(self.act(cx, Verdict::Block, "second_opinion_unavailable", category))
                    }
                    FailurePolicy::FailOpen => Ok(self.act(cx, scan.verdict, reason, category)),
                }
            }
        }
    }

    fn response_plan(&mut self, cx: &mut Cx<'_, Self>, streaming: bool) -> ResponsePlan {
        let engine = &cx.settings().engine;
        if !engine.exfil.enabled() {
            return ResponsePlan::Skip;
        }
        let Some(api) = cx.api() else {
            return ResponsePlan::Skip;
        };
        if !cx.response_ok() {
            return ResponsePlan::Skip;
        }
        if !streaming {
            return cx.buffer_json_answer();
        }
        self.rewriter = Some(StreamRewriter::new(
            api,
            cx.max_sse_event_bytes(),
            engine.settings.answers.max_link_bytes.saturating_mul(2),
        ));
        ResponsePlan::Stream
    }

    fn on_response_body(&mut self, cx: &mut Cx<'_, Self>, body: &[u8]) -> Result<Outcome> {
        let Some(api) = cx.api() else {
            return Ok(Outcome::Continue);
        };
        let engine = Rc::clone(&cx.settings().engine);
        let mut resp = ResponseBody::parse(api, body)?;
        let mut out = String::new();
        let mut changes = Vec::new();
        let mut found = 0;
        for seg in resp.segments() {
            if !matches!(seg.source, Source::Assistant | Source::Reasoning) {
                continue;
            }
            let n = engine.exfil.rewrite(&seg.text, &mut out);
            if n > 0 {
                found += n;
                changes.push((seg.path.clone(), out.clone()));
            }
        }
        if found == 0 {
            return Ok(Outcome::Continue);
        }
        self.note_exfil(cx, found);
        if engine.exfil.action == AnswerAction::Block && !engine.settings.dry_run {
            return Ok(Outcome::Reply(LocalReply::new(
                502,
                "exfiltration",
                "the answer contained a link that would send data to an untrusted host",
            )));
        }
        if engine.settings.dry_run {
            return Ok(Outcome::Continue);
        }
        for (path, text) in changes {
            resp.set_text(&path, &text)?;
        }
        Ok(Outcome::Replace(resp.to_bytes()))
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
        let Some(rw) = self.rewriter.as_mut() else {
            return Ok(Chunk::Pass);
        };
        let engine = Rc::clone(&cx.settings().engine);
        let mut scanner = ExfilScanner::new(&engine.exfil).dry_run(engine.settings.dry_run);
        {
            let mut scanners: [&mut dyn StreamScanner; 1] = [&mut scanner];
            rw.push(chunk, &mut scanners, out)?;
        }
        self.after_stream_scan(cx, scanner.found);
        Ok(Chunk::Rewritten)
    }

    fn on_stream_end(&mut self, cx: &mut Cx<'_, Self>, out: &mut Vec<u8>) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        let Some(rw) = self.rewriter.as_mut() else {
            return Ok(());
        };
        let engine = Rc::clone(&cx.settings().engine);
        let mut scanner = ExfilScanner::new(&engine.exfil).dry_run(engine.settings.dry_run);
        {
            let mut scanners: [&mut dyn StreamScanner; 1] = [&mut scanner];
            rw.finish(&mut scanners, out)?;
        }
        self.after_stream_scan(cx, scanner.found);
        Ok(())
    }

    fn on_done(&mut self, cx: &mut Cx<'_, Self>) {
        if self.exfil_found > 0 {
            cx.info
                .record
                .extra
                .insert("exfil_links".into(), json!(self.exfil_found));
        }
        let rec = &cx.info.record;
        let action = match rec.extra.get("would").and_then(Value::as_str) {
            Some(w) => format!("dry_run_{w}"),
            None => rec.decision.as_str().to_string(),
        };
        let category = rec
            .extra
            .get("categories")
            .and_then(|c| c.get(0))
            .and_then(Value::as_str)
            .unwrap_or(if rec.reasons.iter().any(|r| r.ends_with("topic")) {
                "topic"
            } else {
                "none"
            })
            .to_string();
        cx.shared
            .metrics
            .counter(&metric::detections(&action, &category), 1);
    }
}

impl PromptGuard {
    /// Carry out a verdict (or record it, in dry run).
    fn act(
        &mut self,
        cx: &mut Cx<'_, Self>,
        verdict: Verdict,
        reason: &str,
        category: &str,
    ) -> Outcome {
        let engine = Rc::clone(&cx.settings().engine);
        let rec = &mut cx.info.record;
        if engine.settings.dry_run && verdict != Verdict::Allow {
            rec.extra.insert("would".into(), json!(verdict.as_str()));
            rec.extra.insert("dry_run".into(), json!(true));
            rec.decide(Decision::Allow, reason);
            return Outcome::Continue;
        }
        match verdict {
            Verdict::Allow => {
                if reason == "second_opinion_benign" {
                    rec.decide(Decision::Allow, reason);
                }
                Outcome::Continue
            }
            Verdict::Flag => {
                rec.decide(Decision::Flag, reason);
                let value = format!("{reason};category={category}");
                cx.host.set_header(
                    Dir::Request,
                    &engine.settings.flag_header,
                    Some(value.as_bytes()),
                );
                Outcome::Continue
            }
            Verdict::Block => {
                let message = match reason {
                    "denied_topic" => "this request is about a topic this service does not handle",
                    "off_topic" => "this request is outside the topics this service handles",
                    "indirect_injection" => "a tool result or document in this request contains instructions aimed at the assistant",
                    "second_opinion_unavailable" => "this request could not be checked and was refused",
                    _ => "this request looks like a prompt injection or jailbreak attempt",
                };
                Outcome::Reply(LocalReply::new(400, reason, message))
            }
        }
    }

    fn note_exfil(&mut self, cx: &mut Cx<'_, Self>, found: usize) {
        self.exfil_found += found;
        cx.shared.metrics.counter(metric::EXFIL_LINKS, found as u64);
        let dry = cx.settings().engine.settings.dry_run;
        let rec = &mut cx.info.record;
        if dry {
            rec.extra.insert("would".into(), json!("neutralize"));
            rec.decide(Decision::Allow, "exfiltration");
        } else {
            rec.decide(Decision::Modify, "exfiltration");
        }
    }

    fn after_stream_scan(&mut self, cx: &mut Cx<'_, Self>, found: usize) {
        if found == 0 {
            return;
        }
        self.note_exfil(cx, found);
        let engine = Rc::clone(&cx.settings().engine);
        if engine.exfil.action == AnswerAction::Block && !engine.settings.dry_run {
            // The link itself was already neutralised; the driver ends the stream (an error
            // event, or the policy's fallback).
            cx.refuse_stream(LocalReply::new(
                502,
                "exfiltration",
                "the answer contained a link that would send data to an untrusted host",
            ));
            self.stopped = true;
        }
    }
}

/// The reason code of an injection found in a segment of `source`: instructions inside content
/// the model reads (tool results, documents) are indirect injection.
fn injection_reason(source: Source) -> &'static str {
    if matches!(source, Source::ToolResult | Source::Document) {
        "indirect_injection"
    } else {
        "prompt_injection"
    }
}

/// Whether a second opinion says "injection" (`None`: unreadable).
pub fn parse_opinion(kind: SecondOpinionKind, body: &[u8]) -> Option<bool> {
    let v: Value = serde_json::from_slice(body).ok()?;
    match kind {
        SecondOpinionKind::OpenaiModeration => {
            let results = v.get("results")?.as_array()?;
            Some(
                results
                    .iter()
                    .any(|r| r.get("flagged").and_then(Value::as_bool).unwrap_or(false)),
            )
        }
        SecondOpinionKind::Classifier => match v.get("label").and_then(Value::as_str)? {
            "injection" | "jailbreak" | "unsafe" | "malicious" => Some(true),
            "benign" | "safe" => Some(false),
            _ => None,
        },
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = max;
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    s.get(..i).unwrap_or("")
}

fn round3(x: f32) -> f64 {
    (f64::from(x) * 1000.0).round() / 1000.0
}
