//! The Sluice HTTP filter as an Envoy **dynamic module**: the same decision as the proxy-wasm
//! build (`sluice-filter`), compiled to a native shared library that Envoy loads with `dlopen` and
//! calls through its C ABI (`envoy.filters.http.dynamic_modules`), with no VM in between.
//!
//! Everything that decides is `sluice-filter`'s pure core: policy decode/validate/compile
//! ([`sluice_filter::CompiledPolicy::from_bytes`], binary protobuf or JSON, same error messages),
//! host lookup, [`sluice_filter::decide`], cookies and counter names. This crate is only the glue:
//! [`abi`] (our declarations of the ABI functions used) and the hooks below.
//!
//! # The ABI, pinned
//!
//! Envoy **1.40**, dynamic-module ABI **`v0.2.0`** (`on_program_init` returns it; Envoy logs
//! `Dynamic module ABI version v0.2.0 matched.`). Envoy 1.40 refuses a filter config whose module
//! lacks any of these 21 hooks (`Failed to resolve symbol …`; checked one by one against the real
//! Envoy with a module missing each): `on_program_init`, `on_http_filter_config_new`,
//! `on_http_filter_config_destroy`, `on_http_filter_new`, `on_http_filter_destroy`,
//! `on_http_filter_request_headers`/`_request_body`/`_request_trailers`,
//! `on_http_filter_response_headers`/`_response_body`/`_response_trailers`,
//! `on_http_filter_stream_complete`, `on_http_filter_http_callout_done`,
//! `on_http_filter_http_stream_headers`/`_data`/`_trailers`/`_complete`/`_reset`,
//! `on_http_filter_scheduled`, `on_http_filter_downstream_above_write_buffer_high_watermark` and
//! `on_http_filter_downstream_below_write_buffer_low_watermark`. Besides program init and config and
//! filter new/destroy, Sluice needs two (request headers, response headers); the rest return at
//! once. Optional hooks (`_local_reply`, `_config_scheduled`, per-route config) are not
//! exported.
//!
//! **On an Envoy upgrade**: the module must be built against the ABI of the Envoy that loads it
//! (the ABI guarantees compatibility only with the next minor version). Re-read `abi.h` at the new
//! Envoy's commit for the functions in [`abi`], then run the real-Envoy suite with the native build
//! (`SLUICE_FILTER=native cargo test -p sluice-e2e --test filter --test invalid_policy`, part of
//! `make test`): it loads the module in that Envoy, routes requests and reads the counters, and is
//! the only thing that verifies the signatures.
//!
//! # Configuration
//!
//! ```yaml
//! - name: sluice
//!   typed_config:
//!     "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
//!     dynamic_module_config:
//!       name: sluice_filter_native   # ${ENVOY_DYNAMIC_MODULES_SEARCH_PATH}/libsluice_filter_native.so
//!       # or: module: {local: {filename: /path/to/libsluice_filter_native.so}}
//!     filter_name: sluice
//!     filter_config:
//!       "@type": type.googleapis.com/google.protobuf.StringValue   # JSON policy (BytesValue: protobuf)
//!       value: '{"rollouts": [...]}'
//! ```
//!
//! An invalid policy makes `on_http_filter_config_new` return null after logging
//! `sluice: invalid policy: <error>`, so Envoy rejects (or NACKs) the configuration.
//!
//! # Per request
//!
//! The glue applies `sluice_filter::split::route`, the one routing rule the Wasm build applies
//! too: with the policy's `bucketHeader` (what the control plane sends: weights in the routes)
//! it writes the request's bucket into that header and the route's `weighted_clusters` picks the
//! version; a header-route match writes the routing header and removes a client-sent bucket
//! header; without `bucketHeader` it writes the version it decided itself. Headers are read by the
//! core's rules: every value of a repeated header (joined as Envoy's route matching joins them,
//! every `Cookie` field searched), and a non-normal `:authority` (`demo.local.`) is written back
//! in normal form.
//!
//! Unknown host: one call (read `:authority`). Known host: read `:authority`, write the routing
//! or bucket header, `clear_route_cache`, `increment_counter` — plus one read per value of each
//! header a header route or the sticky key tests, one removal on a header-route match in bucket
//! mode, one `:authority` write when it was not normal, and one response-header write for a new
//! sticky cookie. Native calls are direct C calls (no VM crossing), so counters are incremented
//! per request (Envoy's counters are atomics): no batching, no lag. The common path allocates
//! nothing: stream state comes from a per-thread pool, header values are read in place from
//! Envoy's header map, the bucket is formatted on the stack, the random generator is per thread.
//! A repeated header's joined value and a new sticky cookie are copied.
//!
//! # Counters
//!
//! The same names as the Wasm build (`sluice_filter::metrics`): one per (rollout, version, reason),
//! `sluice_requests_total.rollout.<r>.version.<v>.reason.<why>` (version `_split` for requests the
//! router splits by weight in bucket mode), defined under the module's
//! `metrics_namespace`. Sluice configures `wasmcustom` (the Wasm build's namespace), so `/stats`
//! shows both builds' counters under identical names and the bootstrap's `stats_tags` give them the
//! same labels. One difference remains in `/stats/prometheus`: Envoy 1.40 strips the Wasm
//! namespace there but no dynamic module's, so the native build's counters read
//! `envoy_wasmcustom_sluice_requests_total{rollout="…",version="…",reason="…"}` where the Wasm
//! build's read `sluice_requests_total{…}` (same labels, same values).
//!
//! # Panics
//!
//! A panic must never unwind into Envoy (undefined behaviour) nor abort it (every worker, every
//! connection). Each hook runs its body in `catch_unwind`: a request whose hook panicked passes
//! through untouched (the native weighted route still splits it) and the first such panic is
//! logged. This needs `panic = "unwind"`, so the module is built with the workspace's
//! `release-native` profile (release settings with unwinding), not `release` (`panic = "abort"`,
//! right for the Wasm build, where a panic kills only the VM). Nothing in the core panics on input
//! by design; the guard is the last line.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod abi;
#[cfg(test)]
mod fake_host;
mod hooks;
mod stream;
#[cfg(test)]
mod tests;
