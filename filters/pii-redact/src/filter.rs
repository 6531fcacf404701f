//! The pii-redact filter: request text segments are rewritten (redact, mask, keyed hash,
//! numbered placeholders) or the request is refused; answers get their placeholders restored
//! and new entities handled, streamed answers through the core hold-back (no byte reaches the
//! client before it has been checked).

use crate::engine::{Action, Compiled, Direction, Engine, Scratch, Settings};
use crate::redact::{Stats, Vault};
use crate::stream::{Buffers, Pass, PiiScanner, Tails};
use guard_core::body::{RequestBody, ResponseBody};
use guard_core::config::{FailurePolicy, FilterConfig};
use guard_core::error::Result;
use guard_core::holdback::{StreamRewriter, StreamScanner};
use guard_core::verdict::{Decision, LocalReply};
use guard_host::driver::{Chunk, Cx, GuardFilter, Outcome, ResponsePlan};
use guard_host::host::MetricKind;
use guard_host::metrics::Metrics;
use guard_host::scratch::ScratchPool;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::rc::Rc;

pub const NAME: &str = "pii_redact";

/// Metric names (Envoy adds `wasmcustom.`).
pub mod metric {
    /// Entities by direction, type and the action applied (`dry_run_<action>` in dry run).
    pub fn entities(direction: &str, entity_type: &str, action: &str) -> String {
        format!(
            "guard.pii_redact.direction.{direction}.entity_type.{entity_type}.action.{action}.entities"
        )
    }
    /// Placeholders restored in answers.
    pub const RESTORED: &str = "guard.pii_redact.restored";
    /// Scan time of a request or a non-streamed answer, microseconds.
    pub const SCAN_US: &str = "guard.pii_redact.scan_us";
    /// Most text a stream held back at once (bytes).
    pub const HELD_BYTES: &str = "guard.pii_redact.held_bytes";
}

pub struct Shared {
    metrics: Rc<Metrics>,
    scratch: ScratchPool<Scratch>,
}

impl Shared {
    fn with_scratch<R>(&self, engine: &Rc<Engine>, f: impl FnOnce(&mut Scratch) -> R) -> R {
        self.scratch
            .with(Rc::as_ptr(engine) as usize, || engine.scratch(), f)
    }
}

/// Per-stream state.
pub struct PiiRedact {
    vault: Vault,
    request: Stats,
    response: Stats,
    bufs: Buffers,
    rewriter: Option<StreamRewriter>,
    tails: Tails,
    max_pending: usize,
    stopped: bool,
    response_scan_us: u64,
}

impl GuardFilter for PiiRedact {
    type Settings = Settings;
    type Compiled = Compiled;
    type Shared = Shared;
    const NAME: &'static str = NAME;
    const DEFAULT_FAILURE: FailurePolicy = FailurePolicy::FailClosed;

    fn compile(settings: Settings, path: &str) -> Result<Compiled> {
        Ok(Compiled {
            engine: Rc::new(Engine::compile(settings, path)?),
        })
    }

    fn init_shared(metrics: &Rc<Metrics>, _config: &FilterConfig<Compiled>) -> Shared {
        metrics.define(MetricKind::Histogram, metric::SCAN_US);
        metrics.define(MetricKind::Histogram, metric::HELD_BYTES);
        metrics.define(MetricKind::Counter, metric::RESTORED);
        Shared {
            metrics: Rc::clone(metrics),
            scratch: ScratchPool::default(),
        }
    }

    fn new_stream() -> Self {
        PiiRedact {
            vault: Vault::new(0),
            request: Stats::default(),
            response: Stats::default(),
            bufs: Buffers::default(),
            rewriter: None,
            tails: Tails::default(),
            max_pending: 0,
            stopped: false,
            response_scan_us: 0,
        }
    }

    fn wants_request_body(&mut self, cx: &mut Cx<'_, Self>) -> bool {
        cx.settings().engine.settings.requests
    }

