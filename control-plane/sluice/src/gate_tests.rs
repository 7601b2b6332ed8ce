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
        ledger.proxies("default/other", &[proxy("envoy-2", &all("a"), None)])[0].acked_generation,
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
        additional_weights: Vec::new(),
        stickiness: sluice_model::Stickiness::None,
        preview: None,
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
            additional_weights: Vec::new(),
            stickiness: Stickiness::None,
            preview: None,
        };
        let state = TrafficState {
            rollouts: [(rollout.name.clone(), rollout)].into(),
        };
        translate(&state, &options).expect("valid")
    };
    let (one, two) = (at(1000), at(5000));
    let mut ledger = Ledger::default();
    ledger.record(None, &one, &generations(&[("default/demo", 1)]));
    ledger.record(None, &two, &generations(&[("default/demo", 2)]));
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
            scope: None,
            types,
        }
    };
    let read = |proxy| ledger.proxies("default/demo", &[proxy])[0].acked_generation;
    assert_eq!(read(delta_proxy(&two, true)), Some(2));
    assert_eq!(read(delta_proxy(&one, true)), Some(1));
    assert_eq!(read(delta_proxy(&two, false)), None, "no virtual hosts yet");
}
