//! State-of-the-world ADS: every response carries the whole subscribed set of its type.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tracing::{debug, warn};

use super::wire::SotwResponse;
use super::{
    Event, Nonces, PushSink, ROUTE_TYPES, Subscription, is_wildcard_type, known_type,
    missing_endpoint_subscriptions, plan,
};
use crate::snapshot::{Resource, Resources, Snapshot};
use crate::type_url::{CLUSTER, ENDPOINT};

/// One subscribed type on a SotW stream.
#[derive(Debug, Default)]
struct TypeState {
    subscription: Subscription,
    /// Resources of the last response: what the client holds once it applies it. `None` after a
    /// reconnect, until we know which set the reported version stands for. Usually the very set
    /// of the snapshot, shared with it and with the other connections.
    sent: Option<Resources>,
    /// The snapshot set and phase of the last offer: offering them again changes nothing (until
    /// the client's next request of this type), so it is skipped. This keeps a change of one
    /// type from costing work proportional to the others' size on every connection.
    last_offer: Option<(Resources, bool)>,
    /// Version of the last response, or the version the client reported holding on reconnect.
    sent_version: Option<String>,
    /// Nonce of the last response; answers carrying another nonce are stale.
    nonce: Option<String>,
    /// The last response has not been ACKed or NACKed yet.
    outstanding: bool,
    acked_version: Option<String>,
}

/// The state machine of one state-of-the-world ADS stream.
///
/// The server gives it a snapshot already specialised for the stream's node. Until it has one
/// ([`Connection::waiting`]) it records the client's subscriptions and ACKs but sends nothing: a
/// control plane with no valid state yet must not tell Envoys that every resource is gone.
#[derive(Debug)]
pub struct Connection {
    snapshot: Option<Arc<Snapshot>>,
    types: BTreeMap<&'static str, TypeState>,
    nonces: Nonces,
    responses: Vec<SotwResponse>,
    events: Vec<Event>,
    synced: bool,
}

impl Connection {
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        Connection {
            snapshot: Some(snapshot),
            synced: true,
            ..Self::waiting()
        }
    }

    /// A connection with no snapshot yet: it answers nothing until [`Self::on_snapshot`].
    pub fn waiting() -> Self {
        Connection {
            snapshot: None,
            types: BTreeMap::new(),
            nonces: Nonces::default(),
            responses: Vec::new(),
            events: Vec::new(),
            synced: false,
        }
    }

    /// Handles one request from the client: a new subscription, an ACK, a NACK or a change of
    /// resource names. Returns the responses to send, in order.
    pub fn on_request(&mut self, request: DiscoveryRequest) -> Vec<SotwResponse> {
        let Some(type_url) = known_type(&request.type_url) else {
            warn!(type_url = %request.type_url, "request for a type Sluice does not serve; ignored");
            self.events.push(Event::UnknownType {
                type_url: request.type_url,
            });
            return Vec::new();
        };
        let nonce = request.response_nonce;
        let like = self
            .snapshot
            .as_ref()
            .map(|s| s.type_set(type_url))
            .unwrap_or_default();
        match self.types.get_mut(type_url) {
            Some(state) if !nonce.is_empty() => {
                if state.nonce.as_deref() != Some(nonce.as_str()) {
                    // An answer to a response that a newer one has superseded.
                    debug!(type_url, nonce, "stale nonce; ignored");
                    return Vec::new();
                }
                if state.outstanding {
                    state.outstanding = false;
                    let version = state.sent_version.clone().unwrap_or_default();
                    match request.error_detail {
                        Some(status) => {
                            warn!(type_url, version, error = %status.message, "NACK");
                            self.events.push(Event::Nacked {
                                type_url,
                                version,
                                error_detail: status.message,
                            });
                        }
                        None => {
                            debug!(type_url, version, "ACK");
                            state.acked_version = Some(version.clone());
                            self.events.push(Event::Acked { type_url, version });
                        }
                    }
                }
                state.subscription = sotw_subscription(
                    type_url,
                    &request.resource_names,
                    Some(&state.subscription),
                    &like,
                );
                state.last_offer = None;
            }
            _ => {
                // A new subscription (a nonce from an earlier stream means nothing on this one).
                let state = self.types.entry(type_url).or_default();
                state.subscription =
                    sotw_subscription(type_url, &request.resource_names, None, &like);
                state.last_offer = None;
                state.nonce = None;
                state.outstanding = false;
                if request.version_info.is_empty() {
                    state.sent_version = None;
                } else {
                    // The client holds this version from an earlier stream.
                    state.sent = None;
                    state.sent_version = Some(request.version_info.clone());
                    state.acked_version = Some(request.version_info.clone());
                    self.events.push(Event::Acked {
                        type_url,
                        version: request.version_info,
                    });
                }
            }
        }
        self.flush()
    }

    /// A new snapshot (already specialised for this node): push what changed, make-before-break.
    pub fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<SotwResponse> {
        self.snapshot = Some(snapshot);
        self.flush()
    }

    /// Events since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Every response is answered and nothing of the current snapshot is held back.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    fn flush(&mut self) -> Vec<SotwResponse> {
        let Some(snapshot) = self.snapshot.clone() else {
            // Nothing valid to serve yet: the client keeps what it has.
            return Vec::new();
        };
        let complete = plan(self, &snapshot);
        let synced = complete && !self.types.values().any(|t| t.outstanding);
        if synced && !self.synced {
            self.events.push(Event::Synced);
        }
        self.synced = synced;
        std::mem::take(&mut self.responses)
    }
}

