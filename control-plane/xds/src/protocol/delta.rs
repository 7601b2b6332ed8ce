//! Incremental (delta) ADS: responses carry only the resources whose version changed for this
//! client, plus the names of removed ones.

use std::collections::{BTreeMap, BTreeSet};
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
    /// What the client holds: its `initial_resource_versions`, then our responses.
    held: Held,
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
    /// Names of the resources in the response awaiting its ACK or NACK.
    in_flight: Vec<String>,
    /// Resources of NACKed responses not sent again since: Envoy keeps the valid part of a
    /// rejected delta response, so any of them may be missing (see
    /// [`PushSink::awaiting_endpoint_subscription`]).
    rejected: BTreeSet<String>,
    acked_version: Option<String>,
}

/// Most resource bytes one delta response carries by default; what is left follows on its ACK
/// (each response is applied as it comes, so the client converges the same, one round trip per
/// part). Why a bound: tonic keeps every stream's encode buffer at the size of its largest
/// message for the stream's life, so unbounded first responses left about 0.5 MB per stream
/// once synced (over 500 MiB with 1,000 delta streams of 1,000 rollouts). State-of-the-world
/// responses carry whole sets and cannot be split.
pub const RESPONSE_BUDGET_BYTES: usize = 64 * 1024;

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
    /// See [`RESPONSE_BUDGET_BYTES`].
    budget: usize,
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
            budget: RESPONSE_BUDGET_BYTES,
        }
    }

    /// Responses carry at most `bytes` of resources (at least one resource each).
    pub fn with_response_budget(mut self, bytes: usize) -> Self {
        self.budget = bytes;
        self
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
            state.held = Held::initial(request.initial_resource_versions.into_iter().collect());
            state.subscription.wildcard =
                request.resource_names_subscribe.is_empty() && is_wildcard_type(type_url);
        } else if !request.response_nonce.is_empty() {
            if state.outstanding && state.nonce.as_deref() == Some(request.response_nonce.as_str())
            {
                state.outstanding = false;
                let version = state.sent_version.clone().unwrap_or_default();
                let in_flight = std::mem::take(&mut state.in_flight);
                match request.error_detail {
                    Some(status) => {
                        warn!(type_url, version, error = %status.message, "delta NACK");
                        state.rejected.extend(in_flight);
                        self.events.push(Event::Nacked {
                            type_url,
                            version,
                            error_detail: status.message,
                        });
                    }
                    None => {
                        debug!(type_url, version, "delta ACK");
                        for name in &in_flight {
                            state.rejected.remove(name);
                        }
                        state.acked_version = Some(version.clone());
                        self.events.push(Event::Acked { type_url, version });
                    }
                }
            } else {
                debug!(type_url, nonce = %request.response_nonce, "stale delta nonce");
            }
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
        if let Some(snapshot) = &self.snapshot {
            // Envoy names the endpoints of every cluster it holds: usually exactly the
            // snapshot's set, then kept as a handle on it rather than a copy per stream.
            state
                .subscription
                .share_names_with(&snapshot.type_set(type_url));
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

    /// Whether the client's resources of `type_url` are tracked as a shared snapshot set
    /// (`Some(true)`) or a map of its own (`Some(false)`); `None` when not subscribed.
    #[cfg(test)]
    pub(super) fn holds_shared(&self, type_url: &str) -> Option<bool> {
        self.types.get(type_url).map(|t| t.held.shared.is_some())
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
        // The client holds exactly this set and subscribes to all of it (an ACK clears
        // `last_offer`): nothing to send or remove, and no O(M) comparison to learn it.
        if state.responded && state.held.is(&all) && state.subscription.is_all_of(&all) {
            return;
        }
        // A wildcard client holding exactly the set this one replaced: the difference is all
        // there is to send, O(changes).
        let budget = self.budget;
        let diff = all.diff().filter(|d| {
            !keep_removed
                && state.subscription.wildcard
                && state.held.is_set(d.base)
                && fits(&d.changed, budget)
        });
        if let Some(diff) = diff {
            state.held = Held::exactly(&all);
            if diff.changed.is_empty() && diff.removed.is_empty() && state.responded {
                return;
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
        // Shares a by-name subscription that names exactly `all` (O(M), as this path is).
        state.subscription.share_names_with(&all);
        let mut changed: Vec<Arc<Resource>> = all
            .shared()
            .filter(|r| state.subscription.contains_resource(type_url, &r.name))
            .filter(|r| state.held.version_of(&r.name) != Some(r.version.as_str()))
            .cloned()
            .collect();
        // Phase 1 removes nothing: a route may still point at a cluster being removed.
        let removed: Vec<String> = if keep_removed {
            Vec::new()
        } else {
            state
                .held
                .names()
                .filter(|name| {
                    !all.contains(name) || !state.subscription.contains_resource(type_url, name)
                })
                .map(str::to_owned)
                .collect()
        };
        let partial = truncate_to(&mut changed, budget);
        // Nothing kept back and every resource of `all` subscribed: once this response is
        // applied (or if there is none) the client holds exactly `all`, shared, not copied.
        let exactly_all = !keep_removed && !partial && state.subscription.is_all_of(&all);
        if exactly_all {
            state.held = Held::exactly(&all);
        }
        if changed.is_empty() && removed.is_empty() && state.responded {
            return;
        }
        let version = if exactly_all {
            all.version().to_owned()
        } else {
            let held = state.held.own();
            for resource in &changed {
                held.insert(resource.name.clone(), resource.version.clone());
            }
            for name in &removed {
                held.remove(name);
            }
            set_version(held.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        };
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
        // Nor is a cluster of an earlier NACKed response (a part of a split one, say): Envoy may
        // have kept the others and rejected it, and would never ask for its endpoints.
        missing_endpoint_subscriptions(
            cds.held
                .names()
                .filter(|name| !cds.rejected.contains(*name)),
            eds.map(|eds| &eds.subscription),
            ROUTE_TYPES.iter().any(|t| self.types.contains_key(t)),
            target,
        )
    }
}

/// Bytes a resource adds to an encoded delta response, framing included.
fn response_bytes(resource: &Resource) -> usize {
    super::wire::delta_resource_encoded_len(resource)
}

/// The resources fit in one response of `budget` bytes.
fn fits(resources: &[Arc<Resource>], budget: usize) -> bool {
    let mut total = 0usize;
    resources.iter().all(|r| {
        total = total.saturating_add(response_bytes(r));
        total <= budget
    })
}

/// Keeps the first resources that fit in `budget` bytes (at least one); true when some were
/// left out.
fn truncate_to(resources: &mut Vec<Arc<Resource>>, budget: usize) -> bool {
    let mut total = 0usize;
    let keep = resources
        .iter()
        .position(|r| {
            total = total.saturating_add(response_bytes(r));
            total > budget
        })
        .map_or(resources.len(), |first_over| first_over.max(1));
    let partial = keep < resources.len();
    resources.truncate(keep);
    partial
}

/// What a delta client holds of one type.
#[derive(Debug, Default)]
struct Held {
    /// The client holds exactly this snapshot set (then `own` is empty): a handle shared with
    /// the snapshot and every stream in step with it, so such a stream costs nothing per
    /// resource (a map each was O(N·M) in all).
    shared: Option<Resources>,
    /// Otherwise, name → version: the initial versions of a reconnect, phase 1's union, a
    /// subscription naming part of the set.
    own: BTreeMap<String, String>,
}

impl Held {
    fn initial(versions: BTreeMap<String, String>) -> Self {
        Held {
            shared: None,
            own: versions,
        }
    }

    fn exactly(set: &Resources) -> Self {
        Held {
            shared: Some(set.clone()),
            own: BTreeMap::new(),
        }
    }

    /// The client holds the very set `set` (not merely equal contents).
    fn is(&self, set: &Resources) -> bool {
        self.shared.as_ref().is_some_and(|held| held.same(set))
    }

    /// The client holds the set with this [`Resources::id`].
    fn is_set(&self, id: u64) -> bool {
        self.shared.as_ref().is_some_and(|held| held.id() == id)
    }

    fn version_of(&self, name: &str) -> Option<&str> {
        match &self.shared {
            Some(set) => set.get(name).map(|r| r.version.as_str()),
            None => self.own.get(name).map(String::as_str),
        }
    }

    /// In order.
    fn names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match &self.shared {
            Some(set) => Box::new(set.names()),
            None => Box::new(self.own.keys().map(String::as_str)),
        }
    }

    /// The client's own map, copied out of the shared set first if needed: O(M) once.
    fn own(&mut self) -> &mut BTreeMap<String, String> {
        if let Some(set) = self.shared.take() {
            self.own = set
                .values()
                .map(|r| (r.name.clone(), r.version.clone()))
                .collect();
        }
        &mut self.own
    }

    fn remove(&mut self, name: &str) {
        if self.version_of(name).is_some() {
            self.own().remove(name);
        }
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
        for name in &removed {
            state.rejected.remove(name);
        }
        state.in_flight = changed.iter().map(|r| r.name.clone()).collect();
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
