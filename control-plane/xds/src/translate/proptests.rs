//! Property: every valid traffic state translates to a consistent snapshot.

use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, route, route_action};
use proptest::prelude::*;
use sluice_model::{RolloutState, Stickiness, TrafficState, Version};

use super::tests::{decoded, options, state};
use super::*;
use crate::type_url;

pub(super) fn arb_state() -> impl Strategy<Value = TrafficState> {
    let hash = "[a-z0-9]{1,10}";
    let rollout = (
        prop::collection::btree_map(hash, 0usize..4, 1..4),
        any::<prop::sample::Index>(),
        prop::option::of(any::<prop::sample::Index>()),
        0u32..=10_000,
        1usize..3,
        prop::collection::vec(0u32..=6_000, 0..3),
    );
    prop::collection::vec(rollout, 0..4).prop_map(|rollouts| {
        let mut port = 20_000u16;
        let rollouts = rollouts.into_iter().enumerate().map(
            |(i, (sizes, stable, canary, weight, hosts, extra))| {
                let hashes: Vec<String> = sizes.keys().cloned().collect();
                let versions = sizes
                    .into_iter()
                    .map(|(hash, n)| {
                        let endpoints = (0..n)
                            .map(|_| {
                                port += 1;
                                std::net::SocketAddr::from(([127, 0, 0, 1], port))
                            })
                            .collect();
                        (hash, Version { endpoints })
                    })
                    .collect();
                let stable_hash = stable.get(&hashes).clone();
                let canary_hash = canary
                    .map(|c| c.get(&hashes).clone())
                    .filter(|c| *c != stable_hash);
                let canary_weight_bp = if canary_hash.is_some() { weight } else { 0 };
                // A/B/n: the other live versions, with what the canary leaves.
                let mut left = 10_000 - canary_weight_bp;
                let additional_weights = hashes
                    .iter()
                    .filter(|h| **h != stable_hash && Some(*h) != canary_hash.as_ref())
                    .zip(extra)
                    .map(|(hash, w)| {
                        let weight_bp = w.min(left);
                        left -= weight_bp;
                        sluice_model::WeightDestination {
                            name: format!("t-{hash}"),
                            pod_template_hash: hash.clone(),
                            weight_bp,
                        }
                    })
                    .collect();
                RolloutState {
                    name: format!("ns/r{i}"),
                    hosts: (0..hosts).map(|h| format!("h{h}.r{i}.test")).collect(),
                    versions,
                    stable_hash,
                    canary_weight_bp,
                    canary_hash,
                    header_routes: Vec::new(),
                    mirror_routes: Vec::new(),
                    additional_weights,
                    preview: None,
                    stickiness: Stickiness::None,
                }
            },
        );
        state(rollouts)
    })
}

proptest! {
    #[test]
    fn every_translation_is_consistent(state in arb_state()) {
        let snapshot = translate(&state, &options()).expect("valid states translate");
        check_consistent(&snapshot).expect("consistent");
        let versions: usize = state.rollouts.values().map(|r| r.versions.len()).sum();
        prop_assert_eq!(snapshot.of_type(type_url::CLUSTER).count(), versions);
        prop_assert_eq!(snapshot.of_type(type_url::ENDPOINT).count(), versions);
        // Every fallback sends all of the traffic somewhere: weights sum to 10000.
        let routes: RouteConfiguration = decoded(&snapshot, type_url::ROUTE, ROUTE_CONFIG_NAME);
        for vhost in routes.virtual_hosts.iter().filter(|v| v.name != "no_rollout") {
            let last = vhost.routes.last().expect("fallback");
            if let Some(route::Action::Route(action)) = &last.action
                && let Some(route_action::ClusterSpecifier::WeightedClusters(w)) = &action.cluster_specifier
            {
                let total: u32 = w.clusters.iter().map(|c| c.weight.expect("weight").value).sum();
                prop_assert_eq!(total, 10_000);
                prop_assert!(w.clusters.iter().all(|c| c.weight.expect("weight").value > 0));
            }
        }
    }
}
