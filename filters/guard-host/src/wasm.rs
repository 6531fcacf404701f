//! The proxy-wasm implementation of [`Host`] and the root/HTTP contexts that drive a
//! [`GuardStream`]. Compiled only for wasm32.
//!
//! Host calls use the proxy-wasm ABI directly rather than the SDK's `hostcalls` helpers: those
//! `panic!` on any status they do not expect (e.g. `BadArgument` from `set_buffer` in the wrong
//! phase), and a panic kills the VM for every request on the worker. Here every status maps to
//! a typed result. The SDK still provides the dispatcher and the memory allocator export.
#![allow(unsafe_code, clashing_extern_declarations)]

use crate::chain::{ChainStream, Loaded, Stage};
use crate::driver::{Action, GuardFilter};
use crate::host::{Dir, Host, LogLevel, MetricKind};
use crate::metrics::Metrics;
use guard_core::capture::Sealer;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::ptr::{null, null_mut};
use std::rc::Rc;

const STATUS_OK: u32 = 0;
const BUFFER_REQUEST_BODY: u32 = 0;
const BUFFER_RESPONSE_BODY: u32 = 1;
const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
const MAP_REQUEST_HEADERS: u32 = 0;
const MAP_RESPONSE_HEADERS: u32 = 2;
const MAP_CALL_RESPONSE_HEADERS: u32 = 6;
const BUFFER_CALL_RESPONSE_BODY: u32 = 4;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
}

/// Take ownership of a buffer the host allocated through the SDK's `proxy_on_memory_allocate`.
unsafe fn owned(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return if size == 0 { Some(Vec::new()) } else { None };
    }
    Some(Vec::from_raw_parts(data, size, size))
}

fn map_type(dir: Dir) -> u32 {
    match dir {
        Dir::Request => MAP_REQUEST_HEADERS,
        Dir::Response => MAP_RESPONSE_HEADERS,
    }
}

fn buffer_type(dir: Dir) -> u32 {
    match dir {
        Dir::Request => BUFFER_REQUEST_BODY,
        Dir::Response => BUFFER_RESPONSE_BODY,
    }
}

fn property_path(path: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.iter().map(|p| p.len() + 1).sum());
    for part in path {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    out.pop();
    out
}

