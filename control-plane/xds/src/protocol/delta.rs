//! Incremental (delta) ADS: responses carry only the resources whose version changed for this
//! client, plus the names of removed ones.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tracing::{debug, warn};

use super::wire::DeltaResponse;
use super::{
    Event, Nonces, PushSink, ROUTE_TYPES, Subscription, is_wildcard_type, known_type,
    missing_endpoint_subscriptions, plan,
};
use crate::snapshot::{Resource, Resources, Snapshot, set_version};
use crate::type_url::{CLUSTER, ENDPOINT};

/// One subscribed type on a delta stream.
#[derive(Debug, Default)]
struct TypeState {
    subscription: Subscription,
    /// What the client holds, name → version: its `initial_resource_versions`, then our responses.
    held: BTreeMap<String, String>,
    /// At least one response was sent: the first one goes out even when empty, because Envoy
    /// waits for it before finishing initialisation.
    responded: bool,
    nonce: Option<String>,
    outstanding: bool,
    /// The snapshot set and phase of the last offer, skipped when offered again before the
    /// client's next request of this type (see the SotW connection).
    last_offer: Option<(Resources, bool)>,
    /// Content version of `held` after the last response (what the registry shows).
    sent_version: Option<String>,
    /// `held` is exactly the snapshot set with this id (wildcard subscription, nothing kept
    /// back): the next set's [`crate::snapshot::Diff`] from it is all there is to send.
    in_sync_with: Option<u64>,
    acked_version: Option<String>,
}

/// The state machine of one delta ADS stream.
///
/// The server gives it a snapshot already specialised for the stream's node. Until it has one
/// ([`DeltaConnection::waiting`]) it records the client's subscriptions and ACKs but sends nothing: a
/// control plane with no valid state yet must not tell Envoys that every resource is gone.
#[derive(Debug)]
pub struct DeltaConnection {
    snapshot: Option<Arc<Snapshot>>,
    types: BTreeMap<&'static str, TypeState>,
    nonces: Nonces,
    responses: Vec<DeltaResponse>,
    events: Vec<Event>,
    synced: bool,
}

