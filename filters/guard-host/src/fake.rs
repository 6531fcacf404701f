//! A recording fake of [`Host`] for native tests of filter logic, with `with_*` builders.
//! It models Envoy's buffering: while the filter pauses a body callback the body buffer is
//! cumulative, otherwise it holds only the current chunk.

use crate::host::{Dir, Host, LogLevel, MetricKind};
use std::cell::RefCell;
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub struct LocalReplySent {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct FakeState {
    pub request_headers: Vec<(String, Vec<u8>)>,
    pub response_headers: Vec<(String, Vec<u8>)>,
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    pub properties: BTreeMap<Vec<String>, Vec<u8>>,
    pub local_reply: Option<LocalReplySent>,
    pub logs: Vec<(LogLevel, String)>,
    pub metric_names: Vec<(MetricKind, String)>,
    pub metric_values: BTreeMap<String, i64>,
    pub histogram_values: BTreeMap<String, Vec<u64>>,
    pub now: u64,
    /// Call-outs dispatched: (cluster, headers, body, timeout).
    pub callouts: Vec<FakeCallout>,
    /// The call-out response a test is delivering: (status header, body).
    pub call_response: Option<(Option<Vec<u8>>, Vec<u8>)>,
    pub resumed: Vec<Dir>,
    /// Make `dispatch_http_call` fail.
    pub refuse_callouts: bool,
    /// Host calls made, by method name (what crossing the wasm boundary would cost).
    pub calls: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone)]
