//! Blue/green (`spec.strategy.blueGreen`) through the engine, one transition per test, in the
//! simulated world of `common`: preview, pause, promote, the switch gated on every proxy's ACK,
//! the old version's scale-down delay, previewReplicaCount, autoPromotionSeconds, abort / retry,
//! scaleDownDelayRevisionLimit, and the corpus' blue/green example as a sluice.dev Rollout.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Sim, rollout};
use sluice_api::Rollout;
use sluice_release::BLUE_GREEN_PAUSE;

fn blue_green(replicas: i32, fields: &str) -> Rollout {
    let mut r = rollout(replicas, "app:1", "[]");
    r.spec.strategy.canary = None;
    r.spec.strategy.blue_green = Some(
        serde_yaml::from_str(&format!(
            "{{activeService: demo-active, previewService: demo-preview{fields}}}"
        ))
        .unwrap(),
    );
    r
}

/// A healthy blue/green rollout at app:1, then `kubectl set image` app:2 (not yet reconciled).
fn updated(replicas: i32, fields: &str) -> (Sim, String) {
    let mut sim = Sim::new(blue_green(replicas, fields));
    sim.settle();
    assert_eq!(sim.phase(), "Healthy");
    let old = sim.stable();
    sim.set_image("app:2");
    (sim, old)
}

fn selectors(sim: &Sim) -> (String, String) {
    let bg = sim.status().blue_green.clone().unwrap();
    (bg.active_selector.unwrap(), bg.preview_selector.unwrap())
}

#[test]
fn the_first_version_is_active_and_preview_at_once() {
    let mut sim = Sim::new(blue_green(3, ""));
    sim.settle();
    let hash = sim.stable();
    assert_eq!(sim.phase(), "Healthy");
    assert_eq!(selectors(&sim), (hash.clone(), hash.clone()));
    assert_eq!(sim.version(&hash).desired, 3);
    assert_eq!(sim.traffic().preview, None);
}

#[test]
fn auto_promotion_previews_then_switches_and_scales_the_old_version_down_after_the_delay() {
    let (mut sim, old) = updated(3, "");
    sim.pass();
    let new = sim.current();
    assert_ne!(new, old);
    // The new version at full size beside the old one.
    assert_eq!(sim.version(&new).desired, 3);
    sim.settle();
    // The preview was published (and ACKed) before the switch.
    let preview = sim
        .published
        .iter()
        .position(|(_, t)| t.preview.as_deref() == Some(new.as_str()) && t.stable == old)
        .unwrap_or_else(|| panic!("no preview: {:?}", sim.published));
    let switch = sim
        .published
        .iter()
        .position(|(_, t)| t.stable == new)
        .unwrap_or_else(|| panic!("no switch: {:?}", sim.published));
    assert!(preview < switch);
    // Switched: the active hosts route to the new version, which is stable.
    assert_eq!(sim.stable(), new);
    assert_eq!(selectors(&sim), (new.clone(), new.clone()));
    assert_eq!(sim.traffic().stable, new);
    assert_eq!(sim.traffic().preview, None);
    // The old version waits out scaleDownDelaySeconds (default 30).
    assert_eq!(sim.version(&old).desired, 3);
    sim.advance(29);
    sim.settle();
    assert_eq!(sim.version(&old).desired, 3);
    sim.advance(2);
    sim.settle();
    assert_eq!(sim.version(&old).desired, 0);
    assert_eq!(sim.phase(), "Healthy");
}

#[test]
fn the_old_version_stays_until_every_proxy_acked_the_switch() {
    let (mut sim, old) = updated(2, ", scaleDownDelaySeconds: 0");
    sim.auto_ack = false;
    // ACK everything up to the switch, not the switch itself.
    for _ in 0..20 {
        sim.pass();
        if sim.traffic().stable != old {
            break;
        }
        sim.ack_all();
    }
    let new = sim.current();
    assert_eq!(sim.traffic().stable, new, "the switch is published");
    for _ in 0..5 {
        sim.pass();
    }
    assert_eq!(
        sim.version(&old).desired,
        2,
        "a proxy may still route to it"
    );
    sim.ack_all();
    sim.settle();
    assert_eq!(sim.version(&old).desired, 0);
}

#[test]
fn without_auto_promotion_it_pauses_on_the_preview_until_promoted() {
    let (mut sim, old) = updated(2, ", autoPromotionEnabled: false");
    sim.settle();
    let new = sim.current();
    assert_eq!(sim.stable(), old);
    assert_eq!(selectors(&sim), (old.clone(), new.clone()));
    assert_eq!(sim.phase(), "Paused");
    assert!(sim.status().controller_pause);
    assert_eq!(sim.status().pause_conditions[0].reason, BLUE_GREEN_PAUSE);
    // Argo's message and Paused condition name the pause: BlueGreenPause, not CanaryPauseStep.
    assert_eq!(sim.status().message.as_deref(), Some(BLUE_GREEN_PAUSE));
    let paused = sim
        .status()
        .conditions
        .iter()
        .find(|c| c.type_ == "Paused")
        .cloned()
        .unwrap();
    assert_eq!(paused.reason.as_deref(), Some(BLUE_GREEN_PAUSE));
    // Time alone does not promote.
    sim.advance(3600);
    sim.settle();
    assert_eq!(sim.stable(), old);
    sim.promote();
    sim.settle();
    assert_eq!(sim.stable(), new);
    assert_eq!(selectors(&sim), (new.clone(), new));
    assert!(sim.status().pause_conditions.is_empty());
    assert!(!sim.status().controller_pause);
}

