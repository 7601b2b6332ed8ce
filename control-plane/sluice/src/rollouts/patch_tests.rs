use k8s_openapi::api::apps::v1::ReplicaSet;
use serde_json::{Value, json};
use sluice_api::Rollout;

use super::*;

fn rollout(value: Value) -> Rollout {
    let mut doc = json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
                         "metadata": {"name": "demo", "namespace": "shop", "uid": "uid-1"},
                         "spec": {}});
    if let (Some(doc), Some(extra)) = (doc.as_object_mut(), value.as_object()) {
        doc.extend(extra.clone());
    }
    serde_json::from_value(doc).expect("rollout")
}

fn steps(n: usize) -> Value {
    json!(
        (0..n)
            .map(|i| json!({"setWeight": (i + 1) * 10}))
            .collect::<Vec<_>>()
    )
}

#[test]
fn promote_clears_pause_conditions_and_unpauses_as_argo() {
    // Paused at a `pause: {}` step, with a user pause too.
    let ro = rollout(json!({
        "spec": {"paused": true, "strategy": {"canary": {"steps": steps(3)}}},
        "status": {"currentStepIndex": 1, "stableRS": "a", "currentPodHash": "b",
                   "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-01-01T00:00:00Z"}]}
    }));
    let p = promote(&ro, false);
    assert_eq!(p.status, Some(json!({"status": {"pauseConditions": null}})));
    assert_eq!(p.spec, Some(json!({"spec": {"paused": false}})));
    assert_eq!(
        p.unified,
        json!({"spec": {"paused": false}, "status": {"pauseConditions": null}})
    );
}

#[test]
fn promote_without_pause_conditions_skips_the_current_step() {
    let ro = rollout(json!({
        "spec": {"strategy": {"canary": {"steps": steps(3)}}},
        "status": {"currentStepIndex": 1, "stableRS": "a", "currentPodHash": "b"}
    }));
    let p = promote(&ro, false);
    assert_eq!(
        p.status,
        Some(json!({"status": {"pauseConditions": null, "currentStepIndex": 2}}))
    );
    assert_eq!(p.spec, None, "not paused: no spec patch");
    // At the end already: the index does not move past the number of steps.
    let done = rollout(json!({
        "spec": {"strategy": {"canary": {"steps": steps(3)}}},
        "status": {"currentStepIndex": 3}
    }));
    assert_eq!(
        promote(&done, false).status,
        Some(json!({"status": {"pauseConditions": null, "currentStepIndex": 3}}))
    );
    // No status yet: index 0 → 1.
    let fresh = rollout(json!({"spec": {"strategy": {"canary": {"steps": steps(2)}}}}));
    assert_eq!(
        promote(&fresh, false).status,
        Some(json!({"status": {"pauseConditions": null, "currentStepIndex": 1}}))
    );
    // No steps: nothing to patch in the status.
    let no_steps = rollout(json!({"spec": {"strategy": {"canary": {}}}}));
    assert_eq!(promote(&no_steps, false).status, None);
}

#[test]
fn promote_full_sets_promote_full_only_during_an_update() {
    let ro = rollout(json!({
        "spec": {"paused": true, "strategy": {"canary": {"steps": steps(2)}}},
        "status": {"stableRS": "a", "currentPodHash": "b"}
    }));
    let p = promote(&ro, true);
    assert_eq!(p.status, Some(json!({"status": {"promoteFull": true}})));
    assert_eq!(p.spec, Some(json!({"spec": {"paused": false}})));
    assert_eq!(
        p.unified,
        json!({"spec": {"paused": false}, "status": {"promoteFull": true}})
    );
    let healthy = rollout(json!({"status": {"stableRS": "a", "currentPodHash": "a"}}));
    let p = promote(&healthy, true);
    assert_eq!((p.status, p.spec), (None, None));
}

#[test]
fn abort_retry_pause_restart_patch_argos_fields() {
    assert_eq!(
        abort(),
        MergePatch {
            status: true,
            body: json!({"status": {"abort": true}})
        }
    );
    assert_eq!(
        retry(),
        MergePatch {
            status: true,
            body: json!({"status": {"abort": false}})
        }
    );
    assert_eq!(
        pause(),
        MergePatch {
            status: false,
            body: json!({"spec": {"paused": true}})
        }
    );
    let at: Timestamp = "2026-11-30T09:15:42.123456Z".parse().expect("time");
    assert_eq!(
        restart(at),
        MergePatch {
            status: false,
            body: json!({"spec": {"restartAt": "2026-11-30T09:15:42Z"}})
        }
    );
}

