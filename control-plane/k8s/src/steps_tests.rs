#![allow(clippy::unwrap_used)]

use k8s_openapi::jiff::Timestamp;
use sluice_api::Rollout;

use super::*;
use crate::index::LiveHash;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).expect("valid")
}

fn live(hashes: &[(&str, i64)]) -> Vec<LiveHash> {
    hashes
        .iter()
        .map(|(hash, created)| LiveHash {
            hash: (*hash).into(),
            newest_pod: Some(at(*created)),
        })
        .collect()
}

/// setWeight 20, pause 30s, setWeight 50, pause (indefinite) — or `steps` as given.
fn rollout(steps: &str, status: Option<RolloutStatus>) -> Rollout {
    let mut doc: Rollout = serde_yaml::from_str(&format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: demo, namespace: prod, generation: 3}}\n\
         spec:\n  selector: {{matchLabels: {{app: demo}}}}\n  strategy:\n    canary:\n      steps: {steps}\n"
    ))
    .expect("rollout yaml");
    doc.status = status;
    doc
}

const STEPS: &str = "[{setWeight: 20}, {pause: {duration: 30s}}, {setWeight: 50}, {pause: {}}]";

fn status(stable: &str, current: &str, index: i32) -> RolloutStatus {
    RolloutStatus {
        stable_rs: Some(stable.into()),
        current_pod_hash: Some(current.into()),
        current_step_index: Some(index),
        ..RolloutStatus::default()
    }
}

fn canary_weight(status: &RolloutStatus) -> i32 {
    status
        .canary
        .as_ref()
        .and_then(|c| c.weights.as_ref())
        .expect("weights")
        .canary
        .weight
}

fn paused_since(status: &RolloutStatus) -> Option<Timestamp> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_PAUSED)
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

#[test]
fn without_pods_the_rollout_waits() {
    let step = next_status(&rollout(STEPS, None), &[], at(0)).expect("runs");
    assert_eq!(step.status.stable_rs, None);
    assert_eq!(step.status.phase.as_deref(), Some(PHASE_PROGRESSING));
    assert_eq!(step.status.observed_generation.as_deref(), Some("3"));
}

#[test]
fn the_first_version_becomes_stable_at_once() {
    let step = next_status(&rollout(STEPS, None), &live(&[("aaa", 0)]), at(0)).expect("runs");
    let s = &step.status;
    assert_eq!(s.stable_rs.as_deref(), Some("aaa"));
    assert_eq!(s.current_pod_hash.as_deref(), Some("aaa"));
    assert_eq!(s.current_step_index, Some(4));
    assert_eq!(s.phase.as_deref(), Some(PHASE_HEALTHY));
    assert_eq!(canary_weight(s), 0);
    assert_eq!(step.requeue_after, None);
}

#[test]
fn with_several_versions_at_first_the_oldest_is_stable_and_the_newest_the_canary() {
    let pods = live(&[("ccc", 20), ("aaa", 0), ("bbb", 10)]);
    let step = next_status(&rollout(STEPS, None), &pods, at(30)).expect("runs");
    assert_eq!(step.status.stable_rs.as_deref(), Some("aaa"));
    assert_eq!(step.status.current_pod_hash.as_deref(), Some("ccc"));
}

#[test]
fn a_new_canary_applies_set_weight_and_holds_at_a_timed_pause() {
    let doc = rollout(STEPS, Some(status("aaa", "aaa", 4)));
    let pods = live(&[("aaa", 0), ("bbb", 100)]);
    let step = next_status(&doc, &pods, at(200)).expect("runs");
    let s = &step.status;
    assert_eq!(s.current_pod_hash.as_deref(), Some("bbb"));
    assert_eq!(s.current_step_index, Some(1));
    assert_eq!(s.phase.as_deref(), Some(PHASE_PAUSED));
    assert_eq!(canary_weight(s), 20);
    assert_eq!(paused_since(s), Some(at(200)));
    assert_eq!(step.requeue_after, Some(Duration::from_secs(30)));

    // 10 s later: still paused, same start, 20 s to go.
    let step = next_status(&rollout(STEPS, Some(step.status)), &pods, at(210)).expect("runs");
    assert_eq!(step.status.current_step_index, Some(1));
    assert_eq!(paused_since(&step.status), Some(at(200)));
    assert_eq!(step.requeue_after, Some(Duration::from_secs(20)));

    // Elapsed: setWeight 50, then the indefinite pause holds.
    let step = next_status(&rollout(STEPS, Some(step.status)), &pods, at(231)).expect("runs");
    let s = &step.status;
    assert_eq!(s.current_step_index, Some(3));
    assert_eq!(canary_weight(s), 50);
    assert_eq!(paused_since(s), Some(at(231)), "a new pause starts now");
    assert_eq!(step.requeue_after, None);
    assert!(
        s.message
            .as_deref()
            .unwrap_or_default()
            .contains("until resumed")
    );

    // An indefinite pause holds however long.
    let later = next_status(
        &rollout(STEPS, Some(step.status.clone())),
        &pods,
        at(99_999),
    );
    assert_eq!(later.expect("runs").status, step.status);
}

