//! The desired traffic, as plain data: no I/O, no kube, no tonic, no tokio.
//!
//! ```text
//! source adapters (file loader | Kubernetes index)
//!        │  Rollout documents → RolloutState
//!        ▼
//!   TrafficState ──validate()──► (errors name rollout + field; an invalid state is never pushed)
//!        │
//!        ├──► sluice-xds: clusters / endpoints / routes / listener / ECDS snapshot
//!        └──► policy::render(): the filter's `sluice.v1.FilterPolicy` (mirror routes and preview
//!             hosts are Envoy route policy only: the filter does not see them)
//! ```
#![forbid(unsafe_code)]
#![deny(warnings)]

use std::{collections::BTreeMap, net::SocketAddr};

mod error;
pub mod mirror;
mod overrides;
pub mod policy;
pub mod preview;
pub mod validate;

pub use error::{FieldPath, ModelError, Segment};
pub use mirror::{MirrorRoute, RequestMatch};
pub use overrides::Override;
pub use preview::Preview;
pub use sluice_proto::rules::SameSite;

/// Canary weights are in basis points: 10_000 = 100 %.
pub const FULL_WEIGHT_BP: u32 = 10_000;

/// Every rollout Sluice routes, keyed by rollout name (`namespace/name`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrafficState {
    pub rollouts: BTreeMap<String, RolloutState>,
}

/// One service under progressive delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutState {
    /// `namespace/name`.
    pub name: String,
    /// Hosts (lower-case, without port) whose requests this rollout routes.
    pub hosts: Vec<String>,
    /// Live versions by pod-template hash.
    pub versions: BTreeMap<String, Version>,
    pub stable_hash: String,
    /// `None` when no canary is in progress.
    pub canary_hash: Option<String>,
    /// Canary share in basis points, `0..=FULL_WEIGHT_BP`.
    pub canary_weight_bp: u32,
    /// Tried in order; the first whose matches all hold wins.
    pub header_routes: Vec<HeaderRoute>,
    /// Requests copied to the canary (Argo's `setMirrorRoute`), tried in order; see [`mirror`].
    pub mirror_routes: Vec<MirrorRoute>,
    /// Versions other than stable and canary with a share of live traffic (Argo's experiment
    /// templates with a `weight`, `status.canary.weights.additional`), in order. Stable gets
    /// `FULL_WEIGHT_BP - canary_weight_bp - Σ weight_bp`.
    pub additional_weights: Vec<WeightDestination>,
    pub stickiness: Stickiness,
    /// Blue/green: hosts routed to one version outside the filter's decision; see [`preview`].
    pub preview: Option<Preview>,
}

/// A share of live traffic sent to one more version (Argo's `WeightDestination`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightDestination {
    /// Who asked for it, e.g. the experiment template's name (`baseline`).
    pub name: String,
    /// A live version's pod-template hash.
    pub pod_template_hash: String,
    /// Share in basis points.
    pub weight_bp: u32,
}

/// The ready endpoints of one pod-template hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Version {
    pub endpoints: Vec<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderRoute {
    pub name: String,
    /// AND-ed; at least one.
    pub matches: Vec<HeaderMatch>,
    pub target: RouteTarget,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteTarget {
    /// Whatever the canary hash is at the time.
    Canary,
    /// One named live hash.
    Hash(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Lower-case header name.
    pub name: String,
    pub kind: MatchKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchKind {
    Exact(String),
    Prefix(String),
    Regex(String),
    Present,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Stickiness {
    #[default]
    None,
    /// The value of this request header is the sticky key.
    Header(String),
    /// A cookie holds the key; the filter sets it when absent, with `Secure` when `secure` and
    /// the given `SameSite` (RFC 6265bis; see `sluice_proto::rules::check_cookie_secure`).
    Cookie {
        name: String,
        max_age_seconds: u32,
        secure: bool,
        same_site: SameSite,
    },
}

#[cfg(test)]
mod additional_tests;
#[cfg(test)]
mod tests;
