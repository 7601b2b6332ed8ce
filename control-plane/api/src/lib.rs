//! Rollout resource types and their derivation into the traffic model. No Kubernetes I/O.
//!
//! ```text
//!  sluice.dev/v1alpha1 Rollout ─┐                       (Kubernetes adapter: + pods, service hosts)
//!  argoproj.io/v1alpha1 Rollout ┴─► Rollout ─derive_rollout()─► sluice_model::RolloutState
//!  rollouts file (standalone) ──parse_rollouts_file()──┘    load_state(): file → TrafficState
//! ```
//!
//! - [`resource`]: the `Rollout` custom resource (Argo's names and meaning for the canary strategy
//!   and the status, plus Sluice's `hosts`, `stickiness`, `staticEndpoints`), Argo's Rollout read
//!   as the same types, and the CRD ([`crd`], [`crd_yaml`]).
//! - [`derive`](derive_rollout): status + spec + endpoints → validated `RolloutState`; errors name
//!   the rollout and the field in the document's terms (`spec.strategy.canary.steps[2]...`).
//! - [`parse_rollouts_file`], [`load_state`]: standalone mode's multi-document YAML file.
//! - [`weight`]: Argo's weights (units of `maxTrafficWeight`, default 100) → basis points;
//!   [`duration`]: Argo's pause durations (`10`, `"10"`, Go durations) → whole seconds. Both
//!   check every number and never wrap.
//!
//! Shared by the file mode and the Kubernetes adapter, so file mode needs no cluster client.
#![forbid(unsafe_code)]
#![deny(warnings)]

pub mod bluegreen;
mod derive;
pub mod duration;
mod error;
pub mod experiment;
pub mod experiment_object;
mod file;
mod mirror;
mod release_fields;
pub mod resource;
pub mod weight;

pub use derive::{derive_rollout, derive_rollout_with_preview, rollout_name};
pub use error::ApiError;
pub use file::{
    check_engine_owned, load_state, parse_documents, parse_rollouts_file, state_of_documents,
};
pub use resource::{
    ARGO_API_VERSION, ArgoRollout, Rollout, RolloutSpec, RolloutStatus, SLUICE_API_VERSION, crd,
    crd_yaml,
};
pub use weight::WeightScale;
