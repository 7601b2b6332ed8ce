//! The `Experiment` object (`kubectl get experiment`) through the Kubernetes driver against the
//! in-memory API server and kubelet: created when the experiment step starts, owned by the
//! Rollout (controller, blockOwnerDeletion) and labelled with the canary's hash; its status
//! follows the run (Pending → Running → Successful); a failed analysis leaves it Failed and the
//! rollout aborted; a restarted controller adopts it (one object, the same uid); an object of
//! another owner under its name is left alone; it goes when its version's ReplicaSet does.

#[path = "common/kube.rs"]
mod kube_common;

use kube_common::*;
use serde_json::{Value, json};
use sluice_e2e::{
    kube_api::{ApiServer, Key},
    kubelet::Kubelet,
};

/// A server with the kubelet, the Service, an AnalysisTemplate `ok` asking `url` (when given)
/// and the rollout at v1 with `experiment` as its second step; the source running.
async fn at_v1(experiment: Value, url: Option<&str>) -> (ApiServer, Kubelet, Source) {
    let server = ApiServer::start().await.expect("api server");
    let kubelet = Kubelet::start(&server);
    server.create("services", demo_service()).expect("service");
    if let Some(url) = url {
        server
            .create("analysistemplates", ok_template(url))
            .expect("template");
    }
    let steps = json!([{"setWeight": 20}, {"experiment": experiment}, {"pause": {}}]);
    server
        .create("rollouts", demo_rollout(steps))
        .expect("rollout");
    let source = start_source(&server);
    until_object(&server, &rollout_key(), "v1 Healthy", |r| {
        r["status"]["phase"] == "Healthy"
    })
    .await;
    (server, kubelet, source)
}

/// Sets image v2; returns the experiment's object key (`demo-<v2 hash>-1`) and v2's hash.
async fn release_v2(server: &ApiServer) -> (Key, String) {
    server
        .merge_patch(
            &rollout_key(),
            &json!({"spec": {"template": {"spec": {"containers": container("demo:v2")}}}}),
            false,
        )
        .expect("set image");
    let rollout = until_object(server, &rollout_key(), "v2 at the experiment", |r| {
        r["status"]["experiment"]["name"].is_string()
    })
    .await;
    let canary = rollout["status"]["currentPodHash"]
        .as_str()
        .expect("canary")
        .to_owned();
    (
        Key::new(EXPERIMENTS, "prod", &format!("demo-{canary}-1")),
        canary,
    )
}

/// The experiment's phases as its object went through them, until `last`.
async fn phases_until(server: &ApiServer, key: &Key, last: &str) -> Vec<String> {
    let mut phases: Vec<String> = Vec::new();
    let mut rv = 0;
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        if let Some(phase) = server
            .get(key)
            .and_then(|e| e["status"]["phase"].as_str().map(str::to_owned))
            && phases.last() != Some(&phase)
        {
            phases.push(phase);
        }
        if phases.last().map(String::as_str) == Some(last) {
            return phases;
        }
        match tokio::time::timeout_at(deadline, server.shared().changed_after(rv)).await {
            Ok(next) => rv = next,
            Err(_) => panic!(
                "timed out waiting for {last}: {phases:?} {:#}",
                server.get(key).unwrap_or(Value::Null)
            ),
        }
    }
}

fn assert_owned_and_labelled(experiment: &Value, rollout: &Value, canary: &str) {
    let owner = &experiment["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Rollout");
    assert_eq!(owner["name"], "demo");
    assert_eq!(owner["uid"], rollout["metadata"]["uid"]);
    assert_eq!(owner["controller"], true);
    assert_eq!(owner["blockOwnerDeletion"], true);
    assert_eq!(
        experiment["metadata"]["labels"]["rollouts-pod-template-hash"],
        canary
    );
}

