//! The combined filter: several guard filters in one module and one proxy-wasm context per
//! stream, in the DESIGN.md order, with the same semantics as a chain of separate filters.
//!
//! Envoy's filter chain gives every filter its own view of a body: while a filter pauses, the
//! buffer it sees grows; once it continues, what it released goes on to the next filter. The
//! combined [`ChainStream`] reproduces exactly that with one virtual buffer per stage, so every
//! stage (a [`GuardStream`] of its own filter, with its own policy, record and metrics) behaves
//! as it does alone. The saving is Envoy's: one wasm context, one body buffer and one set of
//! host crossings per stream instead of one per filter.
//!
//! Per direction (stages in order for requests, reversed for responses):
//! - headers run stage by stage until one pauses (it holds the headers until its body is
//!   judged); the later stages get their headers callback when it continues;
//! - body bytes are appended to the first stage's buffer and flow on as each stage continues;
//!   what the last stage releases is what Envoy forwards. While any stage holds the headers the
//!   combined filter pauses Envoy (which keeps buffering) and tracks how much of Envoy's buffer
//!   it has consumed;
//! - a local reply from a stage ends the direction (later stages never see it, as in Envoy);
//! - a stage waiting for its call-out (on a request, or on a whole answer it holds) resumes
//!   through [`ChainStream::on_callout_response`] in the direction it called out in: its
//!   `resume` is caught, what it released (its body as it left it, possibly replaced) goes on
//!   through the next stages of that direction, and Envoy is resumed only when the whole chain
//!   has released.

use crate::driver::{Action, GuardFilter, GuardStream};
use crate::host::{Dir, Host, LogLevel, MetricKind};
use crate::metrics::Metrics;
use guard_core::audit::Chain;
use guard_core::capture::Sealer;
use guard_core::config::FilterConfig;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// One filter's stream, object-safe, for the combined filter.
pub trait Stage {
    fn on_request_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Action;
    fn on_request_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool)
        -> Action;
    fn on_request_trailers(&mut self, host: &dyn Host) -> Action;
    fn on_response_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Action;
    fn on_response_body(
        &mut self,
        host: &dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action;
    fn on_response_trailers(&mut self, host: &dyn Host) -> Action;
    fn on_callout_response(&mut self, host: &dyn Host, token: u32, body_size: usize);
    fn on_done(&mut self, host: &dyn Host);
}

impl<F: GuardFilter> Stage for GuardStream<F> {
    fn on_request_headers(&mut self, host: &dyn Host, eos: bool) -> Action {
        GuardStream::on_request_headers(self, host, eos)
    }
    fn on_request_body(&mut self, host: &dyn Host, size: usize, eos: bool) -> Action {
        GuardStream::on_request_body(self, host, size, eos)
    }
    fn on_request_trailers(&mut self, host: &dyn Host) -> Action {
        GuardStream::on_request_trailers(self, host)
    }
    fn on_response_headers(&mut self, host: &dyn Host, eos: bool) -> Action {
        GuardStream::on_response_headers(self, host, eos)
    }
    fn on_response_body(&mut self, host: &dyn Host, size: usize, eos: bool) -> Action {
        GuardStream::on_response_body(self, host, size, eos)
    }
    fn on_response_trailers(&mut self, host: &dyn Host) -> Action {
        GuardStream::on_response_trailers(self, host)
    }
    fn on_callout_response(&mut self, host: &dyn Host, token: u32, body_size: usize) {
        GuardStream::on_callout_response(self, host, token, body_size);
    }
    fn on_done(&mut self, host: &dyn Host) {
        GuardStream::on_done(self, host);
    }
}

/// A filter's loaded configuration: what a root context keeps per filter.
pub struct Loaded<F: GuardFilter> {
    config: Rc<FilterConfig<F::Compiled>>,
    shared: Rc<F::Shared>,
    chain: Rc<RefCell<Chain>>,
}

impl<F: GuardFilter> Loaded<F> {
    /// Parse and compile `bytes` (the filter's plugin configuration) and start a new audit
    /// chain `chain_id`. Errors name the JSON path.
    pub fn load(
        host: &dyn Host,
        metrics: &Rc<Metrics>,
        bytes: &[u8],
        chain_id: String,
    ) -> Result<Self, String> {
        let config = FilterConfig::parse::<F::Settings, _>(bytes, F::DEFAULT_FAILURE, F::compile)
            .map_err(|e| e.to_string())?;
        let shared = F::init_shared(metrics, &config);
        host.log(
            LogLevel::Info,
            &format!(
                "guard {}: policy {} version {} loaded",
                F::NAME,
                config.name,
                config.version
            ),
        );
        let chain = Chain::from_env(chain_id);
        host.log(
            LogLevel::Info,
            &format!(
                "guard {}: audit chain {} ({})",
                F::NAME,
                chain.id(),
                if chain.signed() {
                    "signed"
                } else {
                    "unsigned: no GUARD_AUDIT_KEY in the VM environment"
                }
            ),
        );
        Ok(Loaded {
            config: Rc::new(config),
            shared: Rc::new(shared),
            chain: Rc::new(RefCell::new(chain)),
        })
    }