impl PushSink for Connection {
    fn offer(&mut self, type_url: &'static str, target: &Snapshot, keep_removed: bool) {
        let Some(state) = self.types.get_mut(type_url) else {
            return; // not subscribed (yet)
        };
        let all = target.type_set(type_url);
        if let Some((last, keep)) = &state.last_offer
            && last.same(&all)
            && *keep == keep_removed
        {
            return;
        }
        let kept = if keep_removed {
            state.sent.as_ref()
        } else {
            None
        };
        let desired = desired_set(&all, &state.subscription, kept);
        state.last_offer = Some((all, keep_removed));
        let version = desired.version();
        if state.sent_version.as_deref() == Some(version) {
            // The client already holds this set (content-hash versions); after a reconnect this
            // is where we learn which resources that is.
            if state.sent.is_none() {
                state.sent = Some(desired);
            }
            return;
        }
        let version = version.to_string();
        let nonce = self.nonces.next();
        debug!(type_url, version, nonce, resources = desired.len(), "push");
        self.responses.push(SotwResponse {
            version_info: version.clone(),
            resources: desired.shared().cloned().collect(),
            type_url: type_url.to_string(),
            nonce: nonce.clone(),
        });
        self.events.push(Event::Sent {
            type_url,
            version: version.clone(),
            resources: desired.len(),
        });
        state.sent = Some(desired);
        state.sent_version = Some(version);
        state.nonce = Some(nonce);
        state.outstanding = true;
    }

    fn outstanding(&self, type_url: &str) -> bool {
        self.types.get(type_url).is_some_and(|t| t.outstanding)
    }

    fn awaiting_endpoint_subscription(&self, target: &Snapshot) -> bool {
        let Some(cds) = self.types.get(CLUSTER) else {
            return false;
        };
        let eds = self.types.get(ENDPOINT);
        if cds.acked_version != cds.sent_version {
            return false; // NACKed: the client may not hold the clusters at all
        }
        let Some(held) = &cds.sent else {
            return false;
        };
        let routes_subscribed = ROUTE_TYPES.iter().any(|t| self.types.contains_key(t));
        missing_endpoint_subscriptions(
            held.names(),
            eds.map(|eds| &eds.subscription),
            routes_subscribed,
            target,
        )
    }
}

/// The subscription a SotW request asks for: its `resource_names` is the complete list.
/// `*` asks for everything; so does an empty list on LDS/CDS while the stream has only ever
/// used that legacy wildcard form. `like` is the snapshot's set of the type, to share names with.
fn sotw_subscription(
    type_url: &str,
    names: &[String],
    previous: Option<&Subscription>,
    like: &Resources,
) -> Subscription {
    let legacy_wildcard = names.is_empty()
        && is_wildcard_type(type_url)
        && previous.is_none_or(|p| p.wildcard && !p.has_names());
    let wildcard = legacy_wildcard || names.iter().any(|n| n == "*");
    Subscription::with_names(wildcard, names, like)
}

/// What the client should hold of one type: the subscribed part of the snapshot's set, plus (in
/// phase 1) the subscribed resources it holds that the snapshot dropped. The snapshot's own set
/// (shared, version cached) whenever that is all of it.
fn desired_set(
    all: &Resources,
    subscription: &Subscription,
    kept: Option<&Resources>,
) -> Resources {
    // Usually the client holds the snapshot's very set: nothing of it can be missing from `all`,
    // and skipping the walk keeps a flush from costing O(resources) name lookups.
    let extra: Vec<&Arc<Resource>> = kept
        .filter(|kept| !kept.same(all))
        .into_iter()
        .flat_map(Resources::shared)
        .filter(|r| !all.contains(&r.name) && subscription.contains(&r.name))
        .collect();
    if extra.is_empty() && subscription.covers(all) {
        return all.clone();
    }
    all.shared()
        .filter(|r| subscription.contains(&r.name))
        .chain(extra)
        .cloned()
        .collect()
}