    fn on_request_body(&mut self, cx: &mut Cx<'_, Self>, body: &[u8]) -> Result<Outcome> {
        let Some(api) = cx.api() else {
            return Ok(Outcome::Continue);
        };
        let engine = Rc::clone(&cx.settings().engine);
        self.vault = Vault::new(engine.settings.max_pseudonyms);
        let mut req = RequestBody::parse(api, body)?;
        let t0 = cx.host.now_nanos();
        let mut hasher = Sha256::new();
        let (vault, stats, bufs) = (&mut self.vault, &mut self.request, &mut self.bufs);
        let segments = req.segments();
        let changes = cx.shared.with_scratch(&engine, |scratch| {
            Pass {
                engine: &engine,
                scratch,
                bufs,
                dir: Direction::Request,
                vault,
                stats,
            }
            .segments(&segments, Some(&mut hasher))
        });
        drop(segments);
        let scan_us = cx.host.now_nanos().saturating_sub(t0) / 1000;
        cx.shared.metrics.histogram(metric::SCAN_US, scan_us);
        let rec = &mut cx.info.record;
        rec.extra.insert("scan_us".into(), json!(scan_us));
        rec.extra.insert(
            "scanned_sha256".into(),
            json!(guard_core::config::hex_prefix(&hasher.finalize(), 8)),
        );
        if engine.settings.dry_run {
            if self.request.total() > 0 {
                let would = if self.request.blocked.is_empty() {
                    "redact"
                } else {
                    "block"
                };
                rec.extra.insert("would".into(), json!(would));
                rec.extra.insert("dry_run".into(), json!(true));
                rec.decide(Decision::Allow, "pii_detected");
            }
            return Ok(Outcome::Continue);
        }
        if !self.request.blocked.is_empty() {
            let types: Vec<&str> = self
                .request
                .blocked
                .iter()
                .map(|t| engine.type_name(*t))
                .collect();
            rec.extra.insert("blocked_types".into(), json!(types));
            return Ok(Outcome::Reply(LocalReply::new(
                400,
                "pii_detected",
                &format!(
                    "this request contains data that may not be sent to the model ({})",
                    types.join(", ")
                ),
            )));
        }
        if changes.is_empty() {
            return Ok(Outcome::Continue);
        }
        for (path, text) in &changes {
            req.set_text(path, text)?;
        }
        rec.decide(Decision::Modify, "pii_redacted");
        Ok(Outcome::Replace(req.to_bytes()))
    }

    fn response_plan(&mut self, cx: &mut Cx<'_, Self>, streaming: bool) -> ResponsePlan {
        let engine = &cx.settings().engine;
        if !engine.settings.responses && !self.vault.has_restorable() {
            return ResponsePlan::Skip;
        }
        let Some(api) = cx.api() else {
            return ResponsePlan::Skip;
        };
        if !cx.response_ok() {
            return ResponsePlan::Skip;
        }
        if streaming {
            self.rewriter = Some(StreamRewriter::new(
                api,
                cx.max_sse_event_bytes(),
                engine.settings.max_hold_bytes,
            ));
            return ResponsePlan::Stream;
        }
        cx.buffer_json_answer()
    }

    fn on_response_body(&mut self, cx: &mut Cx<'_, Self>, body: &[u8]) -> Result<Outcome> {
        let Some(api) = cx.api() else {
            return Ok(Outcome::Continue);
        };
        let engine = Rc::clone(&cx.settings().engine);
        let mut resp = ResponseBody::parse(api, body)?;
        let t0 = cx.host.now_nanos();
        let (vault, stats, bufs) = (&mut self.vault, &mut self.response, &mut self.bufs);
        let segments = resp.segments();
        let changes = cx.shared.with_scratch(&engine, |scratch| {
            Pass {
                engine: &engine,
                scratch,
                bufs,
                dir: Direction::Response,
                vault,
                stats,
            }
            .segments(&segments, None)
        });
        drop(segments);
        self.response_scan_us = cx.host.now_nanos().saturating_sub(t0) / 1000;
        cx.shared
            .metrics
            .histogram(metric::SCAN_US, self.response_scan_us);
        if engine.settings.dry_run {
            return Ok(Outcome::Continue);
        }
        if !self.response.blocked.is_empty() {
            return Ok(Outcome::Reply(self.answer_block(&engine)));
        }
        if changes.is_empty() {
            return Ok(Outcome::Continue);
        }
        for (path, text) in &changes {
            resp.set_text(path, text)?;
        }
        Ok(Outcome::Replace(resp.to_bytes()))
    }

