//! The one seam between filter logic and the proxy: every host call goes through [`Host`], with
//! typed results and no panics. [`crate::wasm`] implements it over proxy-wasm; [`crate::fake`]
//! records calls for native tests.
//!
//! Header values are bytes: Envoy passes through header values that are not UTF-8, and the
//! SDK's `String` getters panic on them (proxy-wasm-rust-sdk issues #263, #310).

/// Which half of the exchange a header or body call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    Request,
    Response,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Host calls the guard filters use.
pub trait Host {
    fn header(&self, dir: Dir, name: &str) -> Option<Vec<u8>>;
    /// Set (replace) a header; `None` removes it.
    fn set_header(&self, dir: Dir, name: &str, value: Option<&[u8]>);
    /// Bytes `[start, start+len)` of the body buffer of this callback.
    fn body(&self, dir: Dir, start: usize, len: usize) -> Option<Vec<u8>>;
    /// Replace bytes `[start, start+len)` of the body buffer with `data`.
    fn set_body(&self, dir: Dir, start: usize, len: usize, data: &[u8]) -> bool;
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    fn set_property(&self, path: &[&str], value: &[u8]) -> bool;
    fn send_local_reply(&self, status: u16, headers: &[(&str, &[u8])], body: &[u8]) -> bool;
    /// Wall-clock time in nanoseconds since the Unix epoch.
    fn now_nanos(&self) -> u64;
    fn log(&self, level: LogLevel, message: &str);
    /// Start an HTTP call to an Envoy cluster; `headers` must include `:method`, `:path` and
    /// `:authority`. Returns the call's token, `None` if Envoy refused it (unknown cluster, bad
    /// headers).
    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u32>;
    /// A header of the call-out response being delivered (only inside the call-out callback).
    fn call_response_header(&self, name: &str) -> Option<Vec<u8>>;
    /// The body of the call-out response being delivered, up to `len` bytes.
    fn call_response_body(&self, len: usize) -> Option<Vec<u8>>;
    /// Resume a request or response this filter paused (after a call-out).
    fn resume(&self, dir: Dir);
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32>;
    fn increment_metric(&self, id: u32, by: i64);
    fn record_metric(&self, id: u32, value: u64);
}

/// A header value as text, if it is valid UTF-8.
pub fn header_str(host: &dyn Host, dir: Dir, name: &str) -> Option<String> {
    host.header(dir, name)
        .and_then(|v| String::from_utf8(v).ok())
}
