//! Every transition of the release engine as a plain test, driven through the simulated world of
//! `common` (ReplicaSets, a kubelet, proxies that ACK, a clock, the plugin's commands).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{STEPS, Sim, proxy, rollout};
use sluice_release::{Action, HASH_LABEL, action::REVISION_ANNOTATION, pod_template_hash};

#[test]
fn the_first_version_is_stable_at_full_scale_without_steps() {
    let mut sim = Sim::new(rollout(4, "app:1", STEPS));
    let first = sim.pass();
    let Some(Action::CreateReplicaSet(rs)) = first
        .actions
        .iter()
        .find(|a| matches!(a, Action::CreateReplicaSet(_)))
    else {
        panic!("no ReplicaSet created: {:?}", first.actions);
    };
    let hash = pod_template_hash(sim.rollout.spec.template.as_ref().unwrap(), None).unwrap();
    assert_eq!(
        rs.metadata.name.as_deref(),
        Some(format!("demo-{hash}").as_str())
    );
    assert_eq!(rs.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(rs.spec.replicas, Some(4));
    let annotations = rs.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[REVISION_ANNOTATION], "1");
    let owner = &rs.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.name.as_str(),
            owner.uid.as_str(),
            owner.controller
        ),
        ("Rollout", "demo", "uid-1", Some(true))
    );
    let pod_labels = rs
        .spec
        .template
        .as_ref()
        .unwrap()
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(pod_labels[HASH_LABEL], hash);
    assert_eq!(pod_labels["app"], "demo");
    assert_eq!(
        rs.spec.selector.match_labels.as_ref().unwrap()[HASH_LABEL],
        hash
    );

    sim.settle();
    assert_eq!(sim.stable(), hash);
    assert_eq!(sim.step(), 5, "no steps on the initial deploy");
    assert_eq!(sim.phase(), "Healthy");
    assert_eq!(sim.traffic().stable, hash);
    assert_eq!(sim.traffic().canary_weight, 0);
    let status = sim.status();
    assert_eq!(status.selector.as_deref(), Some("app=demo"));
    assert_eq!(
        (status.replicas, status.available_replicas),
        (Some(4), Some(4))
    );
    assert_eq!(status.observed_generation.as_deref(), Some("1"));
    for (condition, value) in [
        ("Available", "True"),
        ("Completed", "True"),
        ("Progressing", "True"),
    ] {
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == condition)
            .unwrap();
        assert_eq!(c.status, value, "{condition}");
    }
}

#[test]
fn a_new_template_starts_a_canary_at_step_0_with_replicas_following_the_weight() {
    let mut sim = Sim::with_stable("app:1", STEPS);
    let stable = sim.stable();
    sim.set_image("app:2");
    sim.kubelet = false;
    sim.pass();
    let canary = sim.current();
    assert_ne!(canary, stable);
    assert_eq!(sim.step(), 0);
    // ceil(4 × 10 / 100) = 1 canary pod; stable stays at 4.
    assert_eq!(sim.version(&canary).desired, 1);
    assert_eq!(sim.version(&canary).revision, Some(2));
    assert_eq!(sim.version(&stable).desired, 4);
    // No available canary pod: no weight for it.
    assert_eq!(sim.traffic().canary_weight, 0);
    assert_eq!(sim.phase(), "Progressing");
    sim.pass();
    assert_eq!(sim.traffic().canary_weight, 0);

    sim.kubelet = true;
    let v = sim.versions.iter_mut().find(|v| v.hash == canary).unwrap();
    v.available = 1;
    v.ready = 1;
    sim.pass();
    assert_eq!(sim.traffic().canary_weight, 10);
    assert_eq!(sim.traffic().canary.as_deref(), Some(canary.as_str()));
    sim.pass();
    assert_eq!(sim.step(), 1, "setWeight done once ACKed; now at the pause");
    assert_eq!(sim.phase(), "Paused");
    assert_eq!(sim.status().pause_conditions[0].reason, "CanaryPauseStep");
    assert!(sim.status().controller_pause);
}

