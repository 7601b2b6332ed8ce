//! The engine's versions and spec: rollback (window), revision history, hash collisions,
//! `workloadRef`, and specs it rejects naming the field, through the simulated world of `common`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{STEPS, Sim, rollout};
use sluice_release::{Action, pod_template_hash};

#[test]
fn a_rollback_within_the_window_reuses_the_replica_set_and_skips_the_steps() {
    let mut sim = Sim::with_stable("app:1", STEPS);
    sim.rollout.spec.rollback_window =
        Some(sluice_api::resource::RollbackWindowSpec { revisions: 2 });
    let first = sim.stable();
    sim.set_image("app:2");
    sim.settle();
    sim.promote_full();
    sim.settle();
    sim.advance(30);
    sim.settle();
    assert_eq!(sim.version(&first).desired, 0);
    let created = sim
        .actions
        .iter()
        .filter(|a| matches!(a, Action::CreateReplicaSet(_)))
        .count();

    sim.set_image("app:1");
    let out = sim.pass();
    assert_eq!(sim.current(), first);
    assert_eq!(sim.step(), 5, "within the window: no steps");
    assert!(out.actions.contains(&Action::SetRevision {
        name: format!("demo-{first}"),
        revision: 3
    }));
    sim.settle();
    assert_eq!(sim.stable(), first);
    assert_eq!(
        sim.actions
            .iter()
            .filter(|a| matches!(a, Action::CreateReplicaSet(_)))
            .count(),
        created
    );
    assert_eq!(sim.version(&first).revision, Some(3));
}

#[test]
fn a_rollback_outside_the_window_runs_the_steps() {
    let mut sim = Sim::with_stable("app:1", STEPS);
    let first = sim.stable();
    sim.set_image("app:2");
    sim.settle();
    sim.promote_full();
    sim.settle();
    sim.set_image("app:1");
    sim.settle();
    assert_eq!(sim.current(), first);
    assert_ne!(sim.stable(), first);
    assert_eq!(sim.step(), 1, "no rollbackWindow: the steps run again");
}

#[test]
fn old_versions_beyond_revision_history_limit_are_deleted() {
    let mut sim = Sim::with_stable("app:1", "[{setWeight: 50}]");
    sim.rollout.spec.revision_history_limit = Some(1);
    let mut hashes = vec![sim.stable()];
    for image in ["app:2", "app:3", "app:4"] {
        sim.set_image(image);
        sim.settle();
        sim.advance(30);
        sim.settle();
        hashes.push(sim.stable());
    }
    assert_eq!(
        sim.deleted,
        vec![format!("demo-{}", hashes[0]), format!("demo-{}", hashes[1])]
    );
    assert_eq!(sim.versions.len(), 2, "stable + 1 kept for rollback");
}

#[test]
fn a_hash_collision_bumps_the_collision_count() {
    let mut sim = Sim::new(rollout(2, "app:1", STEPS));
    let hash = pod_template_hash(sim.rollout.spec.template.as_ref().unwrap(), None).unwrap();
    sim.versions.push(sluice_release::ObservedVersion {
        name: format!("demo-{hash}"),
        hash: hash.clone(),
        controlled: false,
        ..Default::default()
    });
    sim.settle();
    assert_eq!(sim.status().collision_count, Some(1));
    assert_ne!(sim.stable(), hash);
    assert_eq!(sim.phase(), "Healthy");
}

#[test]
fn a_spec_the_engine_cannot_run_is_invalid_naming_the_field() {
    for (steps, field) in [
        (
            "[{setWeight: 150}]",
            "spec.strategy.canary.steps[0].setWeight",
        ),
        (
            "[{setWeight: 10}, {pause: {duration: 'soon'}}]",
            "spec.strategy.canary.steps[1].pause.duration",
        ),
        (
            "[{setWeight: 10, pause: {}}]",
            "spec.strategy.canary.steps[0]",
        ),
        (
            "[{setCanaryScale: {replicas: 1, weight: 5}}]",
            "spec.strategy.canary.steps[0].setCanaryScale",
        ),
        // Analysis steps run (tests/analysis_steps.rs); one without a template does not.
        (
            "[{analysis: {templates: []}}]",
            "spec.strategy.canary.steps[0].analysis.templates",
        ),
        (
            "[{setWeight: 10, analysis: {templates: [{templateName: x}]}}]",
            "spec.strategy.canary.steps[0]",
        ),
    ] {
        let mut sim = Sim::new(rollout(2, "app:1", steps));
        let out = sim.pass();
        assert_eq!(sim.phase(), "Degraded", "{steps}");
        let message = sim.status().message.clone().unwrap();
        assert!(
            message.starts_with(&format!("InvalidSpec: {field}:")),
            "{steps}: {message}"
        );
        assert!(
            out.actions
                .iter()
                .all(|a| matches!(a, Action::Event { warning: true, .. })),
            "{steps}"
        );
        let invalid = sim
            .status()
            .conditions
            .iter()
            .find(|c| c.type_ == "InvalidSpec")
            .unwrap();
        assert_eq!(invalid.status, "True");
    }
    let mut wrong_selector = rollout(2, "app:1", STEPS);
    wrong_selector.spec.selector.as_mut().unwrap().match_labels =
        Some([("app".to_owned(), "other".to_owned())].into());
    let mut sim = Sim::new(wrong_selector);
    sim.pass();
    assert!(
        sim.status()
            .message
            .as_deref()
            .unwrap()
            .starts_with("InvalidSpec: spec.template.metadata.labels:")
    );
}

