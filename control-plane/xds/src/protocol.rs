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
mod delta_proptests;
#[cfg(test)]
mod delta_tests;
mod sotw;
#[cfg(test)]
mod sotw_tests;
#[cfg(test)]
mod test_support;
mod wire;

use std::collections::BTreeSet;

use crate::snapshot::{Resources, Snapshot};
use crate::type_url::{
    CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, PUSH_ORDER, ROUTE, VIRTUAL_HOST,
};

pub use delta::DeltaConnection;
pub use sotw::Connection;
pub use wire::{DeltaResponse, Encode, SotwResponse};

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
#[derive(Clone, Debug, Default)]
pub struct Subscription {
    /// All resources of the type (`*`, or the legacy empty list on LDS/CDS).
    pub wildcard: bool,
    /// Explicitly named resources.
    names: Names,
}

/// The explicitly subscribed names. A SotW client usually names exactly the resources of the
/// current snapshot (Envoy asks for the endpoints of every cluster it holds); such a list is
/// kept as a handle on that snapshot's set, shared by every connection, instead of a copy each.
#[derive(Clone, Debug)]
enum Names {
    Own(BTreeSet<String>),
    KeysOf(Resources),
}

impl Default for Names {
    fn default() -> Self {
        Names::Own(BTreeSet::new())
    }
}

impl Subscription {
    pub fn contains(&self, name: &str) -> bool {
        self.wildcard || self.names(name)
    }

    /// [`Subscription::contains`] for a resource of `type_url`: a virtual host (VHDS) is also
    /// subscribed through its namespace, the part of its name before the last `/` (Envoy
    /// subscribes to a route configuration's name and expects all of its virtual hosts).
    pub fn contains_resource(&self, type_url: &str, name: &str) -> bool {
        self.contains(name)
            || (type_url == VIRTUAL_HOST
                && name
                    .rsplit_once('/')
                    .is_some_and(|(namespace, _)| self.names(namespace)))
    }

    /// `name` is subscribed explicitly.
    fn names(&self, name: &str) -> bool {
        match &self.names {
            Names::Own(names) => names.contains(name),
            Names::KeysOf(set) => set.contains(name),
        }
    }

    fn has_names(&self) -> bool {
        match &self.names {
            Names::Own(names) => !names.is_empty(),
            Names::KeysOf(set) => !set.is_empty(),
        }
    }

    /// Every resource of `set` is subscribed.
    fn covers(&self, set: &Resources) -> bool {
        self.wildcard
            || matches!(&self.names, Names::KeysOf(keys) if keys.same(set))
            || set.names().all(|name| self.names(name))
    }

    /// Every resource of `set` is subscribed, and nothing else by name: a client holding all
    /// it subscribed to holds exactly `set`. O(1).
    fn is_all_of(&self, set: &Resources) -> bool {
        match &self.names {
            _ if self.wildcard => true,
            Names::KeysOf(keys) => keys.same(set),
            Names::Own(_) => false,
        }
    }

    /// Keeps the explicit names as a handle on `set` when they are exactly its names (see
    /// [`Names`]). O(M) when the counts match, O(1) otherwise.
    fn share_names_with(&mut self, set: &Resources) {
        let equal = match &self.names {
            Names::KeysOf(keys) if keys.same(set) => return,
            Names::KeysOf(keys) => keys.len() == set.len() && keys.names().eq(set.names()),
            Names::Own(names) => {
                !names.is_empty()
                    && names.len() == set.len()
                    && names.iter().map(String::as_str).eq(set.names())
            }
        };
        if equal {
            self.names = Names::KeysOf(set.clone());
        }
    }

    fn add_name(&mut self, name: String) {
        let mut names = self.take_names();
        names.insert(name);
        self.names = Names::Own(names);
    }

    fn remove_name(&mut self, name: &str) {
        let mut names = self.take_names();
        names.remove(name);
        self.names = Names::Own(names);
    }

    fn take_names(&mut self) -> BTreeSet<String> {
        match std::mem::take(&mut self.names) {
            Names::Own(names) => names,
            Names::KeysOf(set) => set.names().map(str::to_string).collect(),
        }
    }