fn serialize_pairs(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&u32::try_from(pairs.len()).unwrap_or(0).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&u32::try_from(k.len()).unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&u32::try_from(v.len()).unwrap_or(0).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// The real host: proxy-wasm ABI calls, every status handled.
#[derive(Debug, Default, Clone, Copy)]
pub struct WasmHost;

impl Host for WasmHost {
    fn header(&self, dir: Dir, name: &str) -> Option<Vec<u8>> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: pointers are valid for the call; the host allocates the result with our
        // allocator and we take ownership of it.
        unsafe {
            match proxy_get_header_map_value(
                map_type(dir),
                name.as_ptr(),
                name.len(),
                &mut data,
                &mut size,
            ) {
                STATUS_OK => owned(data, size),
                _ => None,
            }
        }
    }

    fn set_header(&self, dir: Dir, name: &str, value: Option<&[u8]>) {
        // SAFETY: pointers and lengths come from live slices.
        unsafe {
            match value {
                Some(v) => {
                    proxy_replace_header_map_value(
                        map_type(dir),
                        name.as_ptr(),
                        name.len(),
                        v.as_ptr(),
                        v.len(),
                    );
                }
                None => {
                    proxy_remove_header_map_value(map_type(dir), name.as_ptr(), name.len());
                }
            }
        }
    }

    fn body(&self, dir: Dir, start: usize, len: usize) -> Option<Vec<u8>> {
        if len == 0 {
            return Some(Vec::new());
        }
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: as in `header`.
        unsafe {
            match proxy_get_buffer_bytes(buffer_type(dir), start, len, &mut data, &mut size) {
                STATUS_OK => owned(data, size),
                _ => None,
            }
        }
    }

    fn set_body(&self, dir: Dir, start: usize, len: usize, data: &[u8]) -> bool {
        // SAFETY: pointer and length come from a live slice.
        unsafe {
            proxy_set_buffer_bytes(buffer_type(dir), start, len, data.as_ptr(), data.len())
                == STATUS_OK
        }
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let p = property_path(path);
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: as in `header`.
        unsafe {
            match proxy_get_property(p.as_ptr(), p.len(), &mut data, &mut size) {
                STATUS_OK => owned(data, size),
                _ => None,
            }
        }
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> bool {
        let p = property_path(path);
        // SAFETY: pointers and lengths come from live buffers.
        unsafe { proxy_set_property(p.as_ptr(), p.len(), value.as_ptr(), value.len()) == STATUS_OK }
    }

    fn send_local_reply(&self, status: u16, headers: &[(&str, &[u8])], body: &[u8]) -> bool {
        let h = serialize_pairs(headers);
        let details = b"guard_local_reply";
        // SAFETY: pointers and lengths come from live buffers.
        unsafe {
            proxy_send_local_response(
                u32::from(status),
                details.as_ptr(),
                details.len(),
                if body.is_empty() {
                    null()
                } else {
                    body.as_ptr()
                },
                body.len(),
                h.as_ptr(),
                h.len(),
                -1,
            ) == STATUS_OK
        }
    }

    fn now_nanos(&self) -> u64 {
        let mut t: u64 = 0;
        // SAFETY: valid out pointer.
        unsafe {
            proxy_get_current_time_nanoseconds(&mut t);
        }
        t
    }

    fn log(&self, level: LogLevel, message: &str) {
        let l = match level {
            LogLevel::Debug => 1,
            LogLevel::Info => 2,
            LogLevel::Warn => 3,
            LogLevel::Error => 4,
        };
        // SAFETY: pointer and length come from a live str.
        unsafe {
            proxy_log(l, message.as_ptr(), message.len());
        }
    }

    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u32> {
        // The SDK's call registers the token with its dispatcher, which routes the answer back
        // to this context; it returns Err for the statuses Envoy documents for a refused call.
        proxy_wasm::hostcalls::dispatch_http_call(
            cluster,
            headers.to_vec(),
            if body.is_empty() { None } else { Some(body) },
            Vec::new(),
            std::time::Duration::from_millis(timeout_ms),
        )
        .ok()
    }

    fn call_response_header(&self, name: &str) -> Option<Vec<u8>> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: as in `header`.
        unsafe {
            match proxy_get_header_map_value(
                MAP_CALL_RESPONSE_HEADERS,
                name.as_ptr(),
                name.len(),
                &mut data,
                &mut size,
            ) {
                STATUS_OK => owned(data, size),
                _ => None,
            }
        }
    }

    fn call_response_body(&self, len: usize) -> Option<Vec<u8>> {
        if len == 0 {
            return Some(Vec::new());
        }
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: as in `header`.
        unsafe {
            match proxy_get_buffer_bytes(BUFFER_CALL_RESPONSE_BODY, 0, len, &mut data, &mut size) {
                STATUS_OK => owned(data, size),
                _ => None,
            }
        }
    }

    fn resume(&self, dir: Dir) {
        // SAFETY: plain value.
        unsafe {
            proxy_continue_stream(match dir {
                Dir::Request => 0,
                Dir::Response => 1,
            });
        }
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let t = match kind {
            MetricKind::Counter => 0,
            MetricKind::Gauge => 1,
            MetricKind::Histogram => 2,
        };
        let mut id: u32 = 0;
        // SAFETY: valid pointers.
        unsafe {
            (proxy_define_metric(t, name.as_ptr(), name.len(), &mut id) == STATUS_OK).then_some(id)
        }
    }

    fn increment_metric(&self, id: u32, by: i64) {
        // SAFETY: plain values.
        unsafe {
            proxy_increment_metric(id, by);
        }
    }

    fn record_metric(&self, id: u32, value: u64) {
        // SAFETY: plain values.
        unsafe {
            proxy_record_metric(id, value);
        }
    }
}

/// Register the root context of filter `F` (call from the module's `_initialize`).
/// A chain id: the filter name and 64 random bits (WASI `random_get` through the std hasher
/// keys) mixed with the clock.
fn chain_id(filter: &str, now: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now);
    h.write(filter.as_bytes());
    format!("{filter}-{:016x}", h.finish())
}

/// 64 random bits (WASI `random_get` through the std hasher keys).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

pub fn register<F: GuardFilter>() {
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::<F>::new()) });
}

struct Root<F: GuardFilter> {
    /// The configuration, its shared state and the VM's audit chain (new at each load).
    loaded: Option<Loaded<F>>,
    metrics: Rc<Metrics>,
    /// The VM's capture sealer (from `GUARD_CAPTURE_KEY`).
    sealer: Option<Rc<RefCell<Sealer>>>,
    /// The linear memory size last reported.
    memory: std::cell::Cell<usize>,
}