#[tokio::test]
async fn the_experiment_object_follows_the_run_to_successful_and_a_restart_adopts_it() {
    let experiment = json!({"duration": "3s", "templates": [
        {"name": "baseline", "specRef": "stable", "weight": 10},
        {"name": "canary", "specRef": "canary", "replicas": 2}
    ]});
    let (server, _kubelet, source) = at_v1(experiment, None).await;
    let (key, canary) = release_v2(&server).await;
    let phases = phases_until(&server, &key, "Running").await;
    let object = server.get(&key).expect("the Experiment");
    assert_eq!(object["kind"], "Experiment");
    assert_owned_and_labelled(
        &object,
        &server.get(&rollout_key()).unwrap_or_default(),
        &canary,
    );
    let spec = &object["spec"];
    assert_eq!(spec["duration"], "3s");
    assert_eq!(spec["templates"][0]["name"], "baseline");
    assert_eq!(spec["templates"][1]["replicas"], 2);
    let status = &object["status"];
    assert!(status["availableAt"].is_string(), "{status:#}");
    assert_eq!(status["templateStatuses"][1]["availableReplicas"], 2);
    let rollout = server.get(&rollout_key()).expect("rollout");
    assert_eq!(
        status["templateStatuses"], rollout["status"]["experiment"]["templateStatuses"],
        "the object's status is the rollout's status.experiment"
    );
    let uid = object["metadata"]["uid"].clone();

    // A restart while it runs: the new controller meets the object and goes on with it.
    source.stop().await;
    let source = start_source(&server);
    let mut all = phases;
    all.extend(phases_until(&server, &key, "Successful").await);
    all.dedup();
    assert_eq!(all, ["Pending", "Running", "Successful"]);
    let experiments = server.list(EXPERIMENTS, Some("prod"));
    assert_eq!(experiments.len(), 1, "one object: {experiments:#?}");
    let done = &experiments[0];
    assert_eq!(done["metadata"]["uid"], uid, "adopted, not re-created");
    assert_eq!(done["status"]["message"], "the duration passed");
    assert_eq!(done["spec"]["terminate"], Value::Null);
    until_object(&server, &rollout_key(), "the next step", |r| {
        r["status"]["currentStepIndex"] == 2
    })
    .await;
    // Left after the step, as Argo leaves a completed Experiment of the rollout's version.
    assert!(server.get(&key).is_some());
    source.stop().await;
}

#[tokio::test]
async fn a_failed_analysis_leaves_the_experiment_failed_and_the_rollout_aborted() {
    let upstream = sluice_e2e::upstream::Upstream::start(r#"{"ok": 0}"#)
        .await
        .expect("upstream");
    let url = format!("http://{}/", upstream.addr());
    let experiment = json!({"templates": [{"name": "canary", "specRef": "canary"}],
        "analyses": [{"name": "check", "templateName": "ok", "requiredForCompletion": true}]});
    let (server, _kubelet, source) = at_v1(experiment, Some(&url)).await;
    let (key, _) = release_v2(&server).await;
    let phases = phases_until(&server, &key, "Failed").await;
    assert_eq!(
        phases.first().map(String::as_str),
        Some("Pending"),
        "{phases:?}"
    );
    let object = server.get(&key).expect("the Experiment");
    let run = object["status"]["analysisRuns"][0].clone();
    assert_eq!(run["name"], "check");
    assert_eq!(run["phase"], "Failed");
    assert!(
        server
            .get(&Key::new(
                ANALYSIS_RUNS,
                "prod",
                run["analysisRun"].as_str().unwrap_or("")
            ))
            .is_some()
    );
    until_object(&server, &rollout_key(), "the rollout aborted", |r| {
        r["status"]["abort"] == true
    })
    .await;
    source.stop().await;
}

#[tokio::test]
async fn an_abort_terminates_the_experiment_and_another_owners_object_is_left_alone() {
    let experiment = json!({"templates": [{"name": "canary", "specRef": "canary"}]});
    let (server, _kubelet, source) = at_v1(experiment, None).await;
    let (key, _) = release_v2(&server).await;
    phases_until(&server, &key, "Running").await;
    server
        .merge_patch(&rollout_key(), &json!({"status": {"abort": true}}), true)
        .expect("abort");
    until_object(&server, &key, "the experiment terminated", |e| {
        e["spec"]["terminate"] == true && e["status"]["phase"] == "Successful"
    })
    .await;
    let object = server.get(&key).expect("the Experiment");
    assert_eq!(
        object["status"]["message"],
        "terminated: the rollout was aborted"
    );
    source.stop().await;

    // An object of another owner under the name of the next experiment is not taken over.
    let (server, _kubelet, source) = at_v1(
        json!({"templates": [{"name": "canary", "specRef": "canary"}]}),
        None,
    )
    .await;
    server
        .merge_patch(
            &rollout_key(),
            &json!({"spec": {"template": {"spec": {"containers": container("demo:v2")}}}}),
            false,
        )
        .expect("set image");
    let rollout = until_object(&server, &rollout_key(), "v2", |r| {
        r["status"]["currentPodHash"] != r["status"]["stableRS"]
    })
    .await;
    let name = format!(
        "demo-{}-1",
        rollout["status"]["currentPodHash"].as_str().unwrap_or("")
    );
    let foreign = json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Experiment",
        "metadata": {"name": name, "namespace": "prod", "ownerReferences": [{
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout", "name": "other",
            "uid": "someone-else", "controller": true}]},
        "spec": {"templates": []}});
    // The step before the experiment waits for the canary's pods, so the object comes first.
    server
        .create("experiments", foreign)
        .expect("the other owner's object first");
    until_object(&server, &rollout_key(), "the experiment running", |r| {
        r["status"]["experiment"]["phase"] == "Running"
    })
    .await;
    let object = server
        .get(&Key::new(EXPERIMENTS, "prod", &name))
        .expect("object");
    assert_eq!(
        object["metadata"]["ownerReferences"][0]["uid"],
        "someone-else"
    );
    assert_eq!(object["status"], Value::Null, "its status is not written");
    source.stop().await;
}