    /// The subscription naming exactly `names` (besides `*`), shared with `like` when it holds
    /// exactly those names.
    fn with_names(wildcard: bool, names: &[String], like: &Resources) -> Self {
        let mut named: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| *n != "*")
            .collect();
        named.sort_unstable();
        named.dedup();
        let names = if !like.is_empty() && named.iter().copied().eq(like.names()) {
            Names::KeysOf(like.clone())
        } else {
            Names::Own(named.into_iter().map(str::to_string).collect())
        };
        Subscription { wildcard, names }
    }
}

/// Types for which an empty first subscription means "everything" (legacy wildcard). Envoy's
/// VHDS subscription (Envoy 1.40, over delta ADS) opens with no names at all, and expects the
/// virtual hosts of its route configuration.
fn is_wildcard_type(type_url: &str) -> bool {
    type_url == LISTENER || type_url == CLUSTER || type_url == VIRTUAL_HOST
}

/// The served type URL matching a request's, or `None` for a type Sluice does not serve.
fn known_type(type_url: &str) -> Option<&'static str> {
    PUSH_ORDER.iter().copied().find(|known| *known == type_url)
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
    const ROUTES: [&str; 4] = ROUTE_TYPES;

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

/// Whether phase 2 waits for endpoint subscriptions: the client holds a cluster whose endpoints
/// (an EDS resource of the same name — Sluice names each cluster's load assignment after it) it
/// has not subscribed to. A client that has not subscribed to EDS at all yet is waiting too (a
/// fresh Envoy ACKs CDS before its first EDS request) — but only while it subscribes to some
/// route type: otherwise nothing is held back, and a CDS-only client must still see removals.
/// A NACKed CDS is not waited for (the client may have rejected the very cluster).
fn missing_endpoint_subscriptions<'a>(
    held_clusters: impl IntoIterator<Item = &'a str>,
    eds: Option<&Subscription>,
    routes_subscribed: bool,
    target: &Snapshot,
) -> bool {
    if !routes_subscribed {
        return false;
    }
    let endpoints = target.type_set(ENDPOINT);
    match eds {
        Some(eds) if eds.covers(&endpoints) => false,
        Some(eds) => held_clusters
            .into_iter()
            .any(|name| endpoints.contains(name) && !eds.contains(name)),
        None => held_clusters
            .into_iter()
            .any(|name| endpoints.contains(name)),
    }
}

/// Route types (phase 2), for [`missing_endpoint_subscriptions`].
const ROUTE_TYPES: [&str; 4] = [LISTENER, ROUTE, VIRTUAL_HOST, EXTENSION_CONFIG];

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::snapshot::Resource;

    fn set(names: &[&str]) -> Resources {
        names
            .iter()
            .map(|name| {
                Arc::new(Resource::new(
                    *name,
                    prost_types::Any {
                        type_url: ENDPOINT.into(),
                        value: name.as_bytes().to_vec(),
                    },
                ))
            })
            .collect()
    }

    #[test]
    fn names_equal_to_the_snapshot_set_are_shared_and_behave_the_same() {
        let like = set(&["a", "b"]);
        let requested = ["b".to_string(), "a".to_string(), "b".to_string()];
        let shared = Subscription::with_names(false, &requested, &like);
        assert!(matches!(&shared.names, Names::KeysOf(keys) if keys.same(&like)));
        assert!(shared.contains("a") && shared.contains("b") && !shared.contains("c"));
        assert!(shared.covers(&like));
        assert!(!shared.covers(&set(&["a", "c"])));

        let fewer = Subscription::with_names(false, &["a".to_string()], &like);
        assert!(matches!(&fewer.names, Names::Own(_)));
        assert!(!fewer.covers(&like) && fewer.covers(&set(&["a"])));

        // Changing a shared list makes it the client's own.
        let mut changed = shared.clone();
        changed.add_name("c".into());
        changed.remove_name("a");
        assert!(!changed.contains("a") && changed.contains("b") && changed.contains("c"));
        assert!(shared.contains("a"), "the shared set is untouched");
    }
}