#[test]
fn a_timed_pause_elapses_on_the_returned_requeue() {
    let mut sim = Sim::with_stable("app:1", STEPS);
    sim.set_image("app:2");
    let out = sim.settle();
    assert_eq!(sim.step(), 1);
    assert_eq!(out.requeue_after, Some(Duration::from_secs(60)));
    sim.advance(59);
    let out = sim.settle();
    assert_eq!(sim.step(), 1, "59 s of 60");
    assert_eq!(out.requeue_after, Some(Duration::from_secs(1)));
    sim.advance(1);
    sim.settle();
    assert_eq!(sim.step(), 3, "50 % done, held by pause {{}}");
    assert_eq!(sim.traffic().canary_weight, 50);
    assert_eq!(sim.version(&sim.current()).desired, 2);
    assert!(sim.events().iter().any(|e| e.starts_with("RolloutResumed")));
}

#[test]
fn an_indefinite_pause_holds_until_promoted_then_the_canary_becomes_stable() {
    let mut sim = Sim::with_stable("app:1", STEPS);
    let old = sim.stable();
    sim.set_image("app:2");
    sim.settle();
    sim.advance(60);
    sim.settle();
    assert_eq!(sim.step(), 3);
    sim.advance(3600);
    let out = sim.settle();
    assert_eq!(sim.step(), 3, "pause {{}} holds");
    assert_eq!(out.requeue_after, None, "no timer for an indefinite pause");
    assert_eq!(sim.phase(), "Paused");

    sim.promote();
    sim.settle();
    let canary = sim.current();
    assert_eq!(sim.stable(), canary, "80 % done, then promoted");
    assert_eq!(sim.step(), 5);
    assert_eq!(sim.traffic().canary_weight, 0);
    assert_eq!(sim.traffic().stable, canary);
    assert_eq!(sim.version(&canary).desired, 4);
    assert!(!sim.status().controller_pause);
    // The old stable waits for scaleDownDelaySeconds (30) after the traffic left it.
    assert_eq!(sim.version(&old).desired, 4);
    assert_eq!(sim.phase(), "Healthy");
    sim.advance(30);
    sim.settle();
    assert_eq!(sim.version(&old).desired, 0);
}

/// A control-plane restart or resync during a pause must write nothing: the status of a paused
/// rollout does not change with the clock (a `lastUpdateTime` that did was rewritten each pass).
#[test]
fn a_paused_rollout_is_the_same_status_an_hour_later() {
    let mut sim = Sim::with_stable("app:1", STEPS);
    sim.set_image("app:2");
    sim.settle();
    sim.advance(60);
    sim.settle();
    assert_eq!(sim.phase(), "Paused");
    let paused = sim.status().clone();
    sim.advance(3600);
    let out = sim.settle();
    assert_eq!(out.status, paused);
    assert!(out.actions.is_empty(), "nothing to do: {:?}", out.actions);
}

#[test]
fn spec_paused_holds_the_steps_until_unpaused() {
    let mut sim = Sim::with_stable("app:1", "[{setWeight: 20}, {setWeight: 40}]");
    sim.rollout.spec.paused = true;
    sim.set_image("app:2");
    sim.settle();
    assert_eq!(sim.step(), 0);
    assert_eq!(sim.phase(), "Paused");
    assert_eq!(sim.status().message.as_deref(), Some("manually paused"));
    sim.promote();
    sim.settle();
    assert_eq!(sim.stable(), sim.current());
}

#[test]
fn promote_full_skips_the_remaining_steps() {
    let mut sim = Sim::with_stable("app:1", STEPS);
    sim.set_image("app:2");
    sim.settle();
    assert_eq!(sim.step(), 1);
    sim.promote_full();
    sim.settle();
    assert_eq!(sim.stable(), sim.current());
    assert_eq!(sim.step(), 5);
    assert!(!sim.status().promote_full);
    assert!(sim.status().pause_conditions.is_empty());
    assert_eq!(sim.phase(), "Healthy");
}

