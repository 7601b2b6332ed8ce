//! A/B/n: additional weighted versions get a cluster, endpoints and a per-version route like any
//! live version, and their share in the weighted fallback (canary, stable, additional…).

use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, header_matcher, route_action, weighted_cluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher;
use sluice_model::WeightDestination;

use super::tests::{decoded, fallback_of, options, rollout, state, virtual_host};
use super::*;
use crate::type_url;

/// Stable aaa, canary bbb at `canary` bp, baseline ccc at `baseline` bp.
fn experiment(canary: u32, baseline: u32) -> TrafficState {
    let mut r = rollout(
        "default/demo",
        "demo.local",
        &[
            ("aaa", &["127.0.0.1:8001"]),
            ("bbb", &["127.0.0.1:8002"]),
            ("ccc", &["127.0.0.1:8003"]),
        ],
    );
    r.canary_weight_bp = canary;
    r.additional_weights = vec![WeightDestination {
        name: "baseline".into(),
        pod_template_hash: "ccc".into(),
        weight_bp: baseline,
    }];
    state([r])
}

fn split(snapshot: &Snapshot) -> Vec<(String, u32)> {
    match fallback_of(snapshot, "default/demo") {
        route_action::ClusterSpecifier::WeightedClusters(w) => {
            assert_eq!(
                w.random_value_specifier,
                Some(weighted_cluster::RandomValueSpecifier::HeaderName(
                    BUCKET_HEADER.into()
                ))
            );
            w.clusters
                .iter()
                .map(|c| (c.name.clone(), c.weight.expect("weight").value))
                .collect()
        }
        route_action::ClusterSpecifier::Cluster(name) => vec![(name, 10_000)],
        other => panic!("fallback {other:?}"),
    }
}

fn owned(split: &[(&str, u32)]) -> Vec<(String, u32)> {
    split.iter().map(|(n, w)| (n.to_string(), *w)).collect()
}

#[test]
fn an_additional_version_has_a_cluster_endpoints_and_a_route_of_its_own() {
    let snapshot = translate(&experiment(1000, 1000), &options()).expect("translates");
    check_consistent(&snapshot).expect("consistent");
    for hash in ["aaa", "bbb", "ccc"] {
        let name = format!("default/demo/{hash}");
        assert!(snapshot.get(type_url::CLUSTER, &name).is_some(), "{name}");
        assert!(snapshot.get(type_url::ENDPOINT, &name).is_some(), "{name}");
    }
    let routes: RouteConfiguration = decoded(&snapshot, type_url::ROUTE, ROUTE_CONFIG_NAME);
    let vhost = virtual_host(&routes, "default/demo");
    let route = vhost
        .routes
        .iter()
        .find(|r| r.name == "default/demo/ccc")
        .expect("a route for ccc");
    let header = &route.r#match.as_ref().expect("match").headers[0];
    assert_eq!(header.name, "x-sluice-hash");
    assert!(matches!(
        &header.header_match_specifier,
        Some(header_matcher::HeaderMatchSpecifier::StringMatch(m))
            if m.match_pattern == Some(string_matcher::MatchPattern::Exact("ccc".into()))
    ));
}

#[test]
fn the_fallback_lists_canary_stable_then_the_additional_versions() {
    type Split<'a> = &'a [(&'a str, u32)];
    let cases: [((u32, u32), Split); 4] = [
        (
            (1000, 1000),
            &[
                ("default/demo/bbb", 1000),
                ("default/demo/aaa", 8000),
                ("default/demo/ccc", 1000),
            ],
        ),
        (
            (0, 2500),
            &[("default/demo/aaa", 7500), ("default/demo/ccc", 2500)],
        ),
        (
            (9000, 1000),
            &[("default/demo/bbb", 9000), ("default/demo/ccc", 1000)],
        ),
        ((0, 10_000), &[("default/demo/ccc", 10_000)]),
    ];
    for ((canary, baseline), want) in cases {
        let snapshot = translate(&experiment(canary, baseline), &options()).expect("translates");
        assert_eq!(
            split(&snapshot),
            owned(want),
            "canary {canary}, baseline {baseline}"
        );
    }
}

#[test]
fn the_policy_leaves_the_weights_to_the_routes() {
    let with = translate(&experiment(1000, 1000), &options()).expect("translates");
    let other = translate(&experiment(2000, 500), &options()).expect("translates");
    let config = |s: &Snapshot| {
        s.get(type_url::EXTENSION_CONFIG, FILTER_CONFIG_NAME)
            .expect("ecds")
            .body
            .clone()
    };
    // A change of the canary or the additional weights is a route change only.
    assert_eq!(config(&with), config(&other));
    assert_ne!(split(&with), split(&other));
}

#[test]
fn an_additional_weight_over_the_total_is_rejected_before_translation() {
    let err = translate(&experiment(9000, 1001), &options())
        .expect_err("over 100 %")
        .to_string();
    assert!(err.contains("additionalWeights[0].weightBp"), "{err}");
}
