//! The Sluice proxy-wasm HTTP filter: the data plane of Sluice.
//!
//! Envoy loads this module (V8) as an HTTP filter. Its plugin configuration is a
//! `sluice.v1.FilterPolicy` (binary protobuf from the control plane via ECDS, or its proto3 JSON
//! form in hand-written configs). For each request whose `:authority` belongs to a rollout it
//! decides a version ([`decision::decide`]: header routes → stickiness → weighted draw), writes
//! the version's pod-template hash into the routing header (default `x-sluice-hash`, replacing any
//! client-sent value) — which makes Envoy clear its route cache so the router re-matches on that
//! header (see below) — and counts the request. Requests for other hosts pass through untouched.
//!
//! Everything but the proxy-wasm glue at the bottom of this file is pure and tested natively:
//! [`policy`] (decode, validate, compile), [`decision`], [`http`] (host normalisation, cookies),
//! [`metrics`] (counter names).
//!
//! # Metrics
//!
//! One counter per (rollout, version, reason), named
//! `sluice_requests_total.rollout.<rollout>.version.<hash>.reason.<header|sticky|weight>` with
//! bytes outside `[A-Za-z0-9_-]` in `<rollout>` and `<hash>` replaced by `_` (`default/demo` →
//! `default_demo`). Envoy stores them as `wasmcustom.<name>` (`/stats`), and `/stats/prometheus`
//! strips the `wasmcustom.` namespace. Checked with Envoy 1.40:
//!
//! - default bootstrap: the labels stay in the metric name, dots become underscores:
//!   `sluice_requests_total_rollout_default_demo_version_7c9f_reason_weight{} 42`;
//! - with these bootstrap `stats_config.stats_tags`, Prometheus shows real labels:
//!   `sluice_requests_total{rollout="default_demo",version="7c9f",reason="weight"} 42`.
//!
//! ```yaml
//! stats_config:
//!   stats_tags:
//!   - tag_name: rollout
//!     regex: '^wasmcustom\.sluice_requests_total(\.rollout\.([^.]+))'
//!   - tag_name: version
//!     regex: '^wasmcustom\.sluice_requests_total\.rollout\.[^.]+(\.version\.([^.]+))'
//!   - tag_name: reason
//!     regex: '^wasmcustom\.sluice_requests_total\.rollout\.[^.]+\.version\.[^.]+(\.reason\.([^.]+))$'
//! ```
//!
//! Counters lag: requests are counted in VM memory and added to Envoy's counters by each root
//! context (one per worker) once a second (`on_tick`) and when it is done, so `/stats` may be up
//! to about a second behind the traffic. Read counters after waiting at least 1.5 s.
//!
//! # Host calls per request
//!
//! Every host call crosses the V8 boundary (a few µs of Envoy CPU each), so the request path
//! makes as few as it can; what can be known from the policy is decided at configuration time.
//!
//! - When some rollout tests a header (header routes, stickiness: [`CompiledPolicy::reads_headers`])
//!   all request headers are read in one call (`proxy_get_header_map_pairs`, `:authority` among
//!   them) and read in place from the host's buffer ([`pairs::HeaderPairs`]: no copy per header;
//!   a header sent once is lent, not joined into a new buffer). Otherwise only `:authority` is
//!   read. Either way: 1 call for an unknown host.
//! - A known host then costs one header write (the routing or bucket header): 2 calls in all,
//!   plus one removal when a header route matches in the bucket mode (a client-sent bucket
//!   header), one `:authority` write when it was not in normal form (`demo.local.`,
//!   `demo.local:`), and one response header write when a new sticky cookie is handed out.
//! - No `clear_route_cache`: Envoy (since 1.33) clears the route cache itself on a request header
//!   write by a module of ABI 0.2.1 or older, and proxy-wasm 0.2 declares 0.2.1
//!   (`WRITE_CLEARS_ROUTE_CACHE` below; proven by the re-routing e2e tests, and the e2e test
//!   `wasm_abi` fails if an SDK upgrade changes the declared ABI). The foreign call cost about
//!   7 µs of Envoy CPU per request on the benchmark machine.
//! - Counters cost no host call per request: one `increment_metric` per non-zero counter per
//!   second per worker.
//!
//! With the weights in the routes (`bucketHeader`, what the control plane sends; see [`split`])
//! the bucket header is written instead of the routing header. Requests whose bucket is written
//! are counted under version `_split` ([`metrics::SPLIT_VERSION`]): the router, not the filter,
//! picks their version, and Envoy's per-version cluster stats count them. The rule is
//! [`split::route`], shared with the native build (`sluice-filter-native`).
//!
//! # Randomness
//!
//! Each root context (one per plugin per VM) owns one `fastrand` generator, seeded from
//! `getrandom` (WASI `random_get`, which Envoy implements). If that fails, the seed is mixed from
//! the host's current time and a per-module counter (so two root contexts created at the same
//! instant still differ), and the failure is logged.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod decision;
pub mod hosts;
pub mod http;
pub mod metrics;
pub mod pairs;
pub mod policy;
pub mod split;

