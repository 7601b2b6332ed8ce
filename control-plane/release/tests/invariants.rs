//! Properties of the engine under any sequence of events (pods coming and going, proxies ACKing or
//! not, time passing, new templates, the plugin's commands): weights always sum to 100 %, no weight
//! on a version without available pods, no version scaled down while traffic may reach it, the
//! stable version never scaled below its replicas, the step index within the steps.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Sim, rollout};
use std::time::Duration;

use proptest::prelude::*;
use sluice_release::{Action, reconcile};

#[derive(Clone, Debug)]
enum Op {
    Tick(u64),
    CanaryPodsUp,
    CanaryPodsDown,
    AckAll,
    AckFirst,
    Disconnect,
    Reconnect,
    NewTemplate(u8),
    Promote,
    PromoteFull,
    Abort,
    Retry,
    Pass,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..90).prop_map(Op::Tick),
        Just(Op::CanaryPodsUp),
        Just(Op::CanaryPodsDown),
        Just(Op::AckAll),
        Just(Op::AckFirst),
        Just(Op::Disconnect),
        Just(Op::Reconnect),
        (1u8..5).prop_map(Op::NewTemplate),
        Just(Op::Promote),
        Just(Op::PromoteFull),
        Just(Op::Abort),
        Just(Op::Retry),
        Just(Op::Pass),
    ]
}

const STEPS: &str = "[{setWeight: 10}, {pause: {duration: 30s}}, {setHeaderRoute: {name: h, match: [{headerName: x, headerValue: {exact: y}}]}}, {setCanaryScale: {replicas: 1}}, {setWeight: 60}, {pause: {}}, {setWeight: 90}]";

fn check_pass(sim: &mut Sim) {
    let observed = sim.observed();
    let out = reconcile(&sim.rollout, &observed, sim.now);
    let status = &out.status;
    let weights = status.canary.as_ref().unwrap().weights.as_ref().unwrap();
    assert!((0..=100).contains(&weights.canary.weight));
    assert_eq!(
        weights.canary.weight + weights.stable.as_ref().map_or(0, |s| s.weight),
        100
    );
    let dp = status.data_plane.as_ref().unwrap();
    let available = |hash: &str| {
        observed
            .versions
            .iter()
            .find(|v| v.hash == hash)
            .map_or(0, |v| v.available)
    };
    if let Some(canary) = &dp.traffic.canary
        && (dp.traffic.canary_weight > 0 || !dp.traffic.header_routes.is_empty())
    {
        assert!(
            available(canary) > 0,
            "traffic to {canary} without available pods: {dp:?}"
        );
    }
    let all_acked = observed
        .data_plane
        .proxies
        .iter()
        .all(|p| p.acked_generation.is_some_and(|g| g >= dp.generation));
    let stable = status.stable_rs.clone().unwrap_or_default();
    for action in &out.actions {
        if let Action::ScaleReplicaSet { name, replicas } = action {
            let v = observed.versions.iter().find(|v| v.name == *name).unwrap();
            if *replicas < v.desired && v.hash != dp.traffic.canary.clone().unwrap_or_default() {
                assert!(
                    !dp.traffic.routes_to(&v.hash),
                    "{name} scaled down while routed"
                );
                assert!(all_acked, "{name} scaled down before every proxy ACKed");
            }
            assert!(
                v.hash != stable || *replicas >= 4,
                "stable {name} scaled to {replicas}"
            );
        }
    }
    let index = status.current_step_index.unwrap();
    assert!((0..=7).contains(&index), "{index}");
    sim.pass();
    time_alone_writes_nothing(sim);
}

/// A rollout at a fixed point stays there while only the clock moves, until the engine's own
/// requeue: a status that changes with the clock alone is written on every reconcile (a
/// control-plane restart, a resync) although nothing happened.
fn time_alone_writes_nothing(sim: &Sim) {
    let observed = sim.observed();
    let settled = reconcile(&sim.rollout, &observed, sim.now);
    if Some(&settled.status) != sim.rollout.status.as_ref()
        || settled
            .requeue_after
            .is_some_and(|r| r <= Duration::from_secs(1))
    {
        return;
    }
    let later = sim
        .now
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(1))
        .unwrap();
    let mut rollout = sim.rollout.clone();
    rollout.status = Some(settled.status.clone());
    let again = reconcile(&rollout, &observed, later);
    assert_eq!(
        again.status, settled.status,
        "one second later, nothing else changed"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_keeps_its_invariants(ops in proptest::collection::vec(op(), 1..60)) {
        let mut sim = Sim::new(rollout(4, "app:0", STEPS));
        sim.kubelet = false;
        sim.auto_ack = false;
        let all_proxies = sim.proxies.clone();
        for op in ops {
            match op {
                Op::Tick(s) => sim.advance(s),
                Op::CanaryPodsUp => {
                    for v in &mut sim.versions {
                        v.available = v.desired;
                        v.ready = v.desired;
                    }
                }
                Op::CanaryPodsDown => {
                    let current = sim.rollout.status.as_ref().and_then(|s| s.current_pod_hash.clone());
                    for v in &mut sim.versions {
                        if Some(&v.hash) == current.as_ref() {
                            v.available = 0;
                        }
                    }
                }
                Op::AckAll => sim.ack_all(),
                Op::AckFirst => {
                    let generation = sim.published.last().map(|(g, _)| *g);
                    if let Some(p) = sim.proxies.first_mut() {
                        p.acked_generation = generation;
                    }
                }
                Op::Disconnect => { sim.proxies.pop(); }
                Op::Reconnect => sim.proxies = all_proxies.clone(),
                Op::NewTemplate(n) => sim.set_image(&format!("app:{n}")),
                Op::Promote if sim.rollout.status.is_some() => sim.promote(),
                Op::PromoteFull if sim.rollout.status.is_some() => sim.promote_full(),
                Op::Abort if sim.rollout.status.is_some() => sim.abort(),
                Op::Retry if sim.rollout.status.is_some() => sim.retry(),
                _ => {}
            }
            check_pass(&mut sim);
        }
    }
}
