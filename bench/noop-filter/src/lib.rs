//! A no-op proxy-wasm HTTP filter, the baseline of the filter benchmark (`bench/filter_bench.py`).
//!
//! It sits where the Sluice filter sits (an Envoy HTTP filter run by V8) but does nothing: every
//! callback returns `Continue` and no host call is made per request. Comparing the Sluice filter
//! with it isolates the cost of Sluice's own decision from the fixed cost of entering the Wasm VM.
//!
//! Build: `cargo build --release --target wasm32-wasip1 -p sluice-bench-noop-filter`
//! → `target/wasm32-wasip1/release/sluice_bench_noop_filter.wasm`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
}}

/// The plugin's root context: accepts any configuration and creates one [`NoopHttp`] per stream.
#[derive(Debug)]
pub struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopHttp))
    }
}

/// The per-stream context: every callback keeps its default, which returns `Continue`.
#[derive(Debug)]
pub struct NoopHttp;

impl Context for NoopHttp {}

impl HttpContext for NoopHttp {}
