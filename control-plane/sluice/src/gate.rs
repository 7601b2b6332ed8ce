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
        for type_url in GATED_TYPES {
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
mod tests {
    use std::time::SystemTime;

    use sluice_xds::registry::TypeStatus;

    use super::*;

    fn generations(pairs: &[(&str, i64)]) -> Generations {
        pairs.iter().map(|(r, g)| ((*r).to_owned(), *g)).collect()
    }

    /// Records versions `<type>-<suffix>` of every gated type.
    fn record(ledger: &mut Ledger, suffix: &str, pairs: &[(&str, i64)]) {
        for type_url in GATED_TYPES {
            ledger.record_version(
                None,
                type_url,
                &format!("{type_url}-{suffix}"),
                &generations(pairs),
            );
        }
    }

    fn proxy(node: &str, acked: &[(&str, &str)], nack: Option<(&str, &str)>) -> ProxyStatus {
        ProxyStatus {
            node_id: node.into(),
            node_cluster: String::new(),
            peer: String::new(),
            delta: false,
            connected_at: SystemTime::UNIX_EPOCH,
            scope: None,
            types: GATED_TYPES
                .iter()
                .map(|type_url| {
                    let version = acked
                        .iter()
                        .find(|(t, _)| t == type_url)
                        .map(|(_, v)| format!("{type_url}-{v}"))
                        .unwrap_or_default();
                    let (last_nack_version, last_nack) = match nack {
                        Some((v, detail)) if *type_url == type_url::ROUTE => {
                            (format!("{type_url}-{v}"), detail.to_owned())
                        }
                        _ => (String::new(), String::new()),
                    };
                    TypeStatus {
                        type_url: (*type_url).into(),
                        sent_version: version.clone(),
                        acked_version: version,
                        last_nack,
                        last_nack_version,
                        nacks: 0,
                    }
                })
                .collect(),
        }
    }

    fn all(version: &str) -> Vec<(&'static str, &str)> {
        GATED_TYPES.iter().map(|t| (*t, version)).collect()
    }

    #[test]
    fn a_proxy_holds_the_generation_its_acked_versions_carry() {
        let mut ledger = Ledger::default();
        record(
            &mut ledger,
            "a",
            &[("default/demo", 1), ("default/other", 4)],
        );
        record(
            &mut ledger,
            "b",
            &[("default/demo", 2), ("default/other", 4)],
        );
        let acks = ledger.proxies(
            "default/demo",
            &[
                proxy("envoy-1", &all("b"), None),
                proxy("envoy-2", &all("a"), None),
            ],
        );
        assert_eq!(
            acks.iter()
                .map(|a| (a.node_id.as_str(), a.acked_generation))
                .collect::<Vec<_>>(),
            [("envoy-1", Some(2)), ("envoy-2", Some(1))]
        );
        assert_eq!(
            ledger.proxies("default/other", &[proxy("envoy-2", &all("a"), None)])[0]
                .acked_generation,
            Some(4)
        );
    }

    #[test]
    fn the_oldest_type_decides_and_an_unknown_version_is_no_ack() {
        let mut ledger = Ledger::default();
        record(&mut ledger, "a", &[("default/demo", 1)]);
        record(&mut ledger, "b", &[("default/demo", 2)]);
        // Routes of generation 2 ACKed, clusters still of generation 1: it holds 1.
        let mixed = [
            (type_url::CLUSTER, "a"),
            (type_url::ENDPOINT, "b"),
            (type_url::ROUTE, "b"),
        ];
        assert_eq!(
            ledger.proxies("default/demo", &[proxy("e", &mixed, None)])[0].acked_generation,
            Some(1)
        );
        // A type never ACKed, or a version never recorded: nothing acknowledged.
        let partial = [(type_url::CLUSTER, "b"), (type_url::ROUTE, "b")];
        assert_eq!(
            ledger.proxies("default/demo", &[proxy("e", &partial, None)])[0].acked_generation,
            None
        );
        assert_eq!(
            ledger.proxies("default/demo", &[proxy("e", &all("zzz"), None)])[0].acked_generation,
            None
        );
        // A rollout the recorded versions do not carry.
        assert_eq!(
            ledger.proxies("default/gone", &[proxy("e", &all("b"), None)])[0].acked_generation,
            None
        );
    }

    #[test]
    fn identical_content_carries_the_newest_generation() {
        let mut ledger = Ledger::default();
        record(&mut ledger, "a", &[("default/demo", 1)]);
        record(&mut ledger, "b", &[("default/demo", 2)]);
        // Generation 3 returns to generation 1's traffic: the same content, the same versions.
        record(&mut ledger, "a", &[("default/demo", 3)]);
        assert_eq!(
            ledger.proxies("default/demo", &[proxy("e", &all("a"), None)])[0].acked_generation,
            Some(3)
        );
    }

    #[test]
    fn a_nack_names_the_generation_it_rejected() {
        let mut ledger = Ledger::default();
        record(&mut ledger, "a", &[("default/demo", 1)]);
        record(&mut ledger, "b", &[("default/demo", 2)]);
        let acks = ledger.proxies(
            "default/demo",
            &[
                proxy("e1", &all("a"), Some(("b", "bad route"))),
                proxy("e2", &all("a"), Some(("unknown", "bad"))),
            ],
        );
        assert_eq!(acks[0].acked_generation, Some(1));
        assert_eq!(acks[0].nacked, Some((2, "bad route".into())));
        assert_eq!(acks[1].nacked, Some((i64::MAX, "bad".into())));
    }

    #[test]
    fn old_versions_are_forgotten_beyond_the_bound() {
        let mut ledger = Ledger::default();
        for i in 0..=KEPT_VERSIONS {
            let generation = i64::try_from(i).unwrap_or(i64::MAX);
            record(&mut ledger, &i.to_string(), &[("default/demo", generation)]);
        }
        let first = ledger.proxies("default/demo", &[proxy("e", &all("0"), None)]);
        assert_eq!(first[0].acked_generation, None);
        let last = KEPT_VERSIONS.to_string();
        let newest = ledger.proxies("default/demo", &[proxy("e", &all(&last), None)]);
        assert_eq!(
            newest[0].acked_generation,
            i64::try_from(KEPT_VERSIONS).ok()
        );
    }

    #[test]
    fn record_reads_the_snapshot_type_versions() {
        let mut ledger = Ledger::default();
        let snapshot = Snapshot::default();
        ledger.record(None, &snapshot, &generations(&[("default/demo", 5)]));
        let versions: Vec<(&str, String)> = GATED_TYPES
            .iter()
            .map(|t| (*t, snapshot.type_version(t)))
            .collect();
        let status = ProxyStatus {
            types: versions
                .iter()
                .map(|(t, v)| TypeStatus {
                    type_url: (*t).into(),
                    acked_version: v.clone(),
                    ..TypeStatus::default()
                })
                .collect(),
            ..proxy("e", &[], None)
        };
        assert_eq!(
            ledger.proxies("default/demo", &[status])[0].acked_generation,
            Some(5)
        );
    }

    // ---- scopes ----

    fn rollout(name: &str, host: &str, weight: u32) -> sluice_model::RolloutState {
        let version = |port: u16| sluice_model::Version {
            endpoints: vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))],
        };
        sluice_model::RolloutState {
            name: name.into(),
            hosts: vec![host.into()],
            versions: [
                ("aaa".to_string(), version(8001)),
                ("bbb".into(), version(8002)),
            ]
            .into(),
            stable_hash: "aaa".into(),
            canary_hash: Some("bbb".into()),
            canary_weight_bp: weight,
            header_routes: Vec::new(),
            mirror_routes: Vec::new(),
            stickiness: sluice_model::Stickiness::None,
        }
    }

    /// shop/cart at `cart` basis points and web/front at `front`, translated.
    fn published(cart: u32, front: u32) -> Arc<Snapshot> {
        let state = sluice_model::TrafficState {
            rollouts: [
                rollout("shop/cart", "cart.shop", cart),
                rollout("web/front", "front.web", front),
            ]
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect(),
        };
        Arc::new(sluice_xds::translate::translate(&state, &options()).expect("translates"))
    }

    fn options() -> sluice_xds::translate::TranslateOptions {
        sluice_xds::translate::TranslateOptions::new(sluice_xds::translate::WasmSource::Local {
            path: "/opt/sluice/sluice_filter.wasm".into(),
        })
    }

    /// A proxy that ACKed the gated types of `snapshot`.
    /// `scope`: comma-separated entries; "" is the empty scope.
    fn holding(node: &str, scope: Option<&str>, snapshot: &Snapshot) -> ProxyStatus {
        ProxyStatus {
            scope: scope.map(|entries| {
                if entries.is_empty() {
                    Scope::default()
                } else {
                    Scope::parse(entries.split(',')).expect("scope")
                }
            }),
            types: GATED_TYPES
                .iter()
                .map(|t| TypeStatus {
                    type_url: (*t).into(),
                    acked_version: snapshot.type_version(t),
                    ..TypeStatus::default()
                })
                .collect(),
            ..proxy(node, &[], None)
        }
    }

    fn gate() -> (Gate, Arc<NodeSnapshots>) {
        let nodes = Arc::new(NodeSnapshots::new(options()));
        (Gate::new(nodes.clone()), nodes)
    }

    fn acked(acks: &[ProxyAck]) -> Vec<(&str, Option<i64>)> {
        acks.iter()
            .map(|a| (a.node_id.as_str(), a.acked_generation))
            .collect()
    }

    #[test]
    fn a_scoped_proxy_counts_only_for_the_rollouts_of_its_scope() {
        let (mut gate, nodes) = gate();
        let v1 = published(1000, 0);
        gate.record(
            v1.clone(),
            generations(&[("shop/cart", 1), ("web/front", 1)]),
        );
        let cart_scope = Scope::parse(["shop/*"]).expect("scope");
        let cart_snapshot = nodes.scope_snapshot(&cart_scope, &v1);
        let proxies = [
            holding("everything", None, &v1),
            holding("cart-sidecar", Some("shop/*"), &cart_snapshot),
        ];
        assert_eq!(
            acked(&gate.proxies("shop/cart", &proxies)),
            [("everything", Some(1)), ("cart-sidecar", Some(1))]
        );
        // web/front is not in the sidecar's scope: it neither holds nor counts for it.
        assert_eq!(
            acked(&gate.proxies("web/front", &proxies)),
            [("everything", Some(1))]
        );
    }

    #[test]
    fn a_scoped_proxy_is_read_against_its_scope_snapshot_versions() {
        let (mut gate, nodes) = gate();
        let v1 = published(1000, 0);
        gate.record(
            v1.clone(),
            generations(&[("shop/cart", 1), ("web/front", 1)]),
        );
        let scope = Scope::parse(["cart.shop"]).expect("scope");
        // Before its scope is followed, the scoped proxy's versions are unknown: not acknowledged.
        let mut ledger_only = Ledger::default();
        ledger_only.record(
            None,
            &v1,
            &generations(&[("shop/cart", 1), ("web/front", 1)]),
        );
        let sidecar = holding(
            "cart-sidecar",
            Some("cart.shop"),
            &nodes.scope_snapshot(&scope, &v1),
        );
        assert_eq!(
            acked(&ledger_only.proxies("shop/cart", std::slice::from_ref(&sidecar))),
            [("cart-sidecar", None)]
        );
        // The gate follows the scope and knows its versions.
        assert_eq!(
            acked(&gate.proxies("shop/cart", std::slice::from_ref(&sidecar))),
            [("cart-sidecar", Some(1))]
        );
        // The next generation of shop/cart: the sidecar still holding v1's scope snapshot
        // holds generation 1; once it ACKs v2's it holds 2.
        let v2 = published(5000, 0);
        gate.record(
            v2.clone(),
            generations(&[("shop/cart", 2), ("web/front", 1)]),
        );
        assert_eq!(
            acked(&gate.proxies("shop/cart", std::slice::from_ref(&sidecar))),
            [("cart-sidecar", Some(1))]
        );
        let updated = holding(
            "cart-sidecar",
            Some("cart.shop"),
            &nodes.scope_snapshot(&scope, &v2),
        );
        assert_eq!(
            acked(&gate.proxies("shop/cart", &[updated])),
            [("cart-sidecar", Some(2))]
        );
    }

    #[test]
    fn a_change_outside_a_scope_is_already_held_by_its_proxies() {
        let (mut gate, nodes) = gate();
        let v1 = published(1000, 0);
        gate.record(
            v1.clone(),
            generations(&[("shop/cart", 1), ("web/front", 1)]),
        );
        let scope = Scope::parse(["shop/*"]).expect("scope");
        let sidecar = holding(
            "cart-sidecar",
            Some("shop/*"),
            &nodes.scope_snapshot(&scope, &v1),
        );
        gate.follow(std::slice::from_ref(&sidecar));
        // web/front moves: the unscoped Envoy must ACK it, the shop sidecar is not asked.
        let v2 = published(1000, 3000);
        gate.record(
            v2.clone(),
            generations(&[("shop/cart", 1), ("web/front", 2)]),
        );
        let proxies = [holding("everything", None, &v1), sidecar];
        assert_eq!(
            acked(&gate.proxies("web/front", &proxies)),
            [("everything", Some(1))]
        );
        assert_eq!(
            acked(&gate.proxies("shop/cart", &proxies)),
            [("everything", Some(1)), ("cart-sidecar", Some(1))]
        );
    }

    #[test]
    fn an_empty_scope_counts_for_no_rollout_and_unscoped_ones_for_all() {
        let (mut gate, nodes) = gate();
        let v1 = published(1000, 0);
        gate.record(
            v1.clone(),
            generations(&[("shop/cart", 1), ("web/front", 1)]),
        );
        let none = nodes.scope_snapshot(&Scope::default(), &v1);
        let idle = holding("idle", Some(""), &none);
        let all = holding("all", None, &v1);
        for rollout in ["shop/cart", "web/front"] {
            assert_eq!(
                acked(&gate.proxies(rollout, &[idle.clone(), all.clone()])),
                [("all", Some(1))]
            );
        }
    }

    #[test]
    fn generations_apart_from_the_snapshot_count_only_where_it_serves_them() {
        let (mut gate, _) = gate();
        let v1 = published(1000, 0);
        let source = v1.source.clone().expect("translated from a state");
        // The source moved web/front on (generation 2) but the snapshot still serves the old
        // web/front (say the translation of the new one failed): only shop/cart is recorded.
        let mut traffic = (*source).clone();
        if let Some(front) = traffic.rollouts.get_mut("web/front") {
            front.canary_weight_bp = 4000;
        }
        gate.record_matching(
            v1.clone(),
            &traffic,
            &generations(&[("shop/cart", 1), ("web/front", 2)]),
        );
        let everything = holding("everything", None, &v1);
        let report = gate.report(std::slice::from_ref(&everything));
        assert_eq!(acked(&report["shop/cart"]), [("everything", Some(1))]);
        // Still reported (the leader must count this proxy), as not acknowledged.
        assert_eq!(acked(&report["web/front"]), [("everything", None)]);
    }
}
