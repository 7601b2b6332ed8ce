//! Sluice's Kubernetes source: Rollouts, Pods and Services in, [`TrafficState`] out; the step
//! engine and status writes for Sluice's own Rollouts; leader election.
//!
//! ```text
//!  API server ──watch──► run (I/O: kube watchers)                                   watch.rs
//!     │  sluice.dev Rollouts, argoproj.io Rollouts (observe), Pods, Services
//!     ▼
//!  Index::apply_* / delete_* / reset_*  ──state()──► TrafficState + per-rollout errors  (pure)
//!     │                                                  │
//!     │ reconcile(): steps::next_status + derivation     └─► watch::Sender<TrafficState> ─► xDS
//!     ▼                                                      mpsc::Sender<SourceError>
//!  leader only (Lease, lease.rs) ──► patch_status (sluice.dev) / Events (argoproj.io)
//! ```
//!
//! Everything that decides (selectors, endpoints, hosts, derivation, steps, lease decisions) is
//! pure and unit-tested; the I/O modules only move objects between the API server and it.
#![forbid(unsafe_code)]

mod error;
pub mod index;
pub mod lease;
pub mod manifests;
pub mod objects;
pub mod parse;
pub mod reconcile;
pub mod selector;
pub mod status_writer;
pub mod steps;
pub mod watch;
pub mod workloads;

pub use error::K8sError;
pub use index::{DEFAULT_CLUSTER_DOMAIN, Index, IndexState, LiveHash, SourceError};
pub use lease::LeaseConfig;
pub use objects::{POD_TEMPLATE_HASH_LABEL, RolloutApi, RolloutRef};
pub use watch::{Config, DataPlaneFn, DataPlaneSource, run};

#[doc(no_inline)]
pub use sluice_model::TrafficState;
