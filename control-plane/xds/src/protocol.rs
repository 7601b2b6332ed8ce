//! The ADS protocol as a sans-I/O state machine, one per gRPC stream.
//!
//! [`Connection`] speaks state-of-the-world (SotW) xDS, [`DeltaConnection`] incremental (delta)
//! xDS. Both are synchronous: the server feeds them requests and snapshots, they return the
//! responses to send and a list of [`Event`]s (sent, ACK, NACK, unknown type, synced) for the
//! registry. They never block, never read a clock and never touch the network, so unit tests drive
//! them message by message.
//!
//! # Push order: make-before-break
//!
//! Both variants share one planner (`plan`), which walks a snapshot change in three phases so
//! that no route ever names a cluster the proxy does not have:
//!
//! 1. **warm**: CDS then EDS, as the *union* of what the client holds and the new snapshot (new
//!    clusters are added, removed ones are kept for now);
//! 2. **routes**: once CDS and EDS have no unanswered response (and the client has subscribed to
//!    the endpoints of every cluster it was sent), LDS, RDS and ECDS of the new snapshot;
//! 3. **prune**: once those are answered too, CDS and EDS exactly as in the new snapshot.
//!
//! A change that neither adds nor removes clusters goes through the same gates, which are then
//! open at once: a weight change (RDS/ECDS only) is pushed immediately.
//!
//! # Versions
//!
//! A response's version is the content hash of the (name, version) pairs it carries (the same
//! formula as [`Snapshot::type_version`], so a response holding a whole type carries exactly that
//! type version). Because versions are content hashes, a reconnecting client that reports the
//! version we would send already holds those exact resources: SotW then sends nothing (as
//! go-control-plane does), which makes a control-plane restart cost no pushes.

mod delta;
#[cfg(test)]
mod delta_tests;
mod sotw;
#[cfg(test)]
mod sotw_tests;
#[cfg(test)]
mod test_support;

use std::collections::BTreeSet;

use envoy_types::pb::google::protobuf::Any as PbAny;

use crate::snapshot::{Resource, Snapshot, content_version};
use crate::type_url::{CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, PUSH_ORDER, ROUTE};

pub use delta::DeltaConnection;
pub use sotw::Connection;

/// Something the registry (status API, metrics) should know about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A response of this type was sent; `version` is the content version of the client's set.
    Sent {
        type_url: &'static str,
        version: String,
        resources: usize,
    },
    Acked {
        type_url: &'static str,
        version: String,
    },
    Nacked {
        type_url: &'static str,
        version: String,
        error_detail: String,
    },
    /// A request for a type Sluice does not serve; it gets no response.
    UnknownType { type_url: String },
    /// Every response is answered and the client holds the whole current snapshot.
    Synced,
}

/// Which resources of one type a client asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    /// All resources of the type (`*`, or the legacy empty list on LDS/CDS).
    pub wildcard: bool,
    /// Explicitly named resources.
    pub names: BTreeSet<String>,
}

impl Subscription {
    pub fn contains(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// Types for which an empty first subscription means "everything" (legacy wildcard).
fn is_wildcard_type(type_url: &str) -> bool {
    type_url == LISTENER || type_url == CLUSTER
}

/// The served type URL matching a request's, or `None` for a type Sluice does not serve.
fn known_type(type_url: &str) -> Option<&'static str> {
    PUSH_ORDER.iter().copied().find(|known| *known == type_url)
}

/// Content version of a set of resources given as (name, version) pairs in name order.
fn set_version<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    content_version(
        pairs
            .into_iter()
            .flat_map(|(name, version)| [name.as_bytes(), version.as_bytes()]),
    )
}

/// The envoy-types `Any` for a snapshot resource (the snapshot stores `prost_types::Any`).
fn to_pb_any(resource: &Resource) -> PbAny {
    PbAny {
        type_url: resource.body.type_url.clone(),
        value: resource.body.value.clone(),
    }
}

/// Per-connection nonce source: unique within the stream, which is all the protocol asks.
#[derive(Debug, Default)]
struct Nonces(u64);

impl Nonces {
    fn next(&mut self) -> String {
        self.0 += 1;
        self.0.to_string()
    }
}

/// What [`plan`] needs from a connection's per-type state.
trait PushSink {
    /// Bring `type_url` towards `target`. With `keep_removed`, resources the client holds that are
    /// no longer in `target` are kept (phase 1); without, they are removed.
    fn offer(&mut self, type_url: &'static str, target: &Snapshot, keep_removed: bool);
    /// A response of this type is waiting for its ACK or NACK.
    fn outstanding(&self, type_url: &str) -> bool;
    /// The client was sent (and ACKed) a cluster whose endpoints it has not subscribed to yet:
    /// Envoy ACKs CDS *before* it asks for the new cluster's EDS, so without this gate routes
    /// could point at a cluster that is still warming.
    fn awaiting_endpoint_subscription(&self, target: &Snapshot) -> bool;
}

/// Runs the three make-before-break phases as far as the client's answers allow. Returns true
/// when all phases ran (nothing is held back), so the connection is synced once nothing is
/// outstanding.
fn plan(sink: &mut impl PushSink, target: &Snapshot) -> bool {
    const WARM: [&str; 2] = [CLUSTER, ENDPOINT];
    const ROUTES: [&str; 3] = [LISTENER, ROUTE, EXTENSION_CONFIG];

    for type_url in WARM {
        sink.offer(type_url, target, true);
    }
    if WARM.iter().any(|t| sink.outstanding(t)) || sink.awaiting_endpoint_subscription(target) {
        return false;
    }
    for type_url in ROUTES {
        sink.offer(type_url, target, false);
    }
    if ROUTES.iter().any(|t| sink.outstanding(t)) {
        return false;
    }
    for type_url in WARM {
        sink.offer(type_url, target, false);
    }
    true
}

/// Names that phase 2 waits for: clusters the client holds whose endpoints (an EDS resource of
/// the same name — Sluice names each cluster's load assignment after it) it has not subscribed
/// to. Only a wildcard-free EDS subscription can lag behind, and a NACKed CDS is not waited for
/// (the client may have rejected the very cluster).
fn missing_endpoint_subscriptions<'a>(
    held_clusters: impl IntoIterator<Item = &'a str>,
    eds: &Subscription,
    target: &Snapshot,
) -> bool {
    if eds.wildcard {
        return false;
    }
    held_clusters
        .into_iter()
        .any(|name| target.get(ENDPOINT, name).is_some() && !eds.names.contains(name))
}