#[tokio::test]
async fn an_experiment_goes_with_its_versions_replica_set() {
    let server = ApiServer::start().await.expect("api server");
    let _kubelet = Kubelet::start(&server);
    server.create("services", demo_service()).expect("service");
    let mut rollout = demo_rollout(json!([{"experiment": {"duration": "1s",
        "templates": [{"name": "canary", "specRef": "canary"}]}}]));
    rollout["spec"]["revisionHistoryLimit"] = json!(0);
    server.create("rollouts", rollout).expect("rollout");
    let source = start_source(&server);
    until_object(&server, &rollout_key(), "v1 Healthy", |r| {
        r["status"]["phase"] == "Healthy"
    })
    .await;
    let mut keys = Vec::new();
    for image in ["demo:v2", "demo:v3"] {
        server
            .merge_patch(
                &rollout_key(),
                &json!({"spec": {"template": {"spec": {"containers": container(image)}}}}),
                false,
            )
            .expect("set image");
        let rollout = until_object(&server, &rollout_key(), "the experiment", |r| {
            let canary = r["status"]["currentPodHash"].as_str().unwrap_or("-");
            r["status"]["experiment"]["name"]
                .as_str()
                .is_some_and(|n| n.contains(canary))
                && r["status"]["currentPodHash"] != r["status"]["stableRS"]
        })
        .await;
        // Step 0: `demo-<hash>-0`.
        let name = rollout["status"]["experiment"]["name"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(name.ends_with("-0"), "{name}");
        let key = Key::new(EXPERIMENTS, "prod", &name);
        phases_until(&server, &key, "Successful").await;
        until_object(&server, &rollout_key(), "promoted", |r| {
            r["status"]["phase"] == "Healthy"
                && r["status"]["stableRS"] == r["status"]["currentPodHash"]
        })
        .await;
        keys.push(key);
    }
    // v2's ReplicaSet goes (revisionHistoryLimit 0) once v3 is stable, and its Experiment with it.
    let start = tokio::time::Instant::now();
    while server.get(&keys[0]).is_some() {
        assert!(start.elapsed() < WITHIN, "v2's Experiment not deleted");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(server.get(&keys[1]).is_some(), "v3's stays");
    source.stop().await;
}
