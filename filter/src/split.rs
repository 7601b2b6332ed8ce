//! Weights in the routes (`FilterPolicy.bucket_header`): what the filter writes for a request
//! when Envoy's router, not the filter, applies the canary weight.
//!
//! Why: every distinct plugin configuration Envoy is given stays in its memory for good
//! (proxy-wasm-cpp-host keys its plugin caches by the whole configuration, and each replaced
//! root context's tick timer keeps firing), so a policy that carries the weights grows Envoy by
//! about the policy's size on every weight change. With the weights in the route configuration
//! the policy only changes when versions, header routes or stickiness do.
//!
//! ```text
//!  header route matches ─► routing header = <hash>, bucket header removed
//!                          → the per-version route (it requires the bucket header absent)
//!  otherwise            ─► bucket header = <bucket in 0..10000>: the sticky key's, else random
//!                          → the weighted_clusters route (header_name = bucket header, canary
//!                            first): canary iff bucket < canary weight, as the filter would
//! ```
//!
//! A sticky client is in the canary iff its bucket is below the weight, exactly as when the
//! filter applies the weight itself, so raising the weight still never moves it back to stable.

use crate::decision::{Draw, Reason, RequestView, draw};
use crate::policy::{MAX_WEIGHT_BP, Rollout};

/// What the filter does with a request whose rollout has its weights in the routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A header route chose this version (index in the rollout's `versions`): write its hash
    /// into the routing header and remove the bucket header.
    Version(usize),
    /// Write `bucket` into the bucket header; the router picks the version by weight.
    Bucket {
        /// In `[0, 10000)`.
        bucket: u32,
        /// [`Reason::Sticky`] or [`Reason::Weight`].
        reason: Reason,
        /// A `Set-Cookie` value for the response (a new sticky key), as in
        /// [`crate::Decision::set_cookie`].
        set_cookie: Option<String>,
    },
}

/// The outcome for one request (see the module docs).
pub fn outcome(rollout: &Rollout, request: &dyn RequestView, rng: &mut fastrand::Rng) -> Outcome {
    match draw(rollout, request, rng) {
        Draw::Route(version) => Outcome::Version(version),
        Draw::Sticky { bucket, set_cookie } => Outcome::Bucket {
            bucket,
            reason: Reason::Sticky,
            set_cookie,
        },
        Draw::Random => Outcome::Bucket {
            bucket: rng.u32(0..MAX_WEIGHT_BP),
            reason: Reason::Weight,
            set_cookie: None,
        },
    }
}