    /// A stream for one HTTP exchange.
    pub fn stream(
        &self,
        metrics: &Rc<Metrics>,
        sealer: Option<Rc<RefCell<Sealer>>>,
    ) -> GuardStream<F> {
        GuardStream::<F>::new(
            Rc::clone(&self.config),
            Rc::clone(&self.shared),
            Rc::clone(metrics),
        )
        .with_sealer(sealer)
        .with_chain(Rc::clone(&self.chain))
    }
}

/// The host as one stage sees it: its own body buffer for the direction being processed, its
/// `resume` caught; everything else is the real host.
struct StageHost<'a> {
    real: &'a dyn Host,
    dir: Dir,
    buf: &'a RefCell<Vec<u8>>,
    resumed: Cell<bool>,
    replied: Cell<bool>,
    calls: RefCell<Vec<u32>>,
}

impl<'a> StageHost<'a> {
    fn new(real: &'a dyn Host, dir: Dir, buf: &'a RefCell<Vec<u8>>) -> Self {
        StageHost {
            real,
            dir,
            buf,
            resumed: Cell::new(false),
            replied: Cell::new(false),
            calls: RefCell::new(Vec::new()),
        }
    }
}

impl Host for StageHost<'_> {
    fn header(&self, dir: Dir, name: &str) -> Option<Vec<u8>> {
        self.real.header(dir, name)
    }
    fn set_header(&self, dir: Dir, name: &str, value: Option<&[u8]>) {
        self.real.set_header(dir, name, value);
    }
    fn body(&self, dir: Dir, start: usize, len: usize) -> Option<Vec<u8>> {
        if dir != self.dir {
            return self.real.body(dir, start, len);
        }
        let buf = self.buf.borrow();
        let end = start.saturating_add(len).min(buf.len());
        buf.get(start.min(end)..end).map(<[u8]>::to_vec)
    }
    fn set_body(&self, dir: Dir, start: usize, len: usize, data: &[u8]) -> bool {
        if dir != self.dir {
            return self.real.set_body(dir, start, len, data);
        }
        let mut buf = self.buf.borrow_mut();
        let s = start.min(buf.len());
        let e = start.saturating_add(len).min(buf.len());
        buf.splice(s..e, data.iter().copied());
        true
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.real.property(path)
    }
    fn set_property(&self, path: &[&str], value: &[u8]) -> bool {
        self.real.set_property(path, value)
    }
    fn send_local_reply(&self, status: u16, headers: &[(&str, &[u8])], body: &[u8]) -> bool {
        self.replied.set(true);
        self.real.send_local_reply(status, headers, body)
    }
    fn now_nanos(&self) -> u64 {
        self.real.now_nanos()
    }
    fn log(&self, level: LogLevel, message: &str) {
        self.real.log(level, message);
    }
    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u32> {
        let token = self
            .real
            .dispatch_http_call(cluster, headers, body, timeout_ms);
        if let Some(t) = token {
            self.calls.borrow_mut().push(t);
        }
        token
    }
    fn call_response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.real.call_response_header(name)
    }
    fn call_response_body(&self, len: usize) -> Option<Vec<u8>> {
        self.real.call_response_body(len)
    }
    fn resume(&self, dir: Dir) {
        if dir == self.dir {
            self.resumed.set(true);
        } else {
            self.real.resume(dir);
        }
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        self.real.define_metric(kind, name)
    }
    fn increment_metric(&self, id: u32, by: i64) {
        self.real.increment_metric(id, by);
    }
    fn record_metric(&self, id: u32, value: u64) {
        self.real.record_metric(id, value);
    }
}

