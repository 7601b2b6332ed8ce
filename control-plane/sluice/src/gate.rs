//! The data-plane gate's bookkeeping: which traffic generation of each rollout an Envoy holds.
//!
//! The release engine publishes traffic as generations (`status.dataPlane.generation`); the
//! driver puts it in the store, which becomes a snapshot whose resources are content-versioned per
//! type. The connection registry knows, per connected Envoy and type, the version it ACKed (and
//! the last one it NACKed). The [`Ledger`] joins the two: for each gated type it remembers which
//! generation of each rollout every recorded type version carries, so
//! `proxy ACKed version V of every gated type ⇒ it holds generation min(carried(V))`.
//!
//! Scopes: an Envoy with a scope (node metadata `sluice.scope`) receives the snapshot of its
//! scope's rollouts only, whose versions differ from the published one's. The ledger keeps the
//! versions of each scope apart (the unscoped one is the published snapshot), and a rollout's
//! gate counts the unscoped Envoys and the scoped ones whose scope contains the rollout — an
//! Envoy that never receives a rollout cannot hold its steps.
//!
//! ```text
//!  published Snapshot + Generations ──Gate::record──► Ledger[None]
//!        └─ per scope seen among the proxies: scoped Snapshot (NodeSnapshots) ─► Ledger[Some(scope)]
//!  registry ProxyStatus {scope, ACKed versions} ──Gate::proxies(rollout)──► Vec<ProxyAck>
//! ```
//!
//! Gated types: clusters, endpoints and routes (weights live in the routes; a new version's
//! cluster and endpoints must exist before a route sends to it). The listener and the filter
//! config (ECDS) are specialised per node (listener address, Wasm or native build) and so cannot
//! be keyed by a scope's versions. Content hashes make identical content one version: if a
//! rollout returns to an earlier traffic, an Envoy that still holds that content holds the newer
//! generation too — the largest is kept.
//!
//! Pure: no I/O; the standalone driver and the Kubernetes source feed it the same way.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use sluice_model::TrafficState;
use sluice_release::ProxyAck;
use sluice_xds::{
    registry::ProxyStatus,
    scope::{NodeSnapshots, Scope},
    snapshot::Snapshot,
    type_url,
};

/// The types whose acknowledgement completes a traffic change.
pub const GATED_TYPES: [&str; 3] = [type_url::CLUSTER, type_url::ENDPOINT, type_url::ROUTE];

/// Versions remembered per type and scope (oldest forgotten first): an Envoy that still holds
/// one of the forgotten ones has not ACKed anything this recent, and counts as not acknowledged.
const KEPT_VERSIONS: usize = 512;

/// Distinct scopes followed; past this the gate starts afresh (a fleet has a handful of kinds
/// of node; the proxies' next ACKs of the current snapshot are recognised again).
const MAX_SCOPES: usize = 1_024;

/// Rollout name → traffic generation.
pub type Generations = BTreeMap<String, i64>;