#[test]
fn after_the_last_step_the_canary_is_promoted() {
    let doc = rollout(
        "[{setWeight: 20}, {pause: {duration: 10}}]",
        Some(status("aaa", "bbb", 1)),
    );
    let pods = live(&[("aaa", 0), ("bbb", 100)]);
    let held = next_status(&doc, &pods, at(200)).expect("runs");
    assert_eq!(held.status.current_step_index, Some(1));
    let done = next_status(
        &rollout(
            "[{setWeight: 20}, {pause: {duration: 10}}]",
            Some(held.status),
        ),
        &pods,
        at(210),
    )
    .expect("runs");
    let s = &done.status;
    assert_eq!(s.stable_rs.as_deref(), Some("bbb"));
    assert_eq!(s.current_pod_hash.as_deref(), Some("bbb"));
    assert_eq!(s.current_step_index, Some(2));
    assert_eq!(s.phase.as_deref(), Some(PHASE_HEALTHY));
    assert!(s.conditions.iter().all(|c| c.type_ != CONDITION_PAUSED));
    // Without steps, a new version is promoted at once.
    let doc = rollout("[]", Some(status("aaa", "aaa", 0)));
    let step = next_status(&doc, &pods, at(0)).expect("runs");
    assert_eq!(step.status.stable_rs.as_deref(), Some("bbb"));
}

#[test]
fn a_replaced_canary_starts_again_at_step_zero() {
    let mut s = status("aaa", "bbb", 3);
    s.conditions.push(RolloutCondition {
        type_: CONDITION_PAUSED.into(),
        status: "True".into(),
        last_transition_time: Some(Time(at(5))),
        ..RolloutCondition::default()
    });
    let pods = live(&[("aaa", 0), ("bbb", 100), ("ccc", 200)]);
    let step = next_status(&rollout(STEPS, Some(s)), &pods, at(300)).expect("runs");
    assert_eq!(step.status.current_pod_hash.as_deref(), Some("ccc"));
    assert_eq!(step.status.current_step_index, Some(1));
    assert_eq!(paused_since(&step.status), Some(at(300)));
}

/// A Pods list without the canary's pods (restarting, not yet listed, evicted) must not reset
/// the canary in progress to stable: the engine holds and nothing is rewritten.
#[test]
fn when_the_canary_pods_are_missing_the_canary_in_progress_is_held_not_reset() {
    let mut s = status("aaa", "bbb", 1);
    s.phase = Some(PHASE_PAUSED.into());
    let doc = rollout(STEPS, Some(s.clone()));
    let step = next_status(&doc, &live(&[("aaa", 0)]), at(0)).expect("runs");
    assert!(step.hold);
    assert_eq!(step.status, s, "the status is kept as it is");
    assert_eq!(step.status.current_pod_hash.as_deref(), Some("bbb"));
    assert_eq!(step.status.phase.as_deref(), Some(PHASE_PAUSED));

    // Settled (no canary in progress): still nothing to hold.
    let doc = rollout(STEPS, Some(status("aaa", "aaa", 4)));
    let step = next_status(&doc, &live(&[("aaa", 0)]), at(0)).expect("runs");
    assert!(!step.hold);
    assert_eq!(step.status.phase.as_deref(), Some(PHASE_HEALTHY));
}

#[test]
fn a_bad_pause_duration_names_its_step() {
    let doc = rollout("[{pause: {duration: soon}}]", Some(status("aaa", "aaa", 1)));
    let (field, problem) = next_status(&doc, &live(&[("aaa", 0), ("bbb", 1)]), at(0)).unwrap_err();
    assert_eq!(field, "spec.strategy.canary.steps[0].pause.duration");
    assert!(problem.contains("\"soon\""), "{problem}");
}

#[test]
fn invalid_marks_keep_their_transition_time_and_clear() {
    let mut s = RolloutStatus::default();
    mark_invalid(&mut s, "bad", at(1));
    mark_invalid(&mut s, "bad", at(9));
    assert_eq!(s.phase.as_deref(), Some(PHASE_DEGRADED));
    let condition = &s.conditions[0];
    assert_eq!(condition.type_, CONDITION_INVALID_SPEC);
    assert_eq!(condition.last_transition_time, Some(Time(at(1))));
    clear_invalid(&mut s);
    assert!(s.conditions.is_empty());
}