/// One direction's progress through the stages.
#[derive(Default)]
struct Flow {
    /// Stages (in this direction's order) whose headers callback has returned `Continue`.
    headers_passed: usize,
    /// Whether the headers callbacks have started.
    started: bool,
    /// Per stage (in this direction's order): bytes it holds (it paused on them).
    bufs: Vec<RefCell<Vec<u8>>>,
    /// Bytes of Envoy's buffer already taken into the stages while the combined filter pauses.
    consumed: usize,
    /// Whether the combined filter has released this direction to Envoy (headers passed).
    released: bool,
    /// Whether the body has ended (end of stream seen, or trailers).
    ended: bool,
    /// A stage answered locally: the direction is over.
    stopped: bool,
}

/// The combined filter's stream: its stages in DESIGN.md order.
pub struct ChainStream {
    stages: Vec<Box<dyn Stage>>,
    req: Flow,
    resp: Flow,
    /// Call-out tokens, the stage (index in `stages`) that owns each and the direction it
    /// called out in.
    calls: Vec<(u32, usize, Dir)>,
}

impl ChainStream {
    pub fn new(stages: Vec<Box<dyn Stage>>) -> Self {
        let n = stages.len();
        let flow = || Flow {
            bufs: (0..n).map(|_| RefCell::new(Vec::new())).collect(),
            ..Flow::default()
        };
        ChainStream {
            stages,
            req: flow(),
            resp: flow(),
            calls: Vec::new(),
        }
    }

    /// Index in `stages` of the `k`-th stage of direction `dir` (and, the mapping being its own
    /// inverse, the position in direction `dir` of the stage at index `k`).
    fn index(&self, dir: Dir, k: usize) -> usize {
        match dir {
            Dir::Request => k,
            Dir::Response => self.stages.len().saturating_sub(1).saturating_sub(k),
        }
    }

    fn flow(&mut self, dir: Dir) -> &mut Flow {
        match dir {
            Dir::Request => &mut self.req,
            Dir::Response => &mut self.resp,
        }
    }

    /// Run one stage callback with its stage host; note a local reply, a resume and call-outs.
    fn call<R>(
        &mut self,
        host: &dyn Host,
        dir: Dir,
        k: usize,
        f: impl FnOnce(&mut dyn Stage, &dyn Host) -> R,
    ) -> (R, bool, bool) {
        let i = self.index(dir, k);
        let flow = match dir {
            Dir::Request => &self.req,
            Dir::Response => &self.resp,
        };
        let empty = RefCell::new(Vec::new());
        let buf = flow.bufs.get(k).unwrap_or(&empty);
        let sh = StageHost::new(host, dir, buf);
        let r = match self.stages.get_mut(i) {
            Some(stage) => f(stage.as_mut(), &sh),
            None => f(&mut NoStage, &sh),
        };
        for t in sh.calls.take() {
            self.calls.push((t, i, dir));
        }
        (r, sh.replied.get(), sh.resumed.get())
    }

    /// Headers callbacks from stage `from` on, until one pauses. `true` when all passed.
    fn run_headers(&mut self, host: &dyn Host, dir: Dir, from: usize, eos: bool) -> bool {
        let n = self.stages.len();
        let mut k = from;
        while k < n {
            let (a, replied, _) = self.call(host, dir, k, |s, h| match dir {
                Dir::Request => s.on_request_headers(h, eos),
                Dir::Response => s.on_response_headers(h, eos),
            });
            if replied {
                self.flow(dir).stopped = true;
                return false;
            }
            if a == Action::Pause {
                self.flow(dir).headers_passed = k;
                return false;
            }
            k += 1;
        }
        self.flow(dir).headers_passed = n;
        true
    }

    fn headers(&mut self, host: &dyn Host, dir: Dir, eos: bool) -> Action {
        self.flow(dir).started = true;
        if eos {
            self.flow(dir).ended = true;
        }
        if self.run_headers(host, dir, 0, eos) {
            self.flow(dir).released = true;
            Action::Continue
        } else {
            Action::Pause
        }
    }

    /// Feed `data` to stage `from` and let what each stage releases flow on. Returns the bytes
    /// the last stage released, or `None` when a stage still holds (or answered locally).
    fn flow_from(
        &mut self,
        host: &dyn Host,
        dir: Dir,
        from: usize,
        mut carry: Vec<u8>,
        eos: bool,
    ) -> Option<Vec<u8>> {
        let n = self.stages.len();
        let mut k = from;
        while k < n {
            if k > self.flow(dir).headers_passed {
                // An earlier stage still holds the headers: nothing reaches this one yet.
                return None;
            }
            let len = {
                let flow = self.flow(dir);
                let buf = flow.bufs.get(k)?;
                let mut b = buf.borrow_mut();
                b.extend_from_slice(&carry);
                b.len()
            };
            carry.clear();
            let (a, replied, _) = self.call(host, dir, k, |s, h| match dir {
                Dir::Request => s.on_request_body(h, len, eos),
                Dir::Response => s.on_response_body(h, len, eos),
            });
            if replied {
                self.flow(dir).stopped = true;
                return None;
            }
            if a == Action::Pause {
                return None;
            }
            carry = self.release(host, dir, k)?;
            k += 1;
        }
        Some(carry)
    }