#[test]
fn auto_promotion_seconds_promote_after_the_pause() {
    let (mut sim, old) = updated(2, ", autoPromotionSeconds: 60");
    let out = sim.settle();
    let new = sim.current();
    assert_eq!(sim.stable(), old);
    assert_eq!(sim.phase(), "Paused");
    assert!(
        out.requeue_after.is_some_and(|d| d.as_secs() <= 60),
        "{out:?}"
    );
    sim.advance(59);
    sim.settle();
    assert_eq!(sim.stable(), old);
    sim.advance(2);
    sim.settle();
    assert_eq!(sim.stable(), new);
}

#[test]
fn preview_replica_count_scales_up_at_promotion_before_the_switch() {
    let (mut sim, old) = updated(4, ", previewReplicaCount: 1, autoPromotionEnabled: false");
    sim.settle();
    let new = sim.current();
    assert_eq!(sim.version(&new).desired, 1);
    assert_eq!(selectors(&sim).1, new);
    sim.kubelet = false;
    sim.promote();
    sim.pass();
    assert_eq!(sim.version(&new).desired, 4, "scaled up for promotion");
    assert_eq!(sim.stable(), old, "no switch before the pods are available");
    assert_eq!(sim.traffic().stable, old);
    sim.kubelet = true;
    let v = sim.versions.iter_mut().find(|v| v.hash == new).unwrap();
    v.ready = 4;
    v.available = 4;
    sim.settle();
    assert_eq!(sim.stable(), new);
}

#[test]
fn abort_goes_back_to_the_active_version_and_retry_previews_again() {
    let (mut sim, old) = updated(
        2,
        ", autoPromotionEnabled: false, abortScaleDownDelaySeconds: 10",
    );
    sim.settle();
    let new = sim.current();
    sim.abort();
    sim.settle();
    assert_eq!(sim.stable(), old);
    assert_eq!(sim.traffic().preview, None);
    assert_eq!(selectors(&sim), (old.clone(), old.clone()));
    assert_eq!(sim.phase(), "Degraded");
    assert_eq!(
        sim.version(&new).desired,
        2,
        "kept for abortScaleDownDelaySeconds"
    );
    sim.advance(11);
    sim.settle();
    assert_eq!(sim.version(&new).desired, 0);
    sim.retry();
    sim.settle();
    assert_eq!(sim.version(&new).desired, 2);
    assert_eq!(selectors(&sim), (old, new));
    assert_eq!(sim.phase(), "Paused");
}

#[test]
fn scale_down_delay_revision_limit_keeps_only_the_newest_old_versions_up() {
    let (mut sim, first) = updated(
        2,
        ", scaleDownDelayRevisionLimit: 1, scaleDownDelaySeconds: 600",
    );
    sim.settle();
    let second = sim.stable();
    assert_eq!(sim.version(&first).desired, 2, "within its delay");
    sim.set_image("app:3");
    sim.settle();
    let third = sim.stable();
    assert_ne!(third, second);
    // Two old versions running; the limit keeps the newest (second) only.
    assert_eq!(sim.version(&second).desired, 2);
    assert_eq!(sim.version(&first).desired, 0);
}

#[test]
fn a_spec_with_both_strategies_is_invalid_naming_the_field() {
    let mut r = blue_green(2, "");
    r.spec.strategy.canary = rollout(2, "app:1", "[]").spec.strategy.canary;
    let mut sim = Sim::new(r);
    sim.pass();
    assert_eq!(sim.phase(), "Degraded");
    assert!(
        sim.status()
            .message
            .as_deref()
            .unwrap()
            .contains("spec.strategy:"),
        "{:?}",
        sim.status().message
    );
}

#[test]
fn the_corpus_blue_green_example_runs_as_a_sluice_rollout() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/corpus/argo-rollouts/examples/rollout-bluegreen.yaml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("skipped: no corpus at {}", path.display());
        return;
    };
    let doc = text.split("\n---").next().unwrap();
    let yaml = doc.replace("argoproj.io/v1alpha1", sluice_api::SLUICE_API_VERSION);
    let mut r: Rollout = serde_yaml::from_str(&yaml).unwrap();
    r.metadata.namespace = Some("shop".into());
    r.metadata.uid = Some("uid-1".into());
    r.metadata.generation = Some(1);
    let mut sim = Sim::new(r);
    sim.settle();
    assert_eq!(sim.phase(), "Healthy");
    let old = sim.stable();
    sim.set_image("argoproj/rollouts-demo:green");
    sim.settle();
    // autoPromotionEnabled: false in the example: paused on the preview.
    let new = sim.current();
    assert_eq!(selectors(&sim), (old, new.clone()));
    assert_eq!(sim.phase(), "Paused");
    sim.promote();
    sim.settle();
    assert_eq!(selectors(&sim), (new.clone(), new));
}