/// Per scope (`None`: unscoped Envoys, the published snapshot), per gated type: type version →
/// the generations it carries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ledger {
    scopes: BTreeMap<Option<Scope>, ScopeLedger>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct ScopeLedger {
    carried: BTreeMap<&'static str, TypeLedger>,
    /// The rollouts of the scope's newest recorded snapshot: the ones its Envoys are counted for.
    rollouts: BTreeSet<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct TypeLedger {
    by_version: BTreeMap<String, Generations>,
    order: VecDeque<String>,
}

impl Ledger {
    /// Records that `snapshot` (the one Envoys with `scope` are served) carries `generations`,
    /// which must be the generations of the rollouts it contains. Call it after each
    /// publication, with the generations that were in the store when it was translated.
    pub fn record(
        &mut self,
        scope: Option<&Scope>,
        snapshot: &Snapshot,
        generations: &Generations,
    ) {
        for type_url in GATED_TYPES {
            self.record_version(
                scope,
                type_url,
                &snapshot.type_version(type_url),
                generations,
            );
        }
        // Delta Envoys hold the routes as a route configuration without the rollouts' virtual
        // hosts plus the virtual hosts (VHDS): both carry these generations too.
        let delta = snapshot.for_delta();
        for type_url in [type_url::ROUTE, type_url::VIRTUAL_HOST] {
            self.record_version(scope, type_url, &delta.type_version(type_url), generations);
        }
    }

    /// [`Ledger::record`] for one type's version. The scope's rollouts become those of
    /// `generations`.
    pub fn record_version(
        &mut self,
        scope: Option<&Scope>,
        type_url: &'static str,
        version: &str,
        generations: &Generations,
    ) {
        if !self.scopes.contains_key(&scope.cloned()) && self.scopes.len() >= MAX_SCOPES {
            self.scopes.clear();
        }
        let scoped = self.scopes.entry(scope.cloned()).or_default();
        scoped.rollouts = generations.keys().cloned().collect();
        let ledger = scoped.carried.entry(type_url).or_default();
        let entry = match ledger.by_version.get_mut(version) {
            Some(entry) => entry,
            None => {
                ledger.order.push_back(version.to_owned());
                if ledger.order.len() > KEPT_VERSIONS
                    && let Some(old) = ledger.order.pop_front()
                {
                    ledger.by_version.remove(&old);
                }
                ledger.by_version.entry(version.to_owned()).or_default()
            }
        };
        for (rollout, generation) in generations {
            let slot = entry.entry(rollout.clone()).or_insert(*generation);
            *slot = (*slot).max(*generation);
        }
    }

    /// The rollouts of `scope`'s newest snapshot (the ones its Envoys are counted for), when
    /// they are more than those with a generation.
    pub fn set_members(&mut self, scope: Option<&Scope>, rollouts: BTreeSet<String>) {
        if let Some(scoped) = self.scopes.get_mut(&scope.cloned()) {
            scoped.rollouts = rollouts;
        }
    }

    /// The scope was recorded at least once.
    pub fn knows(&self, scope: Option<&Scope>) -> bool {
        self.scopes.contains_key(&scope.cloned())
    }

    /// The generation of `rollout` carried by `version` of `type_url` in `scope`, if recorded.
    fn carried(
        &self,
        scope: &ScopeLedger,
        type_url: &str,
        version: &str,
        rollout: &str,
    ) -> Option<i64> {
        scope
            .carried
            .get(type_url)?
            .by_version
            .get(version)?
            .get(rollout)
            .copied()
    }

    /// What the Envoys that receive `rollout` hold of it: the engine's
    /// `Observed.data_plane.proxies`. Unscoped Envoys always count; a scoped one counts when its
    /// scope's newest recorded snapshot contains the rollout (or, its scope never recorded yet,
    /// counts as not acknowledged: the gate waits rather than guess). ACKed = the smallest
    /// generation its ACKed versions of the gated types carry (none if one is unknown); NACKed
    /// = a gated type's last NACK, with the generation the rejected version carried (or, when
    /// that version is not recorded, `i64::MAX`: it rejected something newer than anything it
    /// ACKed).
    pub fn proxies(&self, rollout: &str, proxies: &[ProxyStatus]) -> Vec<ProxyAck> {
        let empty = ScopeLedger::default();
        proxies
            .iter()
            .filter_map(|proxy| {
                let scope = match self.scopes.get(&proxy.scope) {
                    Some(scope) if proxy.scope.is_some() && !scope.rollouts.contains(rollout) => {
                        return None;
                    }
                    Some(scope) => scope,
                    None => &empty,
                };
                Some(self.proxy(scope, rollout, proxy))
            })
            .collect()
    }

    fn proxy(&self, scope: &ScopeLedger, rollout: &str, proxy: &ProxyStatus) -> ProxyAck {
        let mut acked: Option<i64> = None;
        let mut complete = true;
        let mut nacked = None;
        // A delta Envoy's weights are in its virtual hosts (VHDS).
        let vhds = proxy.delta.then_some(type_url::VIRTUAL_HOST);
        for type_url in GATED_TYPES.into_iter().chain(vhds) {
            let status = proxy.types.iter().find(|t| t.type_url == type_url);
            let generation = status
                .filter(|t| !t.acked_version.is_empty())
                .and_then(|t| self.carried(scope, type_url, &t.acked_version, rollout));
            match generation {
                Some(g) => acked = Some(acked.map_or(g, |a| a.min(g))),
                None => complete = false,
            }
            if nacked.is_none()
                && let Some(t) = status.filter(|t| !t.last_nack.is_empty())
            {
                let generation = self
                    .carried(scope, type_url, &t.last_nack_version, rollout)
                    .unwrap_or(i64::MAX);
                nacked = Some((generation, t.last_nack.clone()));
            }
        }
        ProxyAck {
            node_id: proxy.node_id.clone(),
            acked_generation: if complete { acked } else { None },
            nacked,
        }
    }
}

/// The gate of one control-plane replica: the [`Ledger`] fed with the published snapshot and
/// with the snapshot of every scope its proxies declared (the ADS server's own
/// [`NodeSnapshots`], so the versions are the very ones the Envoys were sent).
#[derive(Debug)]
pub struct Gate {
    ledger: Ledger,
    nodes: Arc<NodeSnapshots>,
    /// The newest recorded publication, for scopes first seen after it.
    published: Option<(Arc<Snapshot>, Generations)>,
    /// The rollouts reported ([`Gate::report`]): those with a generation in the newest
    /// publication, recorded or not.
    reported: BTreeSet<String>,
}

impl Gate {
    pub fn new(nodes: Arc<NodeSnapshots>) -> Self {
        Gate {
            ledger: Ledger::default(),
            nodes,
            published: None,
            reported: BTreeSet::new(),
        }
    }

    /// Records a publication: `generations` are those in the store when `snapshot` was
    /// translated. Every scope already followed records its share.
    pub fn record(&mut self, snapshot: Arc<Snapshot>, generations: Generations) {
        let scopes: Vec<Scope> = self.ledger.scopes.keys().flatten().cloned().collect();
        self.ledger.record(None, &snapshot, &generations);
        self.reported = generations.keys().cloned().collect();
        self.published = Some((snapshot, generations));
        for scope in scopes {
            self.record_scope(&scope);
        }
    }

    fn record_scope(&mut self, scope: &Scope) {
        let Some((published, generations)) = &self.published else {
            return;
        };
        let snapshot = self.nodes.scope_snapshot(scope, published);
        let members: BTreeSet<String> = match &snapshot.source {
            Some(state) => state.rollouts.keys().cloned().collect(),
            None => generations.keys().cloned().collect(),
        };
        let carried: Generations = generations
            .iter()
            .filter(|(name, _)| members.contains(*name))
            .map(|(name, g)| (name.clone(), *g))
            .collect();
        self.ledger.record(Some(scope), &snapshot, &carried);
        self.ledger.set_members(Some(scope), members);
    }

    /// [`Ledger::proxies`], after recording the current publication for scopes seen first.
    pub fn proxies(&mut self, rollout: &str, proxies: &[ProxyStatus]) -> Vec<ProxyAck> {
        self.follow(proxies);
        self.ledger.proxies(rollout, proxies)
    }

    /// Records the current publication for every scope of `proxies` not followed yet.
    pub fn follow(&mut self, proxies: &[ProxyStatus]) {
        for proxy in proxies {
            if let Some(scope) = &proxy.scope
                && !self.ledger.knows(Some(scope))
            {
                self.record_scope(scope);
            }
        }
    }

    /// [`Gate::record`] when the generations come apart from the snapshot (Kubernetes mode: the
    /// source hands over `traffic` with its `generations`, the store translates it later, or
    /// not at all if the translation fails): records for each rollout only if `snapshot` serves
    /// it exactly as `traffic` has it. A rollout left out is not acknowledged by these versions
    /// (the gate waits), never acknowledged early.
    pub fn record_matching(
        &mut self,
        snapshot: Arc<Snapshot>,
        traffic: &TrafficState,
        generations: &Generations,
    ) {
        let served = snapshot.source.clone();
        let matching = generations
            .iter()
            .filter(|(name, _)| {
                let published = traffic.rollouts.get(*name);
                published.is_some()
                    && served.as_ref().and_then(|s| s.rollouts.get(*name)) == published
            })
            .map(|(name, g)| (name.clone(), *g))
            .collect();
        self.record(snapshot, matching);
        self.reported = generations.keys().cloned().collect();
    }

    /// Every rollout of the newest publication with the proxies counted for it (what this
    /// replica reports to the leader).
    pub fn report(&mut self, proxies: &[ProxyStatus]) -> BTreeMap<String, Vec<ProxyAck>> {
        let rollouts: Vec<String> = self.reported.iter().cloned().collect();
        rollouts
            .into_iter()
            .map(|rollout| {
                let acks = self.proxies(&rollout, proxies);
                (rollout, acks)
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