    /// Stage `k` continued: take what it held, and if it held the headers, run the next
    /// stages' headers callbacks. `None` when a later stage then answered locally.
    fn release(&mut self, host: &dyn Host, dir: Dir, k: usize) -> Option<Vec<u8>> {
        let carry = self
            .flow(dir)
            .bufs
            .get(k)
            .map(|b| std::mem::take(&mut *b.borrow_mut()))
            .unwrap_or_default();
        if self.flow(dir).headers_passed == k {
            self.flow(dir).headers_passed = k + 1;
            let _ = self.run_headers(host, dir, k + 1, false);
            if self.flow(dir).stopped {
                return None;
            }
        }
        Some(carry)
    }

    fn body(&mut self, host: &dyn Host, dir: Dir, size: usize, eos: bool) -> Action {
        if self.flow(dir).stopped || !self.flow(dir).started {
            return Action::Continue;
        }
        if eos {
            self.flow(dir).ended = true;
        }
        let consumed = self.flow(dir).consumed.min(size);
        let data = host
            .body(dir, consumed, size.saturating_sub(consumed))
            .unwrap_or_default();
        self.flow(dir).consumed = size;
        let out = self.flow_from(host, dir, 0, data, eos);
        self.emit(host, dir, out, size)
    }

    /// Hand what the chain released to Envoy (replacing the `size` bytes Envoy holds), or keep
    /// Envoy paused.
    fn emit(&mut self, host: &dyn Host, dir: Dir, out: Option<Vec<u8>>, size: usize) -> Action {
        let all_passed = self.flow(dir).headers_passed >= self.stages.len();
        // A stage waits for its call-out in this direction (an escalation in the middle of a
        // stream): Envoy must keep what it holds, so the answer can replace it and resume.
        let waiting = self.calls.iter().any(|(_, _, d)| *d == dir);
        match out {
            Some(bytes) if all_passed && !self.flow(dir).stopped => {
                host.set_body(dir, 0, size, &bytes);
                let flow = self.flow(dir);
                flow.consumed = 0;
                flow.released = true;
                Action::Continue
            }
            _ if self.flow(dir).released && !self.flow(dir).stopped && !waiting => {
                // Envoy already forwarded the headers: this chunk was consumed by a stage that
                // holds it; forward nothing now.
                host.set_body(dir, 0, size, &[]);
                self.flow(dir).consumed = 0;
                Action::Continue
            }
            _ => Action::Pause,
        }
    }

    fn trailers(&mut self, host: &dyn Host, dir: Dir) -> Action {
        if self.flow(dir).stopped || !self.flow(dir).started {
            return Action::Continue;
        }
        self.flow(dir).ended = true;
        // Whatever Envoy holds that the stages have not seen yet.
        let size = self.flow(dir).consumed;
        let n = self.stages.len();
        let mut carry = Vec::new();
        for k in 0..n {
            if k > self.flow(dir).headers_passed {
                return Action::Pause;
            }
            if !carry.is_empty() {
                let len = {
                    let flow = self.flow(dir);
                    let Some(buf) = flow.bufs.get(k) else {
                        break;
                    };
                    let mut b = buf.borrow_mut();
                    b.extend_from_slice(&carry);
                    b.len()
                };
                carry.clear();
                let (a, replied, _) = self.call(host, dir, k, |s, h| match dir {
                    Dir::Request => s.on_request_body(h, len, false),
                    Dir::Response => s.on_response_body(h, len, false),
                });
                if replied {
                    self.flow(dir).stopped = true;
                    return Action::Pause;
                }
                if a == Action::Continue {
                    match self.release(host, dir, k) {
                        Some(c) => carry = c,
                        None => return Action::Pause,
                    }
                }
            }
            let (a, replied, _) = self.call(host, dir, k, |s, h| match dir {
                Dir::Request => s.on_request_trailers(h),
                Dir::Response => s.on_response_trailers(h),
            });
            if replied {
                self.flow(dir).stopped = true;
                return Action::Pause;
            }
            if a == Action::Pause {
                return Action::Pause;
            }
            match self.release(host, dir, k) {
                Some(mut c) => {
                    carry.append(&mut c);
                }
                None => return Action::Pause,
            }
        }
        host.set_body(dir, 0, size, &carry);
        self.flow(dir).consumed = 0;
        self.flow(dir).released = true;
        Action::Continue
    }