#[test]
fn the_rollback_window_counts_as_argo_documents_it() {
    // Argo's docs: revisions 1..5, `rollbackWindow.revisions: 3`: back to 4 or 3 skips the steps,
    // back to 2 does not.
    for (back_to, skips) in [(4usize, true), (3, true), (2, false)] {
        let mut sim = Sim::with_stable("app:1", STEPS);
        sim.rollout.spec.rollback_window =
            Some(sluice_api::resource::RollbackWindowSpec { revisions: 3 });
        for image in ["app:2", "app:3", "app:4", "app:5"] {
            sim.set_image(image);
            sim.settle();
            sim.promote_full();
            sim.settle();
        }
        assert_eq!(sim.version(&sim.stable()).revision, Some(5));
        sim.set_image(&format!("app:{back_to}"));
        sim.settle();
        let skipped = sim.stable() == sim.current();
        assert_eq!(skipped, skips, "back to revision {back_to}");
    }
}

/// A rollout that runs the template of Deployment `web` (Argo's `workloadRef`).
fn workload_sim(scale_down: &str) -> Sim {
    let mut doc = rollout(4, "app:1", "[{setWeight: 25}, {pause: {}}]");
    doc.spec.template = None;
    doc.spec.workload_ref = Some(sluice_api::resource::WorkloadRef {
        api_version: Some("apps/v1".into()),
        kind: Some("Deployment".into()),
        name: Some("web".into()),
        scale_down: Some(scale_down.into()),
    });
    let template = rollout(4, "app:1", "[]").spec.template.unwrap();
    let mut sim = Sim::new(doc);
    sim.workload = Some(sluice_release::ObservedWorkload {
        name: "web".into(),
        template,
        selector: None,
        replicas: 4,
    });
    sim
}

#[test]
fn workload_ref_onsuccess_scales_the_deployment_down_once_healthy() {
    let mut sim = workload_sim("onsuccess");
    sim.kubelet = false;
    sim.settle();
    assert_eq!(
        sim.versions.len(),
        1,
        "a ReplicaSet from the Deployment's template"
    );
    assert_eq!(
        sim.workload.as_ref().unwrap().replicas,
        4,
        "not Healthy yet"
    );
    for v in &mut sim.versions {
        v.available = v.desired;
    }
    sim.settle();
    assert_eq!(sim.phase(), "Healthy");
    assert_eq!(sim.workload.as_ref().unwrap().replicas, 0);

    // A new template in the Deployment starts a canary.
    let workload = sim.workload.as_mut().unwrap();
    workload.template.spec.as_mut().unwrap().containers[0].image = Some("app:2".into());
    sim.kubelet = true;
    sim.settle();
    assert_ne!(sim.current(), sim.stable());
    assert_eq!((sim.step(), sim.traffic().canary_weight), (1, 25));
}

#[test]
fn workload_ref_progressively_hands_the_replicas_over() {
    let mut sim = workload_sim("progressively");
    sim.kubelet = false;
    sim.settle();
    sim.versions[0].available = 3;
    sim.settle();
    assert_eq!(sim.workload.as_ref().unwrap().replicas, 1);
    sim.versions[0].available = 4;
    sim.settle();
    assert_eq!(sim.workload.as_ref().unwrap().replicas, 0);
}

#[test]
fn workload_ref_never_leaves_the_deployment_alone() {
    let mut sim = workload_sim("never");
    sim.settle();
    assert_eq!(sim.phase(), "Healthy");
    assert_eq!(sim.workload.as_ref().unwrap().replicas, 4);
    assert!(
        !sim.actions
            .iter()
            .any(|a| matches!(a, Action::ScaleDeployment { .. }))
    );
}

#[test]
fn workload_ref_errors_name_the_field() {
    let mut sim = workload_sim("never");
    sim.workload = None;
    sim.pass();
    assert_eq!(
        sim.status().message.as_deref(),
        Some("InvalidSpec: spec.workloadRef.name: Deployment \"web\" not found")
    );
    let mut sim = workload_sim("sometimes");
    sim.pass();
    assert!(
        sim.status()
            .message
            .as_deref()
            .unwrap()
            .starts_with("InvalidSpec: spec.workloadRef.scaleDown:")
    );
    let mut sim = workload_sim("never");
    sim.rollout.spec.template = rollout(4, "app:1", "[]").spec.template;
    sim.pass();
    assert!(
        sim.status()
            .message
            .as_deref()
            .unwrap()
            .starts_with("InvalidSpec: spec.template: must be empty")
    );
}