fn replica_set(name: &str, revision: Option<&str>, owner: &str, image: &str) -> ReplicaSet {
    let mut annotations = serde_json::Map::new();
    if let Some(r) = revision {
        annotations.insert("rollout.sluice.dev/revision".into(), json!(r));
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations,
                     "labels": {"rollouts-pod-template-hash": name},
                     "ownerReferences": [{"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
                                          "name": "demo", "uid": owner, "controller": true}]},
        "spec": {"selector": {"matchLabels": {"app": "demo"}},
                 "template": {"metadata": {"labels": {"app": "demo", "rollouts-pod-template-hash": name}},
                              "spec": {"containers": [{"name": "app", "image": image}]}}}
    }))
    .expect("replica set")
}

#[test]
fn undo_goes_to_the_revision_before_the_latest_or_the_one_named() {
    let ro = rollout(json!({}));
    let sets = vec![
        replica_set("r1", Some("1"), "uid-1", "app:1"),
        replica_set("r3", Some("3"), "uid-1", "app:3"),
        replica_set("r2", Some("2"), "uid-1", "app:2"),
        replica_set("foreign", Some("9"), "uid-other", "app:9"),
    ];
    let name = |rs: &ReplicaSet| rs.metadata.name.clone().unwrap_or_default();
    assert_eq!(undo_target(&ro, &sets, 0).map(name), Ok("r2".into()));
    assert_eq!(undo_target(&ro, &sets, 1).map(name), Ok("r1".into()));
    assert_eq!(
        undo_target(&ro, &sets, 9).map(name),
        Err(UndoError::RevisionNotInHistory(9)),
        "another owner's ReplicaSet is not in the history"
    );
    assert_eq!(
        undo_target(&ro, &sets[..1], 0).map(name),
        Err(UndoError::PreviousNotFound("demo".into()))
    );
}

#[test]
fn undo_replaces_the_template_without_the_hash_label_or_skips_when_equal() {
    let rs = replica_set("r1", Some("1"), "uid-1", "app:1");
    let current = json!({"metadata": {"labels": {"app": "demo"}},
                         "spec": {"containers": [{"name": "app", "image": "app:2"}]}});
    let patch = undo(Some(&current), &rs).expect("patch").expect("differs");
    assert_eq!(
        patch,
        json!([{"op": "replace", "path": "/spec/template", "value": {
            "metadata": {"labels": {"app": "demo"}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}])
    );
    let same = json!({"metadata": {"labels": {"app": "demo"}},
                      "spec": {"containers": [{"name": "app", "image": "app:1"}]}});
    assert_eq!(undo(Some(&same), &rs), Ok(None));
}

#[test]
fn derivative_ignores_what_the_first_leaves_unset() {
    assert!(derivative(
        &json!({"a": 1, "b": ""}),
        &json!({"a": 1, "b": "x", "c": 2})
    ));
    assert!(!derivative(&json!({"a": 1}), &json!({"a": 2})));
    assert!(!derivative(&json!([1, 2]), &json!([1])));
    assert!(!derivative(&json!({"a": 1}), &json!({})));
}

#[test]
fn set_image_changes_the_named_container_or_all_and_names_a_missing_one() {
    let mut object = json!({"spec": {"template": {"spec": {
        "initContainers": [{"name": "init", "image": "busybox:1"}],
        "containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 80}]},
                       {"name": "side", "image": "side:1"}]}}},
        "status": {"keep": "me"}});
    set_image(&mut object, "app", "app:2").expect("found");
    assert_eq!(
        object["spec"]["template"]["spec"]["containers"][0]["image"],
        "app:2"
    );
    assert_eq!(
        object["spec"]["template"]["spec"]["containers"][1]["image"],
        "side:1"
    );
    assert_eq!(
        object["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"], 80,
        "other fields kept"
    );
    set_image(&mut object, "*", "all:3").expect("found");
    assert_eq!(
        object["spec"]["template"]["spec"]["initContainers"][0]["image"],
        "all:3"
    );
    assert_eq!(
        object["spec"]["template"]["spec"]["containers"][1]["image"],
        "all:3"
    );
    assert_eq!(
        set_image(&mut object, "nope", "x:1"),
        Err("unable to find container named \"nope\"".into())
    );
    assert_eq!(parse_container_image("app=app:2"), Ok(("app", "app:2")));
    assert!(parse_container_image("app").is_err());
    assert!(parse_container_image("=x").is_err());
    assert!(parse_container_image("a=b=c").is_err());
}
