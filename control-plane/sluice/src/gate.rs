//! The data-plane gate's bookkeeping: which traffic generation of each rollout an Envoy holds.
//!
//! The release engine publishes traffic as generations (`status.dataPlane.generation`); the
//! driver puts it in the store, which becomes a snapshot whose resources are content-versioned per
//! type. The connection registry knows, per connected Envoy and type, the version it ACKed (and
//! the last one it NACKed). The [`Ledger`] joins the two: for each gated type it remembers which
//! generation of each rollout every recorded type version carries, so
//! `proxy ACKed version V of every gated type ⇒ it holds generation min(carried(V))`.
//!
//! Gated types: clusters, endpoints and routes (weights live in the routes; a new version's
//! cluster and endpoints must exist before a route sends to it). They are the same for every
//! node; the listener and the filter config (ECDS) are specialised per node (listener address,
//! Wasm or native build) and so cannot be keyed by the global snapshot's versions. Content hashes
//! make identical content one version: if a rollout returns to an earlier traffic, an Envoy that
//! still holds that content holds the newer generation too — the largest is kept.
//!
//! Pure: no I/O; the standalone driver feeds it, the Kubernetes driver can do the same.

use std::collections::{BTreeMap, VecDeque};

use sluice_release::ProxyAck;
use sluice_xds::{registry::ProxyStatus, snapshot::Snapshot, type_url};

/// The types whose acknowledgement completes a traffic change.
pub const GATED_TYPES: [&str; 3] = [type_url::CLUSTER, type_url::ENDPOINT, type_url::ROUTE];

/// Versions remembered per type (oldest forgotten first): an Envoy that still holds one of the
/// forgotten ones has not ACKed anything this recent, and counts as not acknowledged.
const KEPT_VERSIONS: usize = 512;

/// Rollout name → traffic generation.
pub type Generations = BTreeMap<String, i64>;

/// Per gated type: type version → the generations it carries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ledger {
    carried: BTreeMap<&'static str, TypeLedger>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct TypeLedger {
    by_version: BTreeMap<String, Generations>,
    order: VecDeque<String>,
}

impl Ledger {
    /// Records that `snapshot` (the one being served) carries `generations`. Call it after each
    /// publication, with the generations that were in the store when it was translated.
    pub fn record(&mut self, snapshot: &Snapshot, generations: &Generations) {
        for type_url in GATED_TYPES {
            self.record_version(type_url, &snapshot.type_version(type_url), generations);
        }
        // Delta Envoys hold the routes as a route configuration without the rollouts' virtual
        // hosts plus the virtual hosts (VHDS): both carry these generations too.
        let delta = snapshot.for_delta();
        for type_url in [type_url::ROUTE, type_url::VIRTUAL_HOST] {
            self.record_version(type_url, &delta.type_version(type_url), generations);
        }
    }

