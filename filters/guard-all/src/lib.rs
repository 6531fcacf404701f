//! # guard-all: every guard filter in one module
//!
//! llm-telemetry → schema-guard → approval-gate → pii-redact → prompt-guard (DESIGN.md order;
//! responses run bottom-up) linked into one proxy-wasm module with one stream context per
//! request ([`guard_host::chain::ChainStream`]): each filter keeps its own policy, audit record
//! (`guard_<filter>` filter state), chain and metrics, and behaves exactly as it does alone,
//! while Envoy runs one wasm filter instead of five. approval-gate sits above pii-redact, so on
//! the way back pii-redact has restored real values before a person approves a held tool call
//! (and before its approval digest is computed); its call-outs to the approval service, on
//! requests (MCP `tools/call`) and on held answers, resume the chain in their own direction.
//!
//! Configuration: one JSON object with a member per filter, named as the filter, each that
//! filter's own configuration (the same JSON its own module takes); a filter without a member
//! is not in the chain:
//!
//! ```json
//! {"llm_telemetry": {}, "schema_guard": {}, "approval_gate": {...}, "pii_redact": {...},
//!  "prompt_guard": {...}}
//! ```

/// The filters of the combined module, in DESIGN.md order (their configuration keys).
pub const FILTERS: [&str; 5] = [
    "llm_telemetry",
    "schema_guard",
    "approval_gate",
    "pii_redact",
    "prompt_guard",
];

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod entry {
    use guard_host::wasm::{register_chain, Slot, StageLoader};

    fn loaders() -> Vec<Box<dyn StageLoader>> {
        vec![
            Slot::<llm_telemetry::Telemetry>::boxed(),
            Slot::<schema_guard::filter::SchemaGuard>::boxed(),
            Slot::<approval_gate::filter::ApprovalGate>::boxed(),
            Slot::<pii_redact::filter::PiiRedact>::boxed(),
            Slot::<prompt_guard::filter::PromptGuard>::boxed(),
        ]
    }

    extern "C" {
        fn __wasm_call_ctors();
    }

    #[no_mangle]
    pub extern "C" fn _initialize() {
        // SAFETY: the wasi reactor entry point runs static constructors once.
        unsafe { __wasm_call_ctors() };
        register_chain(loaders);
    }
}