#[test]
fn abort_sends_all_traffic_to_stable_in_one_push_and_retry_starts_again() {
    let mut sim = Sim::with_stable("app:1", "[{setWeight: 30}, {pause: {}}]");
    let stable = sim.stable();
    sim.set_image("app:2");
    sim.settle();
    let canary = sim.current();
    assert_eq!(sim.traffic().canary_weight, 30);
    let pushes = sim.published.len();

    sim.abort();
    sim.settle();
    assert_eq!(sim.published.len(), pushes + 1, "one push");
    let traffic = sim.traffic();
    assert_eq!(
        (
            traffic.stable.as_str(),
            traffic.canary_weight,
            traffic.canary.is_none()
        ),
        (stable.as_str(), 0, true)
    );
    assert_eq!(sim.phase(), "Degraded");
    assert!(
        sim.status()
            .message
            .as_deref()
            .unwrap()
            .starts_with("RolloutAborted"),
        "{:?}",
        sim.status().message
    );
    assert_eq!(sim.step(), 0);
    assert_eq!(
        sim.version(&canary).desired,
        2,
        "kept for abortScaleDownDelaySeconds"
    );
    sim.advance(30);
    sim.settle();
    assert_eq!(sim.version(&canary).desired, 0);
    assert_eq!(sim.version(&stable).desired, 4);

    sim.retry();
    sim.settle();
    assert!(!sim.status().abort);
    assert_eq!(sim.step(), 1);
    assert_eq!(sim.traffic().canary_weight, 30);
    assert_eq!(sim.version(&canary).desired, 2);
    assert_eq!(sim.phase(), "Paused");
}

#[test]
fn abort_scale_down_delay_0_keeps_the_canary() {
    let mut sim = Sim::new(rollout(4, "app:1", "[{setWeight: 50}, {pause: {}}]"));
    sim.rollout
        .spec
        .strategy
        .canary
        .as_mut()
        .unwrap()
        .abort_scale_down_delay_seconds = Some(0);
    sim.settle();
    sim.set_image("app:2");
    sim.settle();
    sim.abort();
    sim.settle();
    sim.advance(3600);
    sim.settle();
    assert_eq!(sim.version(&sim.current()).desired, 2);
}

#[test]
fn a_new_template_mid_canary_replaces_the_canary() {
    let mut sim = Sim::with_stable("app:1", STEPS);
    let stable = sim.stable();
    sim.set_image("app:2");
    sim.settle();
    sim.advance(60);
    sim.settle();
    let second = sim.current();
    assert_eq!(sim.step(), 3);

    sim.set_image("app:3");
    sim.settle();
    let third = sim.current();
    assert_ne!(third, second);
    assert_eq!(sim.stable(), stable);
    assert_eq!(sim.step(), 1, "steps restart: 10 %, then the timed pause");
    assert_eq!(sim.traffic().canary.as_deref(), Some(third.as_str()));
    assert_eq!(sim.traffic().canary_weight, 10);
    assert!(!sim.traffic().routes_to(&second));
    assert_eq!(sim.version(&third).revision, Some(3));
    sim.advance(30);
    sim.settle();
    assert_eq!(
        sim.version(&second).desired,
        0,
        "the replaced canary goes after the delay"
    );
}

#[test]
fn going_back_to_stable_mid_canary_needs_no_steps() {
    let mut sim = Sim::with_stable("app:1", STEPS);
    let stable = sim.stable();
    sim.set_image("app:2");
    sim.settle();
    let canary = sim.current();
    sim.set_image("app:1");
    sim.settle();
    assert_eq!((sim.current(), sim.stable()), (stable.clone(), stable));
    assert_eq!(sim.phase(), "Healthy");
    sim.advance(30);
    sim.settle();
    assert_eq!(sim.version(&canary).desired, 0);
}

#[test]
fn a_canary_without_available_pods_exceeds_the_progress_deadline() {
    let mut sim = Sim::with_stable("app:1", STEPS);
    sim.kubelet = false;
    sim.set_image("app:2");
    let out = sim.settle();
    assert_eq!(out.requeue_after, Some(Duration::from_secs(600)));
    sim.advance(599);
    sim.settle();
    assert_eq!(sim.phase(), "Progressing");
    sim.advance(1);
    sim.settle();
    assert_eq!(sim.phase(), "Degraded");
    assert_eq!(
        sim.status().message.as_deref(),
        Some(
            format!(
                "ProgressDeadlineExceeded: ReplicaSet \"demo-{}\" has timed out progressing.",
                sim.current()
            )
            .as_str()
        )
    );
    let progressing = sim
        .status()
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_deref()),
        ("False", Some("ProgressDeadlineExceeded"))
    );
    assert!(!sim.status().abort);
    // Progress clears it.
    let canary = sim.current();
    let v = sim.versions.iter_mut().find(|v| v.hash == canary).unwrap();
    v.available = 1;
    sim.settle();
    assert_ne!(sim.phase(), "Degraded");
}