    /// [`Ledger::record`] for one type's version.
    pub fn record_version(
        &mut self,
        type_url: &'static str,
        version: &str,
        generations: &Generations,
    ) {
        let ledger = self.carried.entry(type_url).or_default();
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

    /// The generation of `rollout` carried by `version` of `type_url`, if recorded.
    fn carried(&self, type_url: &str, version: &str, rollout: &str) -> Option<i64> {
        self.carried
            .get(type_url)?
            .by_version
            .get(version)?
            .get(rollout)
            .copied()
    }

    /// What each connected Envoy holds of `rollout`: the engine's `Observed.data_plane.proxies`.
    /// ACKed = the smallest generation its ACKed versions of the gated types carry (none if one is
    /// unknown); NACKed = a gated type's last NACK, with the generation the rejected version
    /// carried (or, when that version is not recorded, `i64::MAX`: it rejected something newer
    /// than anything it ACKed).
    pub fn proxies(&self, rollout: &str, proxies: &[ProxyStatus]) -> Vec<ProxyAck> {
        proxies
            .iter()
            .map(|proxy| {
                let mut acked: Option<i64> = None;
                let mut complete = true;
                let mut nacked = None;
                // A delta Envoy's weights are in its virtual hosts (VHDS).
                let vhds = proxy.delta.then_some(type_url::VIRTUAL_HOST);
                for type_url in GATED_TYPES.into_iter().chain(vhds) {
                    let status = proxy.types.iter().find(|t| t.type_url == type_url);
                    let generation = status
                        .filter(|t| !t.acked_version.is_empty())
                        .and_then(|t| self.carried(type_url, &t.acked_version, rollout));
                    match generation {
                        Some(g) => acked = Some(acked.map_or(g, |a| a.min(g))),
                        None => complete = false,
                    }
                    if nacked.is_none()
                        && let Some(t) = status.filter(|t| !t.last_nack.is_empty())
                    {
                        let generation = self
                            .carried(type_url, &t.last_nack_version, rollout)
                            .unwrap_or(i64::MAX);
                        nacked = Some((generation, t.last_nack.clone()));
                    }
                }
                ProxyAck {
                    node_id: proxy.node_id.clone(),
                    acked_generation: if complete { acked } else { None },
                    nacked,
                }
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
        ledger.record(&snapshot, &generations(&[("default/demo", 5)]));
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

    /// A delta proxy holds the routes as VHDS virtual hosts: its generation is read from the
    /// delta form's versions, and it has none until it ACKed the virtual hosts.
    #[test]
    fn a_delta_proxy_is_read_from_its_virtual_hosts() {
        use sluice_model::{RolloutState, Stickiness, TrafficState, Version};
        use sluice_xds::translate::{TranslateOptions, WasmSource, translate};
        let options = TranslateOptions::new(WasmSource::Local {
            path: "/f.wasm".into(),
        });
        let at = |weight_bp| {
            let rollout = RolloutState {
                name: "default/demo".into(),
                hosts: vec!["demo.local".into()],
                versions: [("s", 8001), ("c", 8002)]
                    .into_iter()
                    .map(|(hash, port)| {
                        let endpoints = vec![([127, 0, 0, 1], port).into()];
                        (hash.to_owned(), Version { endpoints })
                    })
                    .collect(),
                stable_hash: "s".into(),
                canary_hash: Some("c".into()),
                canary_weight_bp: weight_bp,
                header_routes: Vec::new(),
                mirror_routes: Vec::new(),
                stickiness: Stickiness::None,
            };
            let state = TrafficState {
                rollouts: [(rollout.name.clone(), rollout)].into(),
            };
            translate(&state, &options).expect("valid")
        };
        let (one, two) = (at(1000), at(5000));
        let mut ledger = Ledger::default();
        ledger.record(&one, &generations(&[("default/demo", 1)]));
        ledger.record(&two, &generations(&[("default/demo", 2)]));
        let delta_proxy = |snapshot: &Snapshot, with_hosts: bool| {
            let delta = snapshot.for_delta();
            let types = GATED_TYPES
                .into_iter()
                .chain(with_hosts.then_some(type_url::VIRTUAL_HOST))
                .map(|t| {
                    let version = delta.type_version(t);
                    TypeStatus {
                        type_url: t.into(),
                        sent_version: version.clone(),
                        acked_version: version,
                        last_nack: String::new(),
                        last_nack_version: String::new(),
                        nacks: 0,
                    }
                })
                .collect();
            ProxyStatus {
                node_id: "delta".into(),
                node_cluster: String::new(),
                peer: String::new(),
                delta: true,
                connected_at: SystemTime::UNIX_EPOCH,
                types,
            }
        };
        let read = |proxy| ledger.proxies("default/demo", &[proxy])[0].acked_generation;
        assert_eq!(read(delta_proxy(&two, true)), Some(2));
        assert_eq!(read(delta_proxy(&one, true)), Some(1));
        assert_eq!(read(delta_proxy(&two, false)), None, "no virtual hosts yet");
    }
}