/// Report the VM's wasm linear memory (`guard.<name>.wasm_memory_bytes`, a gauge) when it
/// changed since `last`: memory only grows, so a gauge that keeps rising under steady traffic
/// is a leak (`make soak` watches it).
fn report_memory(metrics: &Metrics, name: &str, last: &std::cell::Cell<usize>) {
    let bytes = core::arch::wasm32::memory_size(0).saturating_mul(65_536);
    if bytes != last.get() {
        last.set(bytes);
        metrics.gauge(
            &format!("guard.{name}.wasm_memory_bytes"),
            u64::try_from(bytes).unwrap_or(u64::MAX),
        );
    }
}

impl<F: GuardFilter> Root<F> {
    fn new() -> Self {
        Root {
            loaded: None,
            metrics: Rc::new(Metrics::new(Rc::new(WasmHost))),
            sealer: None,
            memory: std::cell::Cell::new(0),
        }
    }

    fn ensure_sealer(&mut self) {
        if self.sealer.is_none() {
            self.sealer = new_sealer();
        }
    }
}

impl<F: GuardFilter> Context for Root<F> {}

impl<F: GuardFilter> RootContext for Root<F> {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        WasmHost.log(
            LogLevel::Info,
            &format!("guard {} {} starting", F::NAME, env!("CARGO_PKG_VERSION")),
        );
        true
    }

    fn on_configure(&mut self, size: usize) -> bool {
        let Some(bytes) = plugin_configuration(size, F::NAME) else {
            return false;
        };
        // Build into locals and swap only on success: a bad reconfigure keeps the old policy.
        match Loaded::<F>::load(
            &WasmHost,
            &self.metrics,
            &bytes,
            chain_id(F::NAME, WasmHost.now_nanos()),
        ) {
            Ok(loaded) => {
                self.ensure_sealer();
                self.loaded = Some(loaded);
                true
            }
            Err(e) => {
                WasmHost.log(
                    LogLevel::Error,
                    &format!("guard {}: bad configuration: {e}", F::NAME),
                );
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        report_memory(&self.metrics, F::NAME, &self.memory);
        // Never return None (Envoy would fail the stream oddly): a VM without a valid config
        // gets a context that refuses every request (fail closed).
        let stream = self
            .loaded
            .as_ref()
            .map(|l| Box::new(l.stream(&self.metrics, self.sealer.clone())) as Box<dyn Stage>);
        Some(Box::new(Http { stream }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One stream: a single filter's, or the combined filter's.
struct Http {
    stream: Option<Box<dyn Stage>>,
}

fn action(a: Action) -> proxy_wasm::types::Action {
    match a {
        Action::Continue => proxy_wasm::types::Action::Continue,
        Action::Pause => proxy_wasm::types::Action::Pause,
    }
}

impl Context for Http {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(s) = self.stream.as_mut() {
            s.on_callout_response(&WasmHost, token_id, body_size);
        }
    }
}

/// Test builds only (cargo feature `fault-injection`, never in a shipped module: `make wasm`
/// does not enable it): a request carrying `x-guard-fault: <phase>` makes the VM trap in that
/// phase (`request_headers`, `request_body`, `response_headers`, `response_body`), so the e2e
/// failure matrix can show Envoy's `failure_policy` (FAIL_CLOSED / FAIL_OPEN / FAIL_RELOAD)
/// acting on a real VM failure of each filter.
#[cfg(feature = "fault-injection")]
fn inject_fault(phase: &str) {
    if WasmHost
        .header(Dir::Request, "x-guard-fault")
        .is_some_and(|v| v == phase.as_bytes())
    {
        WasmHost.log(LogLevel::Warn, &format!("fault injection: trap in {phase}"));
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
fn inject_fault(_phase: &str) {}

impl HttpContext for Http {
    fn on_http_request_headers(
        &mut self,
        _n: usize,
        end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        inject_fault("request_headers");
        match self.stream.as_mut() {
            Some(s) => action(s.on_request_headers(&WasmHost, end_of_stream)),
            None => {
                let body = guard_core::verdict::LocalReply::new(
                    500,
                    "not_configured",
                    "guard filter has no valid configuration",
                )
                .body(None, "");
                WasmHost.send_local_reply(500, &[("content-type", b"application/json")], &body);
                proxy_wasm::types::Action::Pause
            }
        }
    }

    fn on_http_request_body(
        &mut self,
        body_size: usize,
        end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        inject_fault("request_body");
        self.stream
            .as_mut()
            .map_or(proxy_wasm::types::Action::Continue, |s| {
                action(s.on_request_body(&WasmHost, body_size, end_of_stream))
            })
    }

    fn on_http_request_trailers(&mut self, _n: usize) -> proxy_wasm::types::Action {
        self.stream
            .as_mut()
            .map_or(proxy_wasm::types::Action::Continue, |s| {
                action(s.on_request_trailers(&WasmHost))
            })
    }

    fn on_http_response_headers(
        &mut self,
        _n: usize,
        end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        inject_fault("response_headers");
        self.stream
            .as_mut()
            .map_or(proxy_wasm::types::Action::Continue, |s| {
                action(s.on_response_headers(&WasmHost, end_of_stream))
            })
    }

    fn on_http_response_body(
        &mut self,
        body_size: usize,
        end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        inject_fault("response_body");
        self.stream
            .as_mut()
            .map_or(proxy_wasm::types::Action::Continue, |s| {
                action(s.on_response_body(&WasmHost, body_size, end_of_stream))
            })
    }

    fn on_http_response_trailers(&mut self, _n: usize) -> proxy_wasm::types::Action {
        self.stream
            .as_mut()
            .map_or(proxy_wasm::types::Action::Continue, |s| {
                action(s.on_response_trailers(&WasmHost))
            })
    }

    fn on_log(&mut self) {
        if let Some(s) = self.stream.as_mut() {
            s.on_done(&WasmHost);
        }
    }
}

/// The plugin configuration bytes (empty when there is none); `None` when unreadable (logged).
fn plugin_configuration(size: usize, name: &str) -> Option<Vec<u8>> {
    if size == 0 {
        return Some(Vec::new());
    }
    let mut data: *mut u8 = null_mut();
    let mut got: usize = 0;
    // SAFETY: as in `WasmHost::header`.
    let r = unsafe {
        match proxy_get_buffer_bytes(BUFFER_PLUGIN_CONFIGURATION, 0, size, &mut data, &mut got) {
            STATUS_OK => owned(data, got),
            _ => None,
        }
    };
    if r.is_none() {
        WasmHost.log(
            LogLevel::Error,
            &format!("guard {name}: plugin configuration unreadable"),
        );
    }
    r
}

/// The VM's capture sealer, from `GUARD_CAPTURE_KEY` (a random nonce prefix per VM).
fn new_sealer() -> Option<Rc<RefCell<Sealer>>> {
    let prefix = u32::try_from(WasmHost.now_nanos() & 0xffff_ffff).unwrap_or(0)
        ^ u32::try_from(random_u64() & 0xffff_ffff).unwrap_or(0);
    Sealer::from_env(prefix).map(|s| Rc::new(RefCell::new(s)))
}

/// Makes the combined module's filters, in order.
pub type Loaders = fn() -> Vec<Box<dyn StageLoader>>;

/// One filter of the combined module, as its root context sees it.
pub trait StageLoader {
    /// The filter's name (its key in the combined configuration).
    fn name(&self) -> &'static str;
    /// Load the filter's configuration (a new audit chain) as pending; the active one stays
    /// until [`StageLoader::commit`].
    fn prepare(&mut self, metrics: &Rc<Metrics>, bytes: &[u8]) -> Result<(), String>;
    /// The filter is not in the new combined configuration: pending is "none".
    fn prepare_none(&mut self);
    /// Make the pending configuration the active one (every member loaded).
    fn commit(&mut self);
    /// Drop the pending configuration (another member failed): the active one stays.
    fn abort(&mut self);
    /// A stream, when configured.
    fn stream(
        &self,
        metrics: &Rc<Metrics>,
        sealer: Option<Rc<RefCell<Sealer>>>,
    ) -> Option<Box<dyn Stage>>;
}

/// The [`StageLoader`] of filter `F`: its active and its pending configuration.
pub struct Slot<F: GuardFilter> {
    active: Option<Loaded<F>>,
    pending: Option<Option<Loaded<F>>>,
}

impl<F: GuardFilter> Slot<F> {
    pub fn boxed() -> Box<dyn StageLoader> {
        Box::new(Slot::<F> {
            active: None,
            pending: None,
        })
    }
}

impl<F: GuardFilter> StageLoader for Slot<F> {
    fn name(&self) -> &'static str {
        F::NAME
    }
    fn prepare(&mut self, metrics: &Rc<Metrics>, bytes: &[u8]) -> Result<(), String> {
        let loaded = Loaded::<F>::load(
            &WasmHost,
            metrics,
            bytes,
            chain_id(F::NAME, WasmHost.now_nanos()),
        )?;
        self.pending = Some(Some(loaded));
        Ok(())
    }
    fn prepare_none(&mut self) {
        self.pending = Some(None);
    }
    fn commit(&mut self) {
        if let Some(p) = self.pending.take() {
            self.active = p;
        }
    }
    fn abort(&mut self) {
        self.pending = None;
    }
    fn stream(
        &self,
        metrics: &Rc<Metrics>,
        sealer: Option<Rc<RefCell<Sealer>>>,
    ) -> Option<Box<dyn Stage>> {
        self.active
            .as_ref()
            .map(|l| Box::new(l.stream(metrics, sealer)) as Box<dyn Stage>)
    }
}

/// Register the combined filter's root context: `loaders` in DESIGN.md order (call from the
/// module's `_initialize`). Its configuration is a JSON object with one member per filter,
/// named as the filter (`llm_telemetry`, `schema_guard`, `approval_gate`, `pii_redact`, `prompt_guard`), each
/// that filter's own configuration; a filter without a member is not in the chain.
pub fn register_chain(loaders: Loaders) {
    CHAIN_LOADERS.with(|l| l.set(Some(loaders)));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(ChainRoot {
            loaders: CHAIN_LOADERS
                .with(std::cell::Cell::get)
                .map(|f| f())
                .unwrap_or_default(),
            metrics: Rc::new(Metrics::new(Rc::new(WasmHost))),
            sealer: None,
            configured: false,
            memory: std::cell::Cell::new(0),
        })
    });
}

thread_local! {
    /// The combined module's filters (set once by [`register_chain`]).
    static CHAIN_LOADERS: std::cell::Cell<Option<Loaders>> =
        const { std::cell::Cell::new(None) };
}

struct ChainRoot {
    loaders: Vec<Box<dyn StageLoader>>,
    metrics: Rc<Metrics>,
    sealer: Option<Rc<RefCell<Sealer>>>,
    configured: bool,
    /// The linear memory size last reported.
    memory: std::cell::Cell<usize>,
}

impl Context for ChainRoot {}

impl RootContext for ChainRoot {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        WasmHost.log(
            LogLevel::Info,
            &format!("guard all {} starting", env!("CARGO_PKG_VERSION")),
        );
        true
    }

    fn on_configure(&mut self, size: usize) -> bool {
        let Some(bytes) = plugin_configuration(size, "all") else {
            return false;
        };
        match self.load(&bytes) {
            Ok(()) => {
                self.configured = true;
                if self.sealer.is_none() {
                    self.sealer = new_sealer();
                }
                true
            }
            Err(e) => {
                WasmHost.log(
                    LogLevel::Error,
                    &format!("guard all: bad configuration: {e}"),
                );
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        report_memory(&self.metrics, "guard_all", &self.memory);
        let stream = self.configured.then(|| {
            let stages: Vec<Box<dyn Stage>> = self
                .loaders
                .iter()
                .filter_map(|l| l.stream(&self.metrics, self.sealer.clone()))
                .collect();
            Box::new(ChainStream::new(stages)) as Box<dyn Stage>
        });
        Some(Box::new(Http { stream }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl ChainRoot {
    /// Load every member as pending, and make them active only when all loaded: a bad member
    /// leaves every filter's old configuration in place.
    fn load(&mut self, bytes: &[u8]) -> Result<(), String> {
        let doc: serde_json::Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            serde_json::Value::Object(serde_json::Map::new())
        } else {
            serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?
        };
        let Some(members) = doc.as_object() else {
            return Err("the configuration must be a JSON object".into());
        };
        for key in members.keys() {
            if !self.loaders.iter().any(|l| l.name() == key) {
                let known: Vec<&str> = self.loaders.iter().map(|l| l.name()).collect();
                return Err(format!(
                    "/{key}: unknown filter (known: {})",
                    known.join(", ")
                ));
            }
        }
        if members.is_empty() {
            return Err("no filter configured: add at least one member".into());
        }
        let mut result = Ok(());
        for loader in &mut self.loaders {
            match members.get(loader.name()) {
                Some(cfg) => {
                    let prepared = serde_json::to_vec(cfg)
                        .map_err(|e| e.to_string())
                        .and_then(|bytes| loader.prepare(&self.metrics, &bytes))
                        .map_err(|e| format!("/{}: {e}", loader.name()));
                    if let Err(e) = prepared {
                        result = Err(e);
                        break;
                    }
                }
                None => loader.prepare_none(),
            }
        }
        for loader in &mut self.loaders {
            if result.is_ok() {
                loader.commit();
            } else {
                loader.abort();
            }
        }
        result
    }
}