#[test]
fn progress_deadline_abort_aborts_the_canary() {
    let mut sim = Sim::with_stable("app:1", STEPS);
    sim.rollout.spec.progress_deadline_abort = true;
    sim.rollout.spec.progress_deadline_seconds = Some(120);
    sim.kubelet = false;
    sim.set_image("app:2");
    sim.settle();
    sim.advance(120);
    sim.settle();
    assert!(sim.status().abort);
    assert_eq!(sim.phase(), "Degraded");
    assert!(
        sim.status()
            .message
            .as_deref()
            .unwrap()
            .starts_with("RolloutAborted")
    );
}

#[test]
fn the_ack_gate_holds_a_step_until_every_proxy_acked() {
    let mut sim = Sim::with_stable("app:1", "[{setWeight: 20}, {setWeight: 60}]");
    sim.auto_ack = false;
    sim.set_image("app:2");
    sim.settle();
    assert_eq!(sim.traffic().canary_weight, 20);
    assert_eq!(sim.step(), 0, "published, not acknowledged");
    let dp = sim.status().data_plane.clone().unwrap();
    assert_eq!((dp.acknowledged, dp.proxies), (0, 2));
    assert_eq!(sim.phase(), "Progressing");
    let generation = sim.published.last().unwrap().0;
    sim.proxies[0].acked_generation = Some(generation);
    sim.settle();
    assert_eq!(sim.step(), 0, "1 of 2");
    assert_eq!(sim.status().data_plane.as_ref().unwrap().acknowledged, 1);
    // A disconnected proxy drops out of the count.
    sim.proxies.truncate(1);
    sim.settle();
    assert_eq!(sim.step(), 1);
    assert_eq!(sim.traffic().canary_weight, 60);
}

#[test]
fn a_nack_or_a_lagging_proxy_degrades_the_rollout_naming_the_node() {
    let mut sim = Sim::with_stable("app:1", "[{setWeight: 20}, {setWeight: 60}]");
    sim.auto_ack = false;
    sim.set_image("app:2");
    sim.settle();
    let generation = sim.published.last().unwrap().0;
    sim.proxies[0].nacked = Some((generation, "bad cluster".into()));
    sim.settle();
    assert_eq!(sim.phase(), "Degraded");
    let message = sim.status().message.clone().unwrap();
    assert!(
        message.contains("envoy-a") && message.contains("bad cluster"),
        "{message}"
    );
    assert_eq!(sim.step(), 0);

    sim.proxies = vec![proxy("envoy-b")];
    let out = sim.settle();
    assert_eq!(sim.phase(), "Progressing");
    assert_eq!(out.requeue_after, Some(Duration::from_secs(30)));
    sim.advance(31);
    sim.settle();
    assert_eq!(sim.phase(), "Degraded");
    let message = sim.status().message.clone().unwrap();
    assert!(
        message.starts_with("DataPlaneLag") && message.contains("envoy-b"),
        "{message}"
    );
    sim.ack_all();
    sim.settle();
    assert_eq!((sim.step(), sim.traffic().canary_weight), (1, 60));
    assert!(sim.status().data_plane.as_ref().unwrap().message.is_none());
    sim.ack_all();
    sim.settle();
    assert_eq!(sim.stable(), sim.current());
}

#[test]
fn an_old_version_is_scaled_down_only_after_its_traffic_left_and_was_acked() {
    let mut sim = Sim::with_stable("app:1", "[{setWeight: 50}]");
    let old = sim.stable();
    sim.auto_ack = false;
    sim.set_image("app:2");
    sim.settle();
    sim.ack_all();
    sim.settle();
    // All steps done: promoted; traffic to the new stable published but not acknowledged.
    let new = sim.current();
    assert_eq!(sim.stable(), new);
    assert!(!sim.traffic().routes_to(&old));
    sim.advance(3600);
    sim.settle();
    assert_eq!(
        sim.version(&old).desired,
        4,
        "not ACKed: the old stable keeps its pods"
    );
    assert!(sim.version(&old).scale_down_deadline.is_none());
    assert_ne!(sim.phase(), "Healthy");
    sim.ack_all();
    let out = sim.settle();
    assert!(sim.version(&old).scale_down_deadline.is_some());
    assert_eq!(out.requeue_after, Some(Duration::from_secs(30)));
    assert_eq!(sim.version(&old).desired, 4);
    assert_eq!(sim.phase(), "Healthy");
    sim.advance(30);
    sim.settle();
    assert_eq!(sim.version(&old).desired, 0);
    assert!(sim.version(&old).scale_down_deadline.is_none());
}

