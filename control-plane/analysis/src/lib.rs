//! Analysis: metrics decide whether a release goes on. Argo Rollouts' `AnalysisTemplate` /
//! `AnalysisRun` schema, its conditions, its measurement rules, and the Prometheus and web
//! providers.
//!
//! ```text
//!  AnalysisTemplate(s) + args + pod-template hashes
//!        │ plan_run()                      (pure: args, defaults, validation, conditions compiled)
//!        ▼
//!     RunPlan ──due(plan, status, now)──► metrics to measure now
//!        │                                      │ measure()   (I/O: Prometheus, web; async)
//!        ▼                                      ▼
//!  advance(plan, status, measurements, terminate, now) ──► new AnalysisRunStatus + next time
//!                                                          (pure; Argo's analysis controller)
//! ```
//!
//! - [`resource`]: the resources; `argoproj.io` documents load as they are ([`parse_analysis_documents`]).
//! - [`args`]: `{{args.x}}`, `valueFrom.podTemplateHashValue`; [`field_path`]: `valueFrom.fieldRef`.
//! - [`condition`]: the expr language (`expr-lang`) plus Argo's `asInt`, `asFloat`, `isNaN`,
//!   `isInf`, `isNil`, `default`.
//! - [`plan`] and [`machine`]: defaults, validation and the state machine, no I/O.
//! - [`provider`]: the HTTP edge.
//! - [`rollout`]: a rollout's run (its args and hashes), shared by the drivers.
//! - [`runner`]: one task per run, measuring on the machine's timers, cancellable.
#![forbid(unsafe_code)]
#![deny(warnings)]

pub mod args;
pub mod condition;
mod documents;
mod error;
pub mod field_path;
pub mod machine;
pub mod plan;
#[cfg(feature = "providers")]
pub mod provider;
pub mod resource;
pub mod rollout;
#[cfg(feature = "providers")]
pub mod runner;

pub use args::PodHashes;
pub use documents::{AnalysisDocument, crds_yaml, parse_analysis_documents};
pub use error::AnalysisError;
pub use machine::{Advanced, advance, due, is_terminating};
pub use plan::{PlannedMetric, RunPlan, plan_run};
pub use resource::{
    AnalysisPhase, AnalysisRun, AnalysisRunStatus, AnalysisTemplate, AnalysisTemplateSpec,
    ClusterAnalysisTemplate, Measurement, MetricResult,
};
pub use rollout::{
    plan_for_rollout, plan_from_spec, resolve_field_refs, rollout_arguments, run_spec,
};