    fn on_stream_chunk(
        &mut self,
        cx: &mut Cx<'_, Self>,
        chunk: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Chunk> {
        self.stream(cx, Some(chunk), out)?;
        Ok(Chunk::Rewritten)
    }

    fn on_stream_end(&mut self, cx: &mut Cx<'_, Self>, out: &mut Vec<u8>) -> Result<()> {
        self.stream(cx, None, out)
    }

    fn on_done(&mut self, cx: &mut Cx<'_, Self>) {
        let engine = Rc::clone(&cx.settings().engine);
        let m = &cx.shared.metrics;
        let dry = engine.settings.dry_run;
        for (dir, stats) in [
            (Direction::Request, &self.request),
            (Direction::Response, &self.response),
        ] {
            for ((ty, action), n) in &stats.found {
                let action = if dry {
                    format!("dry_run_{}", action.as_str())
                } else {
                    action.as_str().to_string()
                };
                m.counter(
                    &metric::entities(dir.as_str(), engine.type_name(*ty), &action),
                    u64::from(*n),
                );
            }
        }
        if self.response.restored > 0 {
            m.counter(metric::RESTORED, u64::from(self.response.restored));
        }
        if self.rewriter.is_some() {
            m.histogram(metric::HELD_BYTES, self.max_pending as u64);
        }
        let rec = &mut cx.info.record;
        let mut entities = serde_json::Map::new();
        for (dir, stats) in [("request", &self.request), ("response", &self.response)] {
            let by_type = stats.by_type(&engine);
            if !by_type.is_empty() {
                entities.insert(dir.into(), json!(by_type));
            }
        }
        if !entities.is_empty() {
            rec.extra.insert("entities".into(), entities.into());
        }
        if self.response.restored > 0 {
            rec.extra
                .insert("restored".into(), json!(self.response.restored));
        }
        if !self.vault.is_empty() {
            rec.extra
                .insert("pseudonyms".into(), json!(self.vault.len()));
        }
        let full = self
            .request
            .vault_full
            .saturating_add(self.response.vault_full);
        if full > 0 {
            rec.extra
                .insert("pseudonyms_over_limit".into(), json!(full));
        }
        if self.response_scan_us > 0 {
            rec.extra
                .insert("response_scan_us".into(), json!(self.response_scan_us));
        }
        if self.rewriter.is_some() {
            rec.extra
                .insert("max_held_bytes".into(), json!(self.max_pending));
        }
        // The answer side of the verdict (the request side was decided in the body phase).
        if !dry && self.response.total() > 0 && self.response.blocked.is_empty() {
            let changed = self
                .response
                .found
                .keys()
                .any(|(_, a)| !matches!(a, Action::Allow));
            if changed {
                rec.decide(Decision::Modify, "pii_redacted");
            }
        } else if !dry && self.response.restored > 0 && rec.decision == Decision::Allow {
            rec.decide(Decision::Modify, "pii_restored");
        }
    }
}

impl PiiRedact {
    fn answer_block(&self, engine: &Engine) -> LocalReply {
        let types: Vec<&str> = self
            .response
            .blocked
            .iter()
            .map(|t| engine.type_name(*t))
            .collect();
        LocalReply::new(
            502,
            "pii_detected",
            &format!(
                "the answer contained data that may not be shown ({})",
                types.join(", ")
            ),
        )
    }

    /// Push a chunk (or the end, with `None`) through the hold-back.
    fn stream(
        &mut self,
        cx: &mut Cx<'_, Self>,
        chunk: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        let Some(rw) = self.rewriter.as_mut() else {
            if let Some(c) = chunk {
                out.extend_from_slice(c);
            }
            return Ok(());
        };
        let engine = Rc::clone(&cx.settings().engine);
        let (vault, stats, bufs) = (&mut self.vault, &mut self.response, &mut self.bufs);
        let tails = &mut self.tails;
        let mut max_pending = self.max_pending;
        let res = cx.shared.with_scratch(&engine, |scratch| {
            let mut scanner = PiiScanner {
                pass: Pass {
                    engine: &engine,
                    scratch,
                    bufs,
                    dir: Direction::Response,
                    vault,
                    stats,
                },
                tails,
                max_pending,
            };
            let res = {
                let mut scanners: [&mut dyn StreamScanner; 1] = [&mut scanner];
                match chunk {
                    Some(c) => rw.push(c, &mut scanners, out),
                    None => rw.finish(&mut scanners, out),
                }
            };
            max_pending = scanner.max_pending;
            res
        });
        self.max_pending = max_pending;
        res?;
        if !self.response.blocked.is_empty() && !engine.settings.dry_run {
            // The entity itself was already replaced; the driver ends the stream (an error
            // event, or the policy's fallback).
            let reply = self.answer_block(&engine);
            cx.refuse_stream(reply);
            self.stopped = true;
        }
        Ok(())
    }
}
