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
//! [`route`] is the whole rule as both glues (Wasm and native) apply it: which header to write
//! with which value, what to remove, which counter.
//!
//! A sticky client is in the canary iff its bucket is below the weight, exactly as when the
//! filter applies the weight itself, so raising the weight still never moves it back to stable.

use crate::decision::{Decision, Draw, Reason, RequestView, decide, draw};
use crate::metrics::split_slot;
use crate::policy::{CompiledPolicy, MAX_WEIGHT_BP, Rollout};

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

/// The value the filter writes into a request header: a version's hash, or a bucket in decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'p> {
    /// A pod-template hash (the routing header).
    Hash(&'p str),
    /// A bucket in `[0, 10000)` (the bucket header).
    Bucket(u32),
}

impl Value<'_> {
    /// Calls `f` with the value's bytes; a bucket is formatted on the stack (no allocation).
    pub fn with_bytes<T>(&self, f: impl FnOnce(&[u8]) -> T) -> T {
        match self {
            Value::Hash(hash) => f(hash.as_bytes()),
            Value::Bucket(bucket) => {
                use std::io::Write;
                // u32::MAX has 10 digits, so the write cannot run out of room.
                let mut digits = [0u8; 10];
                let mut rest = digits.as_mut_slice();
                let _ = write!(rest, "{bucket}");
                let len = 10 - rest.len();
                f(digits.get(..len).unwrap_or_default())
            }
        }
    }
}

/// Everything a glue (Wasm or native) does to route one request of a known rollout, so both
/// builds apply one rule: write `header` = `value`, remove `remove` if set, clear the route cache,
/// count `slot` (see [`crate::metrics::Tally`]) and hand out `set_cookie` on the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing<'p> {
    /// The request header to write (`setCopy`: replaces any client-sent value).
    pub header: &'p str,
    /// Its value.
    pub value: Value<'p>,
    /// A request header to remove: a client-sent bucket header when a header route pins the
    /// version (the per-version routes require it absent).
    pub remove: Option<&'p str>,
    /// The counter slot of this request among the rollout's counters.
    pub slot: usize,
    /// A `Set-Cookie` value for the response (a new sticky key).
    pub set_cookie: Option<String>,
}

/// How to route a request of `rollout` under `policy`: with `policy.bucket_header` the router
/// applies the weight to the bucket the filter writes ([`outcome`]); without, the filter decides
/// the version itself ([`decide`]) and writes its hash into the routing header.
pub fn route<'p>(
    policy: &'p CompiledPolicy,
    rollout: &'p Rollout,
    request: &dyn RequestView,
    rng: &mut fastrand::Rng,
) -> Routing<'p> {
    let routing_header = policy.routing_header.as_str();
    let pinned = |version: usize, reason: Reason, set_cookie: Option<String>, remove| Routing {
        header: routing_header,
        value: Value::Hash(rollout.hash(version)),
        remove,
        slot: Decision {
            version,
            reason,
            set_cookie: None,
        }
        .metric_slot(),
        set_cookie,
    };
    let Some(bucket_header) = policy.bucket_header.as_deref() else {
        let decision = decide(rollout, request, rng);
        return pinned(decision.version, decision.reason, decision.set_cookie, None);
    };
    match outcome(rollout, request, rng) {
        Outcome::Version(version) => pinned(version, Reason::Header, None, Some(bucket_header)),
        Outcome::Bucket {
            bucket,
            reason,
            set_cookie,
        } => Routing {
            header: bucket_header,
            value: Value::Bucket(bucket),
            remove: None,
            slot: split_slot(rollout, reason),
            set_cookie,
        },
    }
}
