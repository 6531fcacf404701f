//! # guard-host: the seam between guard engines and the proxy
//!
//! - [`host::Host`]: the one trait through which filters reach the proxy (headers and bodies as
//!   bytes, properties, local replies, metrics, time, logs). [`wasm`] implements it over
//!   proxy-wasm (only when compiling to wasm32: engines never see proxy-wasm); [`fake::FakeHost`]
//!   records calls for native tests.
//! - [`driver::GuardStream`]: the HTTP stream driver every filter shares: buffering with limits,
//!   trailers, failure policy, header holding, policy selection, identity, audit records.
//! - [`metrics`]: metric naming and the per-VM registry.
//!
//! A filter crate implements [`driver::GuardFilter`] and exports itself with
//! [`export_guard_filter!`]:
//!
//! ```ignore
//! guard_host::export_guard_filter!(my_filter::MyFilter);
//! ```

pub mod chain;
pub mod driver;
pub mod fake;
pub mod host;
pub mod metrics;
pub mod scratch;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use driver::{
    Action, CallOut, CallOutResult, Chunk, Cx, GuardFilter, GuardStream, Outcome, ResponsePlan,
};
pub use host::{Dir, Host};

/// Export a guard filter as a proxy-wasm module:
/// `guard_host::export_guard_filter!(my_crate::MyFilter);` in the filter crate's `lib.rs`.
#[macro_export]
macro_rules! export_guard_filter {
    ($filter:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        mod __guard_wasm_entry {
            extern "C" {
                fn __wasm_call_ctors();
            }
            #[no_mangle]
            pub extern "C" fn _initialize() {
                // SAFETY: the wasi reactor entry point runs static constructors once.
                unsafe { __wasm_call_ctors() };
                $crate::wasm::register::<$filter>();
            }
        }
    };
}
