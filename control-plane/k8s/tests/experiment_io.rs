//! An experiment step through the Kubernetes driver against the in-memory API server and
//! kubelet: the templates' ReplicaSets are created with versions of their own and their pods
//! run, the status carries their weights (`status.dataPlane.traffic.additional`,
//! `status.canary.weights.additional`) and the running experiment, and when its duration has
//! passed the step is done and the ReplicaSets are scaled to 0 and deleted.

#[path = "common/kube.rs"]
mod kube_common;

use std::time::{Duration, Instant};

use kube_common::*;
use serde_json::{Value, json};
use sluice_e2e::{
    kube_api::{ApiServer, Key},
    kubelet::Kubelet,
};

#[tokio::test]
async fn an_experiment_runs_its_templates_as_replica_sets_then_removes_them() {
    let server = ApiServer::start().await.expect("api server");
    let kubelet = Kubelet::start(&server);
    server.create("services", demo_service()).expect("service");
    let steps = json!([
        {"setWeight": 20},
        {"experiment": {"duration": "2s", "templates": [
            {"name": "baseline", "specRef": "stable", "weight": 10},
            {"name": "canary", "specRef": "canary", "weight": 10}
        ]}},
        {"pause": {}}
    ]);
    server
        .create("rollouts", demo_rollout(steps))
        .expect("rollout");
    let mut source = start_source(&server);
    let stable = until_object(&server, &rollout_key(), "v1 Healthy", |r| {
        r["status"]["phase"] == "Healthy"
    })
    .await["status"]["stableRS"]
        .as_str()
        .expect("stableRS")
        .to_owned();

    server
        .merge_patch(
            &rollout_key(),
            &json!({"spec": {"template": {"spec": {"containers": container("demo:v2")}}}}),
            false,
        )
        .expect("set image");
    let running = until_object(&server, &rollout_key(), "the experiment running", |r| {
        r["status"]["experiment"]["phase"] == "Running"
    })
    .await;
    let status = &running["status"];
    let canary = status["currentPodHash"]
        .as_str()
        .expect("canary")
        .to_owned();
    let name = format!("demo-{canary}-1");
    assert_eq!(status["canary"]["currentExperiment"], name.as_str());
    let additional = status["dataPlane"]["traffic"]["additional"]
        .as_array()
        .expect("additional")
        .clone();
    assert_eq!(additional.len(), 2, "{additional:#?}");
    assert_eq!(status["canary"]["weights"]["additional"], json!(additional));
    assert_eq!(status["canary"]["weights"]["stable"]["weight"], 60);
    let mut hashes = Vec::new();
    for template in ["baseline", "canary"] {
        let key = Key::new(REPLICA_SETS, "prod", &format!("{name}-{template}"));
        let rs = server.get(&key).expect("template ReplicaSet");
        let hash = rs["metadata"]["labels"]["rollouts-pod-template-hash"]
            .as_str()
            .expect("hash")
            .to_owned();
        assert!(hash != stable && hash != canary, "{template}: {hash}");
        assert_eq!(
            rs["metadata"]["annotations"]["rollout.sluice.dev/experiment"],
            name.as_str()
        );
        assert_eq!(rs["spec"]["replicas"], 1);
        hashes.push(hash);
    }
    // The baseline runs the stable's image.
    let baseline = server
        .get(&Key::new(REPLICA_SETS, "prod", &format!("{name}-baseline")))
        .expect("baseline");
    assert_eq!(
        baseline["spec"]["template"]["spec"]["containers"][0]["image"],
        "demo:v1"
    );
    // Their pods run and are versions of the rollout's traffic state, each with its endpoint
    // (the data plane routes to them by hash; their weights are helper B's derivation).
    source
        .until("the templates' endpoints", |s| {
            s.rollouts.get("prod/demo").is_some_and(|r| {
                hashes
                    .iter()
                    .all(|h| r.versions.get(h).is_some_and(|v| v.endpoints.len() == 1))
            })
        })
        .await;
    assert_eq!(
        kubelet.running(),
        5,
        "2 stable, 1 canary (20 % of 2), 2 templates"
    );

    // After the duration: the pause step, the templates' traffic gone, their ReplicaSets deleted.
    let paused = until_object(
        &server,
        &rollout_key(),
        "the pause after the experiment",
        |r| r["status"]["currentStepIndex"] == 2 && r["status"]["phase"] == "Paused",
    )
    .await;
    assert_eq!(paused["status"]["experiment"]["phase"], "Successful");
    assert!(
        paused["status"]["dataPlane"]["traffic"]
            .get("additional")
            .is_none()
    );
    for template in ["baseline", "canary"] {
        let key = Key::new(REPLICA_SETS, "prod", &format!("{name}-{template}"));
        let start = Instant::now();
        while server.get(&key).is_some() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{template} not deleted: {:#}",
                server.get(&key).unwrap_or(Value::Null)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(kubelet.running(), 3, "the templates' pods are gone");
    source.stop().await;
}