impl DeltaConnection {
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        DeltaConnection {
            snapshot: Some(snapshot),
            synced: true,
            ..Self::waiting()
        }
    }

    /// A connection with no snapshot yet: it answers nothing until [`Self::on_snapshot`].
    pub fn waiting() -> Self {
        DeltaConnection {
            snapshot: None,
            types: BTreeMap::new(),
            nonces: Nonces::default(),
            responses: Vec::new(),
            events: Vec::new(),
            synced: false,
        }
    }

    /// Handles one request: subscription changes (always applied — they are incremental) and
    /// the ACK or NACK of the nonce it carries (ignored when stale).
    pub fn on_delta_request(&mut self, request: DeltaDiscoveryRequest) -> Vec<DeltaResponse> {
        let Some(type_url) = known_type(&request.type_url) else {
            warn!(type_url = %request.type_url, "delta request for a type Sluice does not serve; ignored");
            self.events.push(Event::UnknownType {
                type_url: request.type_url,
            });
            return Vec::new();
        };
        let first = !self.types.contains_key(type_url);
        if !request.resource_names_subscribe.is_empty()
            || !request.resource_names_unsubscribe.is_empty()
        {
            debug!(
                type_url,
                subscribe = ?request.resource_names_subscribe,
                unsubscribe = ?request.resource_names_unsubscribe,
                "delta subscription change"
            );
        }
        let state = self.types.entry(type_url).or_default();
        state.last_offer = None;

        if first {
            state.held = request.initial_resource_versions.into_iter().collect();
            state.subscription.wildcard =
                request.resource_names_subscribe.is_empty() && is_wildcard_type(type_url);
        } else if !request.response_nonce.is_empty() {
            if state.outstanding && state.nonce.as_deref() == Some(request.response_nonce.as_str())
            {
                state.outstanding = false;
                let version = state.sent_version.clone().unwrap_or_default();
                match request.error_detail {
                    Some(status) => {
                        warn!(type_url, version, error = %status.message, "delta NACK");
                        self.events.push(Event::Nacked {
                            type_url,
                            version,
                            error_detail: status.message,
                        });
                    }
                    None => {
                        debug!(type_url, version, "delta ACK");
                        state.acked_version = Some(version.clone());
                        self.events.push(Event::Acked { type_url, version });
                    }
                }
            } else {
                debug!(type_url, nonce = %request.response_nonce, "stale delta nonce");
            }
        }

        if first
            || !request.resource_names_subscribe.is_empty()
            || !request.resource_names_unsubscribe.is_empty()
        {
            state.in_sync_with = None;
        }
        for name in request.resource_names_subscribe {
            if name == "*" {
                state.subscription.wildcard = true;
            } else {
                state.subscription.add_name(name);
            }
        }
        for name in request.resource_names_unsubscribe {
            if name == "*" {
                state.subscription.wildcard = false;
            } else {
                // The client drops it; if still covered by a wildcard it is sent again.
                state.subscription.remove_name(&name);
                state.held.remove(&name);
            }
        }
        self.flush()
    }

    /// A new snapshot (already specialised for this node): push what changed, make-before-break.
    pub fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<DeltaResponse> {
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

    fn flush(&mut self) -> Vec<DeltaResponse> {
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

impl PushSink for DeltaConnection {
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
        state.last_offer = Some((all.clone(), keep_removed));
        // The client holds exactly this set already (an ACK clears `last_offer`): nothing to
        // send, and no O(M) comparison to learn it.
        if state.responded && state.in_sync_with == Some(all.id()) {
            return;
        }
        // The client holds exactly the set this one replaced: send the difference, O(changes).
        let diff = all.diff().filter(|d| {
            !keep_removed && state.subscription.wildcard && state.in_sync_with == Some(d.base)
        });
        if let Some(diff) = diff {
            state.in_sync_with = Some(all.id());
            if diff.changed.is_empty() && diff.removed.is_empty() && state.responded {
                return;
            }
            for resource in &diff.changed {
                state
                    .held
                    .insert(resource.name.clone(), resource.version.clone());
            }
            for name in &diff.removed {
                state.held.remove(name);
            }
            let version = all.version().to_owned();
            self.respond(
                type_url,
                diff.changed.clone(),
                diff.removed.clone(),
                version,
            );
            return;
        }
        let changed: Vec<Arc<Resource>> = all
            .shared()
            .filter(|r| state.subscription.contains_resource(type_url, &r.name))
            .filter(|r| state.held.get(&r.name) != Some(&r.version))
            .cloned()
            .collect();
        // Phase 1 removes nothing: a route may still point at a cluster being removed.
        let removed: Vec<String> = if keep_removed {
            Vec::new()
        } else {
            state
                .held
                .keys()
                .filter(|name| {
                    !all.contains(name) || !state.subscription.contains_resource(type_url, name)
                })
                .cloned()
                .collect()
        };
        if changed.is_empty() && removed.is_empty() && state.responded {
            return;
        }
        for resource in &changed {
            state
                .held
                .insert(resource.name.clone(), resource.version.clone());
        }
        for name in &removed {
            state.held.remove(name);
        }
        // Wildcard and nothing kept back: the client now holds exactly `all`.
        state.in_sync_with = (!keep_removed && state.subscription.wildcard).then(|| all.id());
        let version = set_version(state.held.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        self.respond(type_url, changed, removed, version);
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
        missing_endpoint_subscriptions(
            cds.held.keys().map(String::as_str),
            eds.map(|eds| &eds.subscription),
            ROUTE_TYPES.iter().any(|t| self.types.contains_key(t)),
            target,
        )
    }
}

impl DeltaConnection {
    /// Queues one response of `type_url` and marks it outstanding.
    fn respond(
        &mut self,
        type_url: &'static str,
        changed: Vec<Arc<Resource>>,
        removed: Vec<String>,
        version: String,
    ) {
        let Some(state) = self.types.get_mut(type_url) else {
            return;
        };
        let nonce = self.nonces.next();
        debug!(
            type_url,
            version,
            nonce,
            changed = changed.len(),
            removed = removed.len(),
            "delta push"
        );
        self.events.push(Event::Sent {
            type_url,
            version: version.clone(),
            resources: changed.len(),
        });
        self.responses.push(DeltaResponse {
            system_version_info: version.clone(),
            resources: changed,
            type_url: type_url.to_string(),
            removed_resources: removed,
            nonce: nonce.clone(),
        });
        state.responded = true;
        state.sent_version = Some(version);
        state.nonce = Some(nonce);
        state.outstanding = true;
    }
}
