//! Every filter's configuration parser, as `guardctl lint` runs them (the code of each
//! filter's `on_configure`): prompt-guard, pii-redact, schema-guard, rag-acl, approval-gate and
//! llm-telemetry, each on the same bytes.
//!
//! Invariants (the config contract):
//! - no parser panics or hangs on any input;
//! - a refusal is a config error whose message starts with the JSON path it is about;
//! - parsing is deterministic (same policies, same version), and an accepted configuration
//!   always has a `default` policy that `select` falls back to.
#![no_main]

use approval_gate::ApprovalGate;
use guard_core::config::{FailurePolicy, FilterConfig};
use guard_core::error::Result;
use guard_core::ErrorKind;
use guard_host::GuardFilter;
use libfuzzer_sys::fuzz_target;
use llm_telemetry::Telemetry;
use rag_acl::RagAcl;

fn check<C>(filter: &str, parse: impl Fn() -> Result<FilterConfig<C>>) {
    match parse() {
        Ok(cfg) => {
            let names: Vec<String> = cfg.policy_names().map(str::to_string).collect();
            assert!(names.iter().any(|n| n == "default"), "{filter}: no default policy");
            assert_eq!(cfg.select(Some("no such policy"), Some("no such route")).name, "default");
            let again = parse().expect("accepted once, refused the second time");
            let names2: Vec<String> = again.policy_names().map(str::to_string).collect();
            assert_eq!(names, names2);
            assert_eq!(cfg.version, again.version);
        }
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Config, "{filter}: {e}");
            assert!(e.message().starts_with('/'), "{filter}: error names no JSON path: {e}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() > guard_fuzz::MAX_INPUT {
        return;
    }
    check("prompt_guard", || prompt_guard::engine::parse_config(data));
    check("pii_redact", || pii_redact::engine::parse_config(data));
    check("schema_guard", || schema_guard::filter::parse_config(data));
    check("rag_acl", || {
        FilterConfig::parse::<<RagAcl as GuardFilter>::Settings, _>(data, RagAcl::DEFAULT_FAILURE, RagAcl::compile)
    });
    check("approval_gate", || {
        FilterConfig::parse::<<ApprovalGate as GuardFilter>::Settings, _>(
            data,
            ApprovalGate::DEFAULT_FAILURE,
            ApprovalGate::compile,
        )
    });
    check("llm_telemetry", || {
        FilterConfig::parse::<<Telemetry as GuardFilter>::Settings, _>(data, FailurePolicy::FailOpen, Telemetry::compile)
    });
});
