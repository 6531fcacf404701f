//! # passthrough: the benchmark floor
//!
//! A proxy-wasm HTTP filter that buffers the whole request body and the whole response body
//! (it answers `Pause`, which Envoy maps to `StopIterationAndBuffer`, until end of stream, then
//! `Continue`) and does nothing else: no body reads, no parsing, no metrics, no logs.
//! `make bench` runs it as the `passthrough` configuration, so what a guard filter costs can be
//! read against what any wasm filter that buffers a body must pay.
//!
//! Headers pass at once, so it needs no `allow_on_headers_stop_iteration`:
//!
//! ```yaml
//! - name: passthrough
//!   typed_config:
//!     "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
//!     config:
//!       vm_config:
//!         runtime: envoy.wasm.runtime.v8
//!         code: { local: { filename: target/wasm32-wasip1/release/passthrough.wasm } }
//! ```
//!
//! The module only exists for `wasm32`: natively the crate is empty.

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType};

    /// Buffers each body until its end, then lets it go unchanged.
    struct Passthrough;

    impl Context for Passthrough {}

    impl HttpContext for Passthrough {
        fn on_http_request_body(&mut self, _body_size: usize, end_of_stream: bool) -> Action {
            hold_until(end_of_stream)
        }

        fn on_http_response_body(&mut self, _body_size: usize, end_of_stream: bool) -> Action {
            hold_until(end_of_stream)
        }
    }

    /// `Pause` (buffer) until the last chunk, then `Continue` with everything buffered.
    fn hold_until(end_of_stream: bool) -> Action {
        if end_of_stream {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    /// Accepts any plugin configuration and makes one [`Passthrough`] per stream.
    struct Root;

    impl Context for Root {}

    impl RootContext for Root {
        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Passthrough))
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
    }}
}