#[test]
fn set_canary_scale_overrides_the_weight_share() {
    let mut sim = Sim::with_stable(
        "app:1",
        "[{setCanaryScale: {replicas: 3}}, {setWeight: 10}, {pause: {}}, {setCanaryScale: {matchTrafficWeight: true}}, {pause: {}}]",
    );
    sim.set_image("app:2");
    sim.settle();
    assert_eq!(sim.step(), 2);
    assert_eq!(sim.version(&sim.current()).desired, 3);
    assert_eq!(sim.traffic().canary_weight, 10);
    sim.promote();
    sim.settle();
    assert_eq!(sim.step(), 4);
    assert_eq!(sim.version(&sim.current()).desired, 1);

    // A scale below the weight's share is the user's choice, also after the weight was ACKed.
    let mut sim = Sim::with_stable(
        "app:1",
        "[{setWeight: 60}, {pause: {}}, {setCanaryScale: {replicas: 1}}, {pause: {}}]",
    );
    sim.set_image("app:2");
    sim.settle();
    assert_eq!(sim.version(&sim.current()).desired, 3);
    sim.promote();
    sim.settle();
    assert_eq!((sim.step(), sim.traffic().canary_weight), (3, 60));
    assert_eq!(sim.version(&sim.current()).desired, 1);
}

#[test]
fn changed_steps_restart_the_canary() {
    let mut sim = Sim::with_stable("app:1", STEPS);
    sim.set_image("app:2");
    sim.settle();
    sim.advance(60);
    sim.settle();
    assert_eq!(sim.step(), 3);
    sim.rollout
        .spec
        .strategy
        .canary
        .as_mut()
        .unwrap()
        .steps
        .remove(0);
    sim.settle();
    assert_eq!(sim.step(), 0, "a timed pause first now");
}

#[test]
fn a_step_may_scale_and_route_beside_its_pause_as_in_argo() {
    // Argo's apisix example: setCanaryScale + setHeaderRoute + pause in one step.
    let mut sim = Sim::with_stable(
        "app:1",
        "[{setCanaryScale: {replicas: 1}, setHeaderRoute: {name: h, match: [{headerName: trace, headerValue: {exact: debug}}]}, pause: {duration: 15}}, {setWeight: 50}]",
    );
    sim.set_image("app:2");
    let out = sim.settle();
    assert_eq!(sim.step(), 0);
    assert_eq!(out.requeue_after, Some(Duration::from_secs(15)));
    assert_eq!(sim.version(&sim.current()).desired, 1);
    let traffic = sim.traffic();
    assert_eq!((traffic.canary_weight, traffic.header_routes.len()), (0, 1));
    sim.advance(15);
    sim.settle();
    assert_eq!(sim.stable(), sim.current(), "50 %, then promoted");
    assert!(
        sim.traffic().header_routes.is_empty(),
        "routes are removed at promotion"
    );
}

#[test]
fn a_lower_weight_scales_the_canary_down_only_after_it_is_acked() {
    let mut sim = Sim::with_stable("app:1", "[{setWeight: 50}, {setWeight: 10}, {pause: {}}]");
    sim.auto_ack = false;
    sim.set_image("app:2");
    sim.settle();
    sim.ack_all();
    sim.settle();
    let canary = sim.current();
    assert_eq!((sim.step(), sim.traffic().canary_weight), (1, 10));
    assert_eq!(
        sim.version(&canary).desired,
        2,
        "50 % is still what the proxies hold"
    );
    sim.ack_all();
    sim.settle();
    assert_eq!(sim.step(), 2);
    assert_eq!(sim.version(&canary).desired, 1);
}
