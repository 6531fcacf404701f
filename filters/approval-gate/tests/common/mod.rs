//! What the fake-host tests of approval-gate share.
#![allow(clippy::unwrap_used, dead_code)]

use approval_gate::ApprovalGate;
use guard_core::config::FilterConfig;
use guard_host::driver::{GuardFilter, GuardStream};
use guard_host::fake::FakeHost;
use guard_host::host::Host;
use guard_host::metrics::Metrics;
use std::rc::Rc;

/// A stream of the filter configured by `cfg` on a fresh recording fake host.
pub fn gate(cfg: &str) -> (Rc<FakeHost>, GuardStream<ApprovalGate>) {
    let host = Rc::new(FakeHost::new());
    let cfg = FilterConfig::parse::<<ApprovalGate as GuardFilter>::Settings, _>(
        cfg.as_bytes(),
        ApprovalGate::DEFAULT_FAILURE,
        ApprovalGate::compile,
    )
    .unwrap();
    let metrics = Rc::new(Metrics::new(host.clone() as Rc<dyn Host>));
    let shared = Rc::new(ApprovalGate::init_shared(&metrics, &cfg));
    (host, GuardStream::new(Rc::new(cfg), shared, metrics))
}
