//! Sluice's Kubernetes source: Rollouts, Pods and Services in, [`TrafficState`] out; the release
//! engine's driver and status writes for Sluice's own Rollouts; leader election.
//!
//! ```text
//!  API server ──watch──► watch/streams.rs (I/O: kube watchers; parse.rs reads Rollouts)
//!     │  sluice.dev Rollouts, argoproj.io Rollouts (observe), Pods, Services,
//!     │  ReplicaSets + Deployments (when managing sluice.dev Rollouts)
//!     ▼  watch/driver.rs (the loop's state and the leader's passes; watch.rs is the loop)
//!  Index::apply_* / delete_* / reset_*  ──state()──► TrafficState + per-rollout errors  (pure)
//!  Workloads (ReplicaSets, Deployments) ──observed()──► sluice_release::Observed      (pure)
//!     │                                                  │
//!     │ leader only (Lease, lease.rs):                   └─► watch::Sender<TrafficState> ─► xDS
//!     │   template / workloadRef: sluice_release::reconcile → actions, status, requeue timer
//!     │   versions made by hand:  steps::next_status (reconcile.rs), on the resync tick
//!     ▼
//!  status_writer.rs: status patches, Events, create/scale/delete ReplicaSets, scale Deployments
//! ```
//!
//! Everything that decides (selectors, endpoints, hosts, derivation, the engines, lease
//! decisions) is pure and unit-tested; the I/O modules only move objects between the API server
//! and it. Nothing is published or written before every watch has listed once.
#![forbid(unsafe_code)]

pub mod ack_report;
pub mod analysis_runs;
mod error;
pub mod experiments;
pub mod fence;
pub mod index;
pub mod lease;
pub mod manifests;
pub mod merge_patch;
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