pub struct FakeCallout {
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

#[derive(Debug, Default)]
pub struct FakeHost {
    pub state: RefCell<FakeState>,
}

impl FakeHost {
    fn count(&self, name: &'static str) {
        *self.state.borrow_mut().calls.entry(name).or_insert(0) += 1;
    }
    pub fn new() -> Self {
        let h = FakeHost::default();
        h.state.borrow_mut().now = 1_700_000_000_000_000_000;
        h
    }
    pub fn with_request_header(self, name: &str, value: &[u8]) -> Self {
        self.state
            .borrow_mut()
            .request_headers
            .push((name.to_string(), value.to_vec()));
        self
    }
    pub fn with_response_header(self, name: &str, value: &[u8]) -> Self {
        self.state
            .borrow_mut()
            .response_headers
            .push((name.to_string(), value.to_vec()));
        self
    }
    pub fn with_property(self, path: &[&str], value: &[u8]) -> Self {
        self.state
            .borrow_mut()
            .properties
            .insert(path.iter().map(|s| s.to_string()).collect(), value.to_vec());
        self
    }
    /// Put bytes into the body buffer of a direction (what Envoy holds for this callback).
    pub fn set_buffer(&self, dir: Dir, bytes: &[u8]) {
        let mut s = self.state.borrow_mut();
        match dir {
            Dir::Request => s.request_body = bytes.to_vec(),
            Dir::Response => s.response_body = bytes.to_vec(),
        }
    }
    pub fn append_buffer(&self, dir: Dir, bytes: &[u8]) {
        let mut s = self.state.borrow_mut();
        match dir {
            Dir::Request => s.request_body.extend_from_slice(bytes),
            Dir::Response => s.response_body.extend_from_slice(bytes),
        }
    }
    pub fn buffer(&self, dir: Dir) -> Vec<u8> {
        let s = self.state.borrow();
        match dir {
            Dir::Request => s.request_body.clone(),
            Dir::Response => s.response_body.clone(),
        }
    }
    pub fn advance(&self, nanos: u64) {
        self.state.borrow_mut().now += nanos;
    }
    pub fn metric(&self, name: &str) -> i64 {
        self.state
            .borrow()
            .metric_values
            .get(name)
            .copied()
            .unwrap_or(0)
    }
    /// Set the call-out response the next `on_callout_response` delivers (`None` status: the
    /// call failed or timed out).
    pub fn set_call_response(&self, status: Option<u16>, body: &[u8]) {
        self.state.borrow_mut().call_response =
            Some((status.map(|s| s.to_string().into_bytes()), body.to_vec()));
    }
    pub fn histogram(&self, name: &str) -> Vec<u64> {
        self.state
            .borrow()
            .histogram_values
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
    pub fn local_reply(&self) -> Option<LocalReplySent> {
        self.state.borrow().local_reply.clone()
    }
    pub fn get_property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.state.borrow().properties.get(&key).cloned()
    }
    pub fn header_value(&self, dir: Dir, name: &str) -> Option<Vec<u8>> {
        self.header(dir, name)
    }
    fn metric_name(&self, id: u32) -> Option<(MetricKind, String)> {
        self.state.borrow().metric_names.get(id as usize).cloned()
    }
}

impl Host for FakeHost {
    fn header(&self, dir: Dir, name: &str) -> Option<Vec<u8>> {
        self.count("header");
        let s = self.state.borrow();
        let headers = match dir {
            Dir::Request => &s.request_headers,
            Dir::Response => &s.response_headers,
        };
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
    fn set_header(&self, dir: Dir, name: &str, value: Option<&[u8]>) {
        self.count("set_header");
        let mut s = self.state.borrow_mut();
        let headers = match dir {
            Dir::Request => &mut s.request_headers,
            Dir::Response => &mut s.response_headers,
        };
        headers.retain(|(k, _)| k != name);
        if let Some(v) = value {
            headers.push((name.to_string(), v.to_vec()));
        }
    }
    fn body(&self, dir: Dir, start: usize, len: usize) -> Option<Vec<u8>> {
        self.count("body");
        let s = self.state.borrow();
        let buf = match dir {
            Dir::Request => &s.request_body,
            Dir::Response => &s.response_body,
        };
        let end = start.saturating_add(len).min(buf.len());
        buf.get(start.min(end)..end).map(<[u8]>::to_vec)
    }
    fn set_body(&self, dir: Dir, start: usize, len: usize, data: &[u8]) -> bool {
        self.count("set_body");
        let mut s = self.state.borrow_mut();
        let buf = match dir {
            Dir::Request => &mut s.request_body,
            Dir::Response => &mut s.response_body,
        };
        let end = start.saturating_add(len).min(buf.len());
        if start > end {
            return false;
        }
        buf.splice(start..end, data.iter().copied());
        true
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.count("property");
        self.get_property(path)
    }
    fn set_property(&self, path: &[&str], value: &[u8]) -> bool {
        self.count("set_property");
        self.state
            .borrow_mut()
            .properties
            .insert(path.iter().map(|s| s.to_string()).collect(), value.to_vec());
        true
    }
    fn send_local_reply(&self, status: u16, headers: &[(&str, &[u8])], body: &[u8]) -> bool {
        self.count("send_local_reply");
        self.state.borrow_mut().local_reply = Some(LocalReplySent {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
            body: body.to_vec(),
        });
        true
    }
    fn now_nanos(&self) -> u64 {
        self.count("now_nanos");
        self.state.borrow().now
    }
    fn log(&self, level: LogLevel, message: &str) {
        self.count("log");
        self.state
            .borrow_mut()
            .logs
            .push((level, message.to_string()));
    }
    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u32> {
        self.count("dispatch_http_call");
        let mut s = self.state.borrow_mut();
        if s.refuse_callouts {
            return None;
        }
        s.callouts.push(FakeCallout {
            cluster: cluster.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
            timeout_ms,
        });
        u32::try_from(s.callouts.len()).ok()
    }
    fn call_response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.count("call_response_header");
        let s = self.state.borrow();
        match (&s.call_response, name) {
            (Some((status, _)), ":status") => status.clone(),
            _ => None,
        }
    }
    fn call_response_body(&self, len: usize) -> Option<Vec<u8>> {
        self.count("call_response_body");
        let s = self.state.borrow();
        s.call_response
            .as_ref()
            .map(|(_, b)| b.iter().take(len).copied().collect())
    }
    fn resume(&self, dir: Dir) {
        self.count("resume");
        self.state.borrow_mut().resumed.push(dir);
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        self.count("define_metric");
        let mut s = self.state.borrow_mut();
        if let Some(i) = s.metric_names.iter().position(|(_, n)| n == name) {
            return u32::try_from(i).ok();
        }
        s.metric_names.push((kind, name.to_string()));
        u32::try_from(s.metric_names.len() - 1).ok()
    }
    fn increment_metric(&self, id: u32, by: i64) {
        self.count("increment_metric");
        if let Some((_, name)) = self.metric_name(id) {
            *self
                .state
                .borrow_mut()
                .metric_values
                .entry(name)
                .or_insert(0) += by;
        }
    }
    fn record_metric(&self, id: u32, value: u64) {
        self.count("record_metric");
        if let Some((kind, name)) = self.metric_name(id) {
            let mut s = self.state.borrow_mut();
            if kind == MetricKind::Histogram {
                s.histogram_values.entry(name).or_default().push(value);
            } else {
                s.metric_values
                    .insert(name, i64::try_from(value).unwrap_or(i64::MAX));
            }
        }
    }
}