    pub fn on_request_headers(&mut self, host: &dyn Host, eos: bool) -> Action {
        self.headers(host, Dir::Request, eos)
    }
    pub fn on_request_body(&mut self, host: &dyn Host, size: usize, eos: bool) -> Action {
        self.body(host, Dir::Request, size, eos)
    }
    pub fn on_request_trailers(&mut self, host: &dyn Host) -> Action {
        self.trailers(host, Dir::Request)
    }
    pub fn on_response_headers(&mut self, host: &dyn Host, eos: bool) -> Action {
        self.headers(host, Dir::Response, eos)
    }
    pub fn on_response_body(&mut self, host: &dyn Host, size: usize, eos: bool) -> Action {
        self.body(host, Dir::Response, size, eos)
    }
    pub fn on_response_trailers(&mut self, host: &dyn Host) -> Action {
        self.trailers(host, Dir::Response)
    }

    /// A call-out answer: to the stage that dispatched it, in the direction it called out in
    /// (a request it holds, or a whole answer it holds). When that stage resumes, what it
    /// released flows on through the later stages of that direction, and Envoy is resumed once
    /// the chain released it.
    pub fn on_callout_response(&mut self, host: &dyn Host, token: u32, body_size: usize) {
        let Some(pos) = self.calls.iter().position(|(t, _, _)| *t == token) else {
            return;
        };
        let (_, i, dir) = self.calls.swap_remove(pos);
        // The stage's position in its direction's order (responses run the stages reversed).
        let k = self.index(dir, i);
        let (_, replied, resumed) = self.call(host, dir, k, |s, h| {
            s.on_callout_response(h, token, body_size);
        });
        if replied {
            self.flow(dir).stopped = true;
            return;
        }
        if !resumed {
            return;
        }
        let eos = self.flow(dir).ended;
        let Some(carry) = self.release(host, dir, k) else {
            return;
        };
        let out = self.flow_from(host, dir, k + 1, carry, eos);
        let size = self.flow(dir).consumed;
        if let Some(bytes) = out {
            if self.flow(dir).headers_passed >= self.stages.len() && !self.flow(dir).stopped {
                host.set_body(dir, 0, size, &bytes);
                let flow = self.flow(dir);
                flow.consumed = 0;
                flow.released = true;
                host.resume(dir);
            }
        }
    }

    /// The stream is over (also after resets): every stage's final record.
    pub fn on_done(&mut self, host: &dyn Host) {
        for stage in &mut self.stages {
            stage.on_done(host);
        }
    }
}

/// Stand-in for a missing stage (never reached: indices come from `stages`).
struct NoStage;

impl Stage for NoStage {
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
        Action::Continue
    }
    fn on_response_body(&mut self, _: &dyn Host, _: usize, _: bool) -> Action {
        Action::Continue
    }
    fn on_response_trailers(&mut self, _: &dyn Host) -> Action {
        Action::Continue
    }
    fn on_callout_response(&mut self, _: &dyn Host, _: u32, _: usize) {}
    fn on_done(&mut self, _: &dyn Host) {}
}

impl Stage for ChainStream {
    fn on_request_headers(&mut self, host: &dyn Host, eos: bool) -> Action {
        ChainStream::on_request_headers(self, host, eos)
    }
    fn on_request_body(&mut self, host: &dyn Host, size: usize, eos: bool) -> Action {
        ChainStream::on_request_body(self, host, size, eos)
    }
    fn on_request_trailers(&mut self, host: &dyn Host) -> Action {
        ChainStream::on_request_trailers(self, host)
    }
    fn on_response_headers(&mut self, host: &dyn Host, eos: bool) -> Action {
        ChainStream::on_response_headers(self, host, eos)
    }
    fn on_response_body(&mut self, host: &dyn Host, size: usize, eos: bool) -> Action {
        ChainStream::on_response_body(self, host, size, eos)
    }
    fn on_response_trailers(&mut self, host: &dyn Host) -> Action {
        ChainStream::on_response_trailers(self, host)
    }
    fn on_callout_response(&mut self, host: &dyn Host, token: u32, body_size: usize) {
        ChainStream::on_callout_response(self, host, token, body_size);
    }
    fn on_done(&mut self, host: &dyn Host) {
        ChainStream::on_done(self, host);
    }
}