pub use decision::{Decision, Reason, RequestView, decide};
pub use policy::{CompiledPolicy, PolicyError};

#[cfg(target_arch = "wasm32")]
mod glue {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, UNIX_EPOCH};

    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

    use crate::metrics::Tally;
    use crate::pairs::HeaderPairs;
    use crate::{CompiledPolicy, RequestView, split};

    /// Whether Envoy clears the route cache itself when this module writes a request header, so
    /// the filter need not call the `clear_route_cache` foreign function (its costliest host
    /// call). True for the ABI this build declares: proxy-wasm 0.2 exports
    /// `proxy_abi_version_0_2_1`, and Envoy (1.33 and later, checked with 1.40) clears the cache on
    /// header writes from modules of ABI 0.2.1 and older. Proven in a real Envoy by the
    /// re-routing e2e tests (`--test filter`, `--test filter_router_agree`); the e2e test
    /// `wasm_abi::the_module_declares_abi_0_2_1` fails if an SDK upgrade changes the ABI, and
    /// then this must become `false`.
    const WRITE_CLEARS_ROUTE_CACHE: bool = true;

    /// How often a root context adds its counted requests to Envoy's counters.
    const FLUSH_PERIOD: Duration = Duration::from_secs(1);

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::new()) });
    }}

    fn log(level: LogLevel, message: &str) {
        // Logging is best effort: there is nowhere else to report a failure to log.
        let _ = hostcalls::log(level, message);
    }

    /// State shared by a root context and all its HTTP contexts.
    struct Shared {
        /// The state of the VM's `fastrand::Rng`, kept in a `Cell` so no borrow can fail.
        rng_state: Cell<u64>,
        /// Whether a `clear_route_cache` failure was already logged.
        clear_cache_failed: Cell<bool>,
    }

    /// A compiled policy with its counters: Envoy's ids and the counts not yet added to them,
    /// both in [`Tally`] order.
    struct Configured {
        policy: CompiledPolicy,
        /// Whether any rollout tests a request header (header routes, stickiness): then all
        /// headers are read in one host call, `:authority` with them.
        reads_headers: bool,
        counter_ids: Vec<u32>,
        tally: Tally,
    }

    impl Configured {
        /// Adds the counted requests to Envoy's counters.
        fn flush(&self) {
            self.tally.drain(|index, count| {
                if let Some(&id) = self.counter_ids.get(index) {
                    let _ =
                        hostcalls::increment_metric(id, i64::try_from(count).unwrap_or(i64::MAX));
                }
            });
        }
    }

    struct Root {
        shared: Rc<Shared>,
        config: Option<Rc<Configured>>,
        /// Replaced configurations still held by in-flight HTTP contexts: flushed on every tick
        /// until the last of those contexts is gone.
        retired: Vec<Rc<Configured>>,
    }

    impl Root {
        fn flush(&mut self) {
            for config in self.config.iter().chain(&self.retired) {
                config.flush();
            }
            self.retired.retain(|c| Rc::strong_count(c) > 1);
        }
    }

    impl Root {
        fn new() -> Self {
            Self {
                shared: Rc::new(Shared {
                    rng_state: Cell::new(seed()),
                    clear_cache_failed: Cell::new(false),
                }),
                config: None,
                retired: Vec::new(),
            }
        }
    }

    fn seed() -> u64 {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        match getrandom::u64() {
            Ok(seed) => seed,
            Err(e) => {
                log(
                    LogLevel::Warn,
                    &format!("sluice: getrandom failed ({e}); seeding from time and a counter"),
                );
                let nanos = hostcalls::get_current_time()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                let count = COUNTER.fetch_add(1, Ordering::Relaxed);
                xxhash_rust::xxh3::xxh3_64_with_seed(&nanos.to_le_bytes(), count)
            }
        }
    }

    impl Context for Root {
        /// Envoy is done with this root context (its plugin configuration was replaced or
        /// removed). Stop its tick: Envoy keeps a retired context's timer and re-arms it every
        /// period even after the context is deleted, so without this every replaced policy left a
        /// timer firing each second on every worker, forever (issue 7 §5).
        fn on_done(&mut self) -> bool {
            self.flush();
            self.retired.clear();
            self.config = None;
            if let Err(status) = hostcalls::set_tick_period(Duration::ZERO) {
                log(
                    LogLevel::Warn,
                    &format!("sluice: stopping the tick of a retired policy: {status:?}"),
                );
            }
            true
        }
    }

    impl RootContext for Root {
        fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
            let bytes = hostcalls::get_buffer(
                BufferType::PluginConfiguration,
                0,
                plugin_configuration_size,
            )
            .ok()
            .flatten()
            .unwrap_or_default();
            let policy = match CompiledPolicy::from_bytes(&bytes) {
                Ok(policy) => policy,
                Err(e) => {
                    log(LogLevel::Error, &format!("sluice: invalid policy: {e}"));
                    return false;
                }
            };
            let names = Tally::counter_names(&policy);
            let mut counter_ids = Vec::with_capacity(names.len());
            for name in names {
                match hostcalls::define_metric(MetricType::Counter, &name) {
                    Ok(id) => counter_ids.push(id),
                    Err(status) => {
                        log(
                            LogLevel::Error,
                            &format!("sluice: defining counter {name}: {status:?}"),
                        );
                        return false;
                    }
                }
            }
            // Each worker's VM has its own root context, so each flushes its own counts.
            if let Err(status) = hostcalls::set_tick_period(FLUSH_PERIOD) {
                log(
                    LogLevel::Error,
                    &format!("sluice: setting the tick period: {status:?}"),
                );
                return false;
            }
            log(
                LogLevel::Info,
                &format!(
                    "sluice: policy configured: {} rollout(s), routing header {}",
                    policy.rollouts.len(),
                    policy.routing_header
                ),
            );
            let tally = Tally::new(&policy);
            let new = Rc::new(Configured {
                reads_headers: policy.reads_headers(),
                policy,
                counter_ids,
                tally,
            });
            if let Some(old) = self.config.replace(new) {
                self.retired.push(old);
            }
            self.flush();
            true
        }

        fn on_tick(&mut self) {
            self.flush();
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Http {
                shared: Rc::clone(&self.shared),
                config: self.config.clone(),
                set_cookie: None,
            }))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Http {
        shared: Rc<Shared>,
        config: Option<Rc<Configured>>,
        /// A `Set-Cookie` value for the response (a new sticky key).
        set_cookie: Option<String>,
    }

    /// Replaces (`Some`) or removes (`None`) every value of a request header.
    fn set_header(name: &str, value: Option<&[u8]>) {
        if let Err(status) =
            hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, value)
        {
            log(
                LogLevel::Error,
                &format!("sluice: writing request header {name}: {status:?}"),
            );
        }
    }

    /// Every request header, read from Envoy in one host call (a repeated header's values are
    /// all needed, and Envoy's per-name read returns only the first) and kept as the host's
    /// serialised buffer: [`HeaderPairs`] reads it in place, with no copy per header.
    #[allow(unsafe_code)]
    fn request_headers() -> Vec<u8> {
        use std::ptr::null_mut;
        #[link(wasm_import_module = "env")]
        unsafe extern "C" {
            // The SDK's own declaration is private; its deserialising wrapper copies every header.
            fn proxy_get_header_map_pairs(
                map_type: MapType,
                return_map_data: *mut *mut u8,
                return_map_size: *mut usize,
            ) -> proxy_wasm::types::Status;
        }
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: both out-pointers point to live locals; the host writes them and nothing else.
        let status = unsafe {
            proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size)
        };
        if status != proxy_wasm::types::Status::Ok || data.is_null() {
            return Vec::new();
        }
        // SAFETY: the host allocated exactly `size` bytes at `data` by calling this module's
        // `proxy_on_memory_allocate` (the SDK's: a boxed `[u8]` of that length) and hands them
        // over; the SDK's own `get_map_bytes` takes ownership the same way.
        unsafe { Vec::from_raw_parts(data, size, size) }
    }

    impl Context for Http {}

    impl Http {
        /// Routes a request of a known host: `authority` as sent, `headers` all its headers
        /// (empty when the policy tests none).
        fn route(&mut self, config: &Configured, authority: &[u8], headers: &dyn RequestView) {
            let Some((index, rollout)) = config.policy.rollout_for_authority(authority) else {
                return;
            };
            // The router must see the host the filter decided for (see `authority_rewrite`).
            if let Some(host) = crate::http::authority_rewrite(authority)
                && let Err(status) = hostcalls::set_map_value_bytes(
                    MapType::HttpRequestHeaders,
                    ":authority",
                    Some(&host),
                )
            {
                log(
                    LogLevel::Error,
                    &format!("sluice: normalising :authority: {status:?}"),
                );
            }

            let mut rng = fastrand::Rng::with_seed(self.shared.rng_state.get());
            let routing = split::route(&config.policy, rollout, headers, &mut rng);
            self.shared.rng_state.set(rng.get_seed());
            // proxy_replace_header_map_value is Envoy's `setCopy`: it replaces every value a
            // client may have sent under this name.
            routing
                .value
                .with_bytes(|value| set_header(routing.header, Some(value)));
            if let Some(name) = routing.remove {
                set_header(name, None);
            }
            if !WRITE_CLEARS_ROUTE_CACHE
                && let Err(status) = hostcalls::call_foreign_function("clear_route_cache", None)
                && !self.shared.clear_cache_failed.replace(true)
            {
                log(
                    LogLevel::Error,
                    &format!(
                        "sluice: clear_route_cache failed ({status:?}); \
                         routing may ignore the filter's decision (logged once)"
                    ),
                );
            }
            config.tally.record(index, routing.slot);
            self.set_cookie = routing.set_cookie;
        }
    }

    impl HttpContext for Http {
        fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
            let Some(config) = self.config.clone() else {
                return Action::Continue;
            };
            if config.reads_headers {
                // One host call for everything the decision may test, `:authority` included.
                let buffer = request_headers();
                let headers = HeaderPairs::new(&buffer);
                if let Some(authority) = headers.first(":authority") {
                    self.route(&config, authority, &headers);
                }
            } else if let Ok(Some(authority)) =
                hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, ":authority")
            {
                self.route(&config, &authority, &HeaderPairs::default());
            }
            Action::Continue
        }

        fn on_http_response_headers(
            &mut self,
            _num_headers: usize,
            _end_of_stream: bool,
        ) -> Action {
            if let Some(cookie) = self.set_cookie.take() {
                let _ =
                    hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &cookie);
            }
            Action::Continue
        }
    }
}
