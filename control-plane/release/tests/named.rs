//! Named versions (`spec.version`, standalone mode): the engine runs a rollout whose versions are
//! keys of `spec.staticEndpoints` exactly as one whose versions are hashed from a pod template.
#![allow(clippy::unwrap_used)]

mod common;

use common::{STEPS, Sim};
use sluice_api::Rollout;
use sluice_release::Action;

/// A standalone rollout `demo` releasing `version`, with versions `v1` and `v2`.
fn named(version: &str, steps: &str) -> Rollout {
    let yaml = format!(
        "apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {{name: demo, namespace: shop, uid: uid-1, generation: 1}}
spec:
  replicas: 1
  version: {version}
  hosts: [demo.local]
  staticEndpoints:
    v1: ['127.0.0.1:8001']
    v2: ['127.0.0.1:8002']
  strategy:
    canary:
      steps: {steps}
"
    );
    serde_yaml::from_str(&yaml).unwrap()
}

fn set_version(sim: &mut Sim, version: &str) {
    sim.rollout.spec.version = Some(version.into());
    let generation = sim.rollout.metadata.generation.unwrap_or(1);
    sim.rollout.metadata.generation = Some(generation + 1);
}

#[test]
fn the_first_named_version_is_stable_at_once() {
    let mut sim = Sim::new(named("v1", STEPS));
    let out = sim.settle();
    assert_eq!(sim.phase(), "Healthy", "{:?}", out.status);
    assert_eq!((sim.stable(), sim.current()), ("v1".into(), "v1".into()));
    assert_eq!(sim.traffic().stable, "v1");
    assert_eq!(sim.traffic().canary, None);
    // The version's "ReplicaSet" is named after it.
    assert!(sim.actions.iter().any(
        |a| matches!(a, Action::CreateReplicaSet(rs) if rs.metadata.name.as_deref() == Some("demo-v1"))
    ));
    assert_eq!(sim.version("v1").desired, 1);
}

#[test]
fn changing_the_named_version_starts_a_canary_and_the_steps_run() {
    let mut sim = Sim::new(named("v1", STEPS));
    sim.settle();
    set_version(&mut sim, "v2");
    sim.settle();
    assert_eq!((sim.stable(), sim.current()), ("v1".into(), "v2".into()));
    // Step 0 (setWeight 10) done, step 1 (pause 60 s) holds.
    assert_eq!(sim.step(), 1);
    assert_eq!(sim.traffic().canary.as_deref(), Some("v2"));
    assert_eq!(sim.traffic().canary_weight, 10);
    assert_eq!(sim.phase(), "Paused");
    let out = sim.pass();
    assert_eq!(out.requeue_after, Some(std::time::Duration::from_secs(60)));
    sim.advance(60);
    sim.settle();
    // setWeight 50, then `pause: {}` holds until promoted.
    assert_eq!((sim.step(), sim.traffic().canary_weight), (3, 50));
    sim.promote();
    sim.settle();
    assert_eq!(sim.stable(), "v2");
    assert_eq!(sim.traffic().canary, None);
    assert_eq!(sim.traffic().stable, "v2");
    assert_eq!(sim.phase(), "Healthy");
}

#[test]
fn abort_sends_everything_back_to_the_named_stable() {
    let mut sim = Sim::new(named("v1", STEPS));
    sim.settle();
    set_version(&mut sim, "v2");
    sim.settle();
    sim.abort();
    sim.settle();
    assert_eq!(sim.traffic().stable, "v1");
    assert_eq!(sim.traffic().canary_weight, 0);
    assert_eq!(sim.phase(), "Degraded");
    sim.retry();
    sim.settle();
    assert_eq!((sim.step(), sim.traffic().canary_weight), (1, 10));
}

#[test]
fn a_named_version_must_be_a_static_endpoints_key_and_excludes_a_template() {
    let mut sim = Sim::new(named("v3", STEPS));
    sim.settle();
    assert_eq!(sim.phase(), "Degraded");
    let message = sim.status().message.clone().unwrap();
    assert!(
        message.contains("spec.version") && message.contains("\"v3\""),
        "{message}"
    );
    let mut with_template = named("v1", STEPS);
    with_template.spec.template = common::rollout(1, "app:1", STEPS).spec.template;
    let mut sim = Sim::new(with_template);
    sim.settle();
    let message = sim.status().message.clone().unwrap();
    assert!(message.contains("spec.template"), "{message}");
}