fn stable_weight(status: &RolloutStatus) -> i32 {
    status
        .canary
        .as_ref()
        .and_then(|c| c.weights.as_ref())
        .and_then(|w| w.stable.as_ref())
        .expect("stable weight")
        .weight
}

/// `rollout(steps, ..)` with `trafficRouting.maxTrafficWeight: max`.
fn rollout_max(max: i32, steps: &str, status: Option<RolloutStatus>) -> Rollout {
    let mut doc = rollout(steps, status);
    let canary = doc.spec.strategy.canary.as_mut().expect("canary");
    canary.traffic_routing =
        Some(serde_yaml::from_str(&format!("maxTrafficWeight: {max}")).expect("routing"));
    doc
}

#[test]
fn weights_are_written_in_units_of_max_traffic_weight() {
    let pods = live(&[("aaa", 0), ("bbb", 100)]);
    let doc = rollout_max(
        1000,
        "[{setWeight: 100}, {pause: {}}, {setWeight: 500}, {pause: {}}]",
        Some(status("aaa", "bbb", 0)),
    );
    let step = next_status(&doc, &pods, at(200)).expect("runs");
    assert_eq!(canary_weight(&step.status), 100, "10 % of 1000");
    assert_eq!(stable_weight(&step.status), 900);
    // Derivation reads it back as 10 %.
    let mut next = doc.clone();
    next.status = Some(step.status);
    let versions = ["aaa", "bbb"]
        .map(|h| (h.to_owned(), sluice_model::Version::default()))
        .into();
    let state =
        sluice_api::derive_rollout(&next, &versions, &["demo.local".into()]).expect("derives");
    assert_eq!(state.canary_weight_bp, 1000);

    let doc = rollout_max(
        1000,
        "[{setWeight: 100}, {pause: {}}]",
        Some(status("aaa", "aaa", 2)),
    );
    let settled = next_status(&doc, &live(&[("aaa", 0)]), at(0)).expect("runs");
    assert_eq!(canary_weight(&settled.status), 0);
    assert_eq!(stable_weight(&settled.status), 1000);
}

#[test]
fn weights_outside_the_total_are_errors_naming_the_step() {
    let pods = live(&[("aaa", 0), ("bbb", 100)]);
    // 42949673 and i32::MIN overflowed `100 - weight` or were written as they were.
    for (steps, field) in [
        ("[{setWeight: 42949673}, {pause: {}}]", "steps[0].setWeight"),
        (
            "[{setWeight: -2147483648}, {pause: {}}]",
            "steps[0].setWeight",
        ),
        (
            "[{setWeight: 20}, {pause: {}}, {setWeight: 101}]",
            "steps[2].setWeight",
        ),
    ] {
        let doc = rollout(steps, Some(status("aaa", "bbb", 0)));
        let (got, problem) = next_status(&doc, &pods, at(0)).unwrap_err();
        assert_eq!(got, format!("spec.strategy.canary.{field}"), "{steps}");
        assert!(problem.contains("0..=100"), "{problem}");
    }
    let doc = rollout_max(0, STEPS, Some(status("aaa", "bbb", 0)));
    let (field, _) = next_status(&doc, &pods, at(0)).unwrap_err();
    assert_eq!(
        field,
        "spec.strategy.canary.trafficRouting.maxTrafficWeight"
    );
}

#[test]
fn a_bare_number_in_a_string_pauses_that_many_seconds() {
    let steps = r#"[{setWeight: 20}, {pause: {duration: "10"}}, {setWeight: 40}, {pause: {}}]"#;
    let pods = live(&[("aaa", 0), ("bbb", 100)]);
    let step = next_status(
        &rollout(steps, Some(status("aaa", "bbb", 0))),
        &pods,
        at(100),
    )
    .expect("runs");
    assert_eq!(step.status.current_step_index, Some(1));
    assert_eq!(step.requeue_after, Some(Duration::from_secs(10)));
    let step = next_status(&rollout(steps, Some(step.status)), &pods, at(110)).expect("runs");
    assert_eq!(step.status.current_step_index, Some(3));
    assert_eq!(canary_weight(&step.status), 40);
}

#[test]
fn a_pause_that_started_at_the_end_of_time_holds() {
    let mut s = status("aaa", "bbb", 0);
    s.conditions.push(RolloutCondition {
        type_: CONDITION_PAUSED.into(),
        status: "True".into(),
        last_transition_time: Some(Time(Timestamp::MAX)),
        ..RolloutCondition::default()
    });
    let doc = rollout("[{pause: {duration: 1h}}, {setWeight: 50}]", Some(s));
    let step = next_status(&doc, &live(&[("aaa", 0), ("bbb", 100)]), at(0)).expect("runs");
    assert_eq!(step.status.current_step_index, Some(0));
    assert!(step.requeue_after.is_some());
}
