//! The release engine's Kubernetes driver against the in-memory API server and kubelet
//! (`sluice_e2e::kube_api`, `sluice_e2e::kubelet`): a `sluice.dev` Rollout with a template is
//! released from ReplicaSets Sluice creates, through its steps, to promotion and scale-down,
//! with the traffic state following what the engine published.

#[path = "common/kube.rs"]
mod kube_common;

use std::time::{Duration, Instant};

use kube_common::*;
use serde_json::{Value, json};
use sluice_e2e::{
    kube_api::{ApiServer, Key},
    kubelet::Kubelet,
};
use sluice_k8s::TrafficState;
use tokio::sync::watch;

fn weight(state: &TrafficState) -> Option<(String, Option<String>, u32)> {
    state.rollouts.get("prod/demo").map(|r| {
        (
            r.stable_hash.clone(),
            r.canary_hash.clone(),
            r.canary_weight_bp,
        )
    })
}

#[tokio::test]
async fn a_template_change_is_released_through_the_steps_to_promotion_and_scale_down() {
    let server = ApiServer::start().await.expect("api server");
    let kubelet = Kubelet::start(&server);
    server.create("services", demo_service()).expect("service");
    let steps =
        json!([{"setWeight": 10}, {"pause": {"duration": "2"}}, {"setWeight": 50}, {"pause": {}}]);
    server
        .create("rollouts", demo_rollout(steps))
        .expect("rollout");
    let mut source = start_source(&server);

    // v1: its ReplicaSet at full scale, stable, no steps.
    let state = source
        .until("v1 stable with 2 endpoints", |s| {
            s.rollouts.get("prod/demo").is_some_and(|r| {
                r.versions
                    .get(&r.stable_hash)
                    .is_some_and(|v| v.endpoints.len() == 2)
            })
        })
        .await;
    let v1 = state.rollouts["prod/demo"].stable_hash.clone();
    assert_eq!(state.rollouts["prod/demo"].canary_hash, None);
    let v1_rs = Key::new(REPLICA_SETS, "prod", &format!("demo-{v1}"));
    let rs = server.get(&v1_rs).expect("v1 ReplicaSet");
    assert_eq!(rs["spec"]["replicas"], 2);
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Rollout");
    until_object(&server, &rollout_key(), "v1 Healthy", |r| {
        r["status"]["phase"] == "Healthy" && r["status"]["stableRS"] == v1.as_str()
    })
    .await;

    // `set image`: v2's ReplicaSet, 10 %, the timed pause, then 50 %, held at `pause: {}`.
    server
        .merge_patch(
            &rollout_key(),
            &json!({"spec": {"template": {"spec": {"containers": container("demo:v2")}}}}),
            false,
        )
        .expect("set image");
    let state = source
        .until("v2 at 10 %", |s| {
            weight(s).is_some_and(|(_, canary, w)| canary.is_some() && w == 1000)
        })
        .await;
    let at_10 = Instant::now();
    let v2 = state.rollouts["prod/demo"]
        .canary_hash
        .clone()
        .expect("canary");
    assert_ne!(v2, v1);
    assert_eq!(state.rollouts["prod/demo"].stable_hash, v1);
    let v2_rs = Key::new(REPLICA_SETS, "prod", &format!("demo-{v2}"));
    // ceil(2 × 10 / 100) = 1 canary pod; stable keeps its 2.
    assert_eq!(
        server.get(&v2_rs).expect("v2 ReplicaSet")["spec"]["replicas"],
        1
    );
    assert_eq!(server.get(&v1_rs).expect("v1")["spec"]["replicas"], 2);

    source
        .until("v2 at 50 %", |s| {
            weight(s).is_some_and(|(_, _, w)| w == 5000)
        })
        .await;
    // The pause's start is kept in whole seconds (metav1.Time, as Argo keeps it): a 2 s pause
    // lasts more than 1 s.
    assert!(
        at_10.elapsed() >= Duration::from_millis(1000),
        "the 2 s pause held: {:?}",
        at_10.elapsed()
    );
    let paused = until_object(&server, &rollout_key(), "Paused at step 3", |r| {
        r["status"]["phase"] == "Paused" && r["status"]["currentStepIndex"] == 3
    })
    .await;
    assert_eq!(
        paused["status"]["pauseConditions"][0]["reason"],
        "CanaryPauseStep"
    );
    // Still paused a while later: `pause: {}` waits for promote.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(weight(&source.rx.borrow()).map(|(_, _, w)| w), Some(5000));

    // `promote`, as Argo's plugin does it: clear the pause conditions.
    server
        .merge_patch(
            &rollout_key(),
            &json!({"status": {"pauseConditions": null}}),
            true,
        )
        .expect("promote");
    source
        .until("v2 stable", |s| {
            weight(s).is_some_and(|(stable, canary, _)| stable == v2 && canary.is_none())
        })
        .await;
    let promoted_at = Instant::now();
    until_object(&server, &v1_rs, "v1 scaled to 0", |rs| {
        rs["spec"]["replicas"] == 0
    })
    .await;
    assert!(
        promoted_at.elapsed() >= Duration::from_millis(500),
        "v1 kept its pods for scaleDownDelaySeconds: {:?}",
        promoted_at.elapsed()
    );
    let done = until_object(&server, &rollout_key(), "v2 Healthy", |r| {
        r["status"]["phase"] == "Healthy" && r["status"]["stableRS"] == v2.as_str()
    })
    .await;
    assert_eq!(done["status"]["currentPodHash"], v2.as_str());
    assert_eq!(server.get(&v2_rs).expect("v2")["spec"]["replicas"], 2);
    assert_eq!(kubelet.running(), 2, "v1's pods are gone, v2's run");
    source.stop().await;
}

#[tokio::test]
async fn a_control_plane_restart_mid_canary_keeps_the_step_and_writes_nothing() {
    let server = ApiServer::start().await.expect("api server");
    let _kubelet = Kubelet::start(&server);
    server.create("services", demo_service()).expect("service");
    let steps = json!([{"setWeight": 20}, {"pause": {}}]);
    server
        .create("rollouts", demo_rollout(steps))
        .expect("rollout");
    let mut source = start_source(&server);
    source
        .until("v1 stable", |s| s.rollouts.contains_key("prod/demo"))
        .await;
    server
        .merge_patch(
            &rollout_key(),
            &json!({"spec": {"template": {"spec": {"containers": container("demo:v2")}}}}),
            false,
        )
        .expect("set image");
    let before = source
        .until("canary at 20 %", |s| {
            weight(s).is_some_and(|(_, _, w)| w == 2000)
        })
        .await;
    until_object(&server, &rollout_key(), "Paused", |r| {
        r["status"]["phase"] == "Paused"
    })
    .await;
    // Paused can be written before the kubelet's last pod readiness reaches the ReplicaSet
    // status (and so the Rollout's counts): stop only once the Rollout is quiet.
    let resource_version =
        || server.get(&rollout_key()).expect("rollout")["metadata"]["resourceVersion"].clone();
    let mut quiet = false;
    for _ in 0..40 {
        let seen = resource_version();
        tokio::time::sleep(Duration::from_millis(300)).await;
        if resource_version() == seen {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "the Rollout kept changing while Paused");
    source.stop().await;

    // A new control plane: the same step and weight, no new ReplicaSet, no status rewrite.
    let rs_before = server.list(REPLICA_SETS, Some("prod")).len();
    let stopped = server.get(&rollout_key()).expect("rollout");
    let rollout_rv = stopped["metadata"]["resourceVersion"].clone();
    let mut source = start_source(&server);
    let after = source
        .until("served again", |s| s.rollouts.contains_key("prod/demo"))
        .await;
    assert_eq!(after.rollouts["prod/demo"], before.rollouts["prod/demo"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.list(REPLICA_SETS, Some("prod")).len(), rs_before);
    let now = server.get(&rollout_key()).expect("rollout");
    assert_eq!(
        now["metadata"]["resourceVersion"], rollout_rv,
        "an unchanged release writes nothing: {:#}\n-> {:#}",
        stopped["status"], now["status"]
    );
    source.stop().await;
}

/// A status computed from a stale view must not overwrite a newer one: the user's `abort`
/// (a status patch, as Argo's plugin makes it) written after the controller read the Rollout
/// survives the controller's write, which the API server refuses on its resourceVersion.
#[tokio::test]
async fn a_status_write_from_a_stale_view_is_refused_and_loses_no_command() {
    let server = ApiServer::start().await.expect("api server");
    let created = server
        .create("rollouts", demo_rollout(json!([{"pause": {}}])))
        .expect("rollout");
    let read_at = created["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_owned();
    server
        .merge_patch(&rollout_key(), &json!({"status": {"abort": true}}), true)
        .expect("abort");
    let (_leader, is_leader) = watch::channel(true);
    let object = sluice_k8s::RolloutRef::new(sluice_k8s::RolloutApi::Sluice, "prod", "demo");
    let stale = sluice_api::RolloutStatus::default();
    let computed = sluice_api::RolloutStatus {
        phase: Some("Paused".into()),
        ..Default::default()
    };
    let error = sluice_k8s::watch::write_status(
        &client(&server),
        &is_leader,
        &object,
        Some(&read_at),
        &stale,
        &computed,
    )
    .await
    .expect_err("a stale write is refused");
    assert!(sluice_k8s::status_writer::is_conflict(&error), "{error}");
    let now = server.get(&rollout_key()).expect("rollout");
    assert_eq!(now["status"]["abort"], true, "the user's abort is kept");
}

/// `sluice rollouts restart` (Argo's `spec.restartAt`): every pod is evicted and re-created by its
/// ReplicaSet (one at a time: the engine tests), without a new version or the steps; `status.restartedAt` records
/// the restart once every pod is newer.
#[tokio::test]
async fn a_restart_recreates_every_pod_without_a_new_version_and_is_recorded() {
    let server = ApiServer::start().await.expect("api server");
    let _kubelet = Kubelet::start(&server);
    server.create("services", demo_service()).expect("service");
    server
        .create("rollouts", demo_rollout(json!([{"setWeight": 50}])))
        .expect("rollout");
    let source = start_source(&server);
    until_object(&server, &rollout_key(), "v1 Healthy", |r| {
        r["status"]["phase"] == "Healthy" && r["status"]["availableReplicas"] == 2
    })
    .await;
    let pod_names = || -> Vec<String> {
        server
            .list("/v1/pods", Some("prod"))
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    };
    let before = pod_names();
    assert_eq!(before.len(), 2, "{before:?}");
    let rs_before = server.list(REPLICA_SETS, Some("prod")).len();
    // Whole seconds, as Argo's plugin writes it; the pods were created before it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let restart_at = k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .expect("round")
        .to_string();
    server
        .merge_patch(
            &rollout_key(),
            &json!({"spec": {"restartAt": restart_at}}),
            false,
        )
        .expect("restart");
    let done = until_object(&server, &rollout_key(), "restartedAt", |r| {
        r["status"]["restartedAt"] == restart_at.as_str()
    })
    .await;
    let after = pod_names();
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "every pod re-created: {before:?} -> {after:?}"
    );
    assert_eq!(
        server.list(REPLICA_SETS, Some("prod")).len(),
        rs_before,
        "no new version"
    );
    assert_eq!(done["status"]["phase"], "Healthy");
    assert_eq!(
        done["status"]["stableRS"], done["status"]["currentPodHash"],
        "no canary"
    );
    source.stop().await;
}

/// Releases v2 through `setWeight: 50` then an analysis step on `ok`, with the web provider
/// answering `answer`; returns the run's object once complete, the server, the source and v1's
/// and v2's hashes.
async fn release_with_analysis(
    answer: &str,
) -> (ApiServer, Kubelet, Source, Value, String, String) {
    release_with_template(
        answer,
        |_| {},
        |url| {
            (
                "analysistemplates",
                ok_template(url),
                json!({"templateName": "ok"}),
            )
        },
    )
    .await
}

/// [`release_with_analysis`] with the template `template(url)` gives (its resource, the object,
/// the step's reference to it), after `prepare` ran on the fresh server.
async fn release_with_template(
    answer: &str,
    prepare: impl FnOnce(&ApiServer),
    template: impl FnOnce(&str) -> (&'static str, Value, Value),
) -> (ApiServer, Kubelet, Source, Value, String, String) {
    let upstream = sluice_e2e::upstream::Upstream::start(answer)
        .await
        .expect("upstream");
    let server = ApiServer::start().await.expect("api server");
    prepare(&server);
    let kubelet = Kubelet::start(&server);
    server.create("services", demo_service()).expect("service");
    let (resource, object, reference) = template(&format!("http://{}/", upstream.addr()));
    server.create(resource, object).expect("template");
    let steps = json!([{"setWeight": 50}, {"analysis": {"templates": [reference]}},
                       {"setWeight": 80}]);
    server
        .create("rollouts", demo_rollout(steps))
        .expect("rollout");
    let mut source = start_source(&server);
    let state = source
        .until("v1 stable", |s| s.rollouts.contains_key("prod/demo"))
        .await;
    let v1 = state.rollouts["prod/demo"].stable_hash.clone();
    server
        .merge_patch(
            &rollout_key(),
            &json!({"spec": {"template": {"spec": {"containers": container("demo:v2")}}}}),
            false,
        )
        .expect("set image");
    let state = source
        .until("v2 at 50 %", |s| {
            weight(s).is_some_and(|(_, canary, w)| canary.is_some() && w == 5000)
        })
        .await;
    let v2 = state.rollouts["prod/demo"]
        .canary_hash
        .clone()
        .expect("canary");
    let run_key = Key::new(ANALYSIS_RUNS, "prod", &format!("demo-{v2}-1"));
    let run = until_object(&server, &run_key, "the AnalysisRun complete", |r| {
        matches!(
            r["status"]["phase"].as_str(),
            Some("Successful" | "Failed" | "Error" | "Inconclusive")
        )
    })
    .await;
    assert!(upstream.requests() >= 1, "the web provider was asked");
    drop(upstream);
    (server, kubelet, source, run, v1, v2)
}

fn assert_owned_and_labelled(run: &Value, v2: &str) {
    assert_eq!(run["metadata"]["ownerReferences"][0]["kind"], "Rollout");
    assert_eq!(run["metadata"]["ownerReferences"][0]["name"], "demo");
    assert_eq!(run["metadata"]["labels"]["sluice.dev/rollout"], "demo");
    assert_eq!(run["metadata"]["labels"]["rollouts-pod-template-hash"], v2);
}

#[tokio::test]
async fn a_successful_analysis_run_is_written_to_its_object_and_the_rollout_goes_on() {
    let (server, _kubelet, mut source, run, _v1, v2) = release_with_analysis(r#"{"ok": 1}"#).await;
    assert_eq!(run["status"]["phase"], "Successful", "{:#}", run["status"]);
    assert_owned_and_labelled(&run, &v2);
    let metric = &run["status"]["metricResults"][0];
    assert_eq!(metric["name"], "ok");
    assert_eq!(metric["phase"], "Successful");
    assert_eq!(metric["measurements"][0]["value"], "1", "{metric:#}");
    assert_eq!(metric["measurements"][0]["phase"], "Successful");
    // The step after the analysis, then promotion.
    source
        .until("v2 stable", |s| {
            weight(s).is_some_and(|(stable, canary, _)| stable == v2 && canary.is_none())
        })
        .await;
    until_object(&server, &rollout_key(), "v2 Healthy", |r| {
        r["status"]["phase"] == "Healthy" && r["status"]["stableRS"] == v2.as_str()
    })
    .await;
    assert_eq!(server.list(ANALYSIS_RUNS, Some("prod")).len(), 1, "one run");
    source.stop().await;
}

#[tokio::test]
async fn a_failed_analysis_run_aborts_the_rollout_to_stable() {
    let (server, _kubelet, mut source, run, v1, v2) = release_with_analysis(r#"{"ok": 0}"#).await;
    assert_eq!(run["status"]["phase"], "Failed", "{:#}", run["status"]);
    assert_owned_and_labelled(&run, &v2);
    assert_eq!(
        run["status"]["metricResults"][0]["measurements"][0]["value"],
        "0"
    );
    source
        .until("all traffic to v1", |s| {
            weight(s).is_some_and(|(stable, _, w)| stable == v1 && w == 0)
        })
        .await;
    let rollout = until_object(&server, &rollout_key(), "Degraded", |r| {
        r["status"]["phase"] == "Degraded"
    })
    .await;
    let message = rollout["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("demo-{v2}-1")), "{message}");
    assert_eq!(server.list(ANALYSIS_RUNS, Some("prod")).len(), 1, "one run");
    source.stop().await;
}

/// A control plane restarted while a run measures resumes that run from its object (its spec and
/// kept measurements): no second run, no measurement lost or repeated, and the rollout goes on.
#[tokio::test]
async fn a_restarted_control_plane_resumes_a_running_analysis_run() {
    let upstream = sluice_e2e::upstream::Upstream::start(r#"{"ok": 1}"#)
        .await
        .expect("upstream");
    let server = ApiServer::start().await.expect("api server");
    let _kubelet = Kubelet::start(&server);
    server.create("services", demo_service()).expect("service");
    let mut template = ok_template(&format!("http://{}/", upstream.addr()));
    template["spec"]["metrics"][0]["interval"] = json!("1s");
    template["spec"]["metrics"][0]["count"] = json!(3);
    server
        .create("analysistemplates", template)
        .expect("template");
    let steps = json!([{"setWeight": 50}, {"analysis": {"templates": [{"templateName": "ok"}]}}]);
    server
        .create("rollouts", demo_rollout(steps))
        .expect("rollout");
    let mut source = start_source(&server);
    source
        .until("v1 stable", |s| s.rollouts.contains_key("prod/demo"))
        .await;
    server
        .merge_patch(
            &rollout_key(),
            &json!({"spec": {"template": {"spec": {"containers": container("demo:v2")}}}}),
            false,
        )
        .expect("set image");
    let state = source
        .until("v2 at 50 %", |s| {
            weight(s).is_some_and(|(_, _, w)| w == 5000)
        })
        .await;
    let v2 = state.rollouts["prod/demo"]
        .canary_hash
        .clone()
        .expect("canary");
    let run_key = Key::new(ANALYSIS_RUNS, "prod", &format!("demo-{v2}-1"));
    until_object(&server, &run_key, "the first measurement", |r| {
        r["status"]["metricResults"][0]["count"] == 1
    })
    .await;
    source.stop().await;
    let kept = server.get(&run_key).expect("run");
    assert_eq!(kept["status"]["phase"], "Running", "{:#}", kept["status"]);

    let mut source = start_source(&server);
    let run = until_object(&server, &run_key, "the run Successful", |r| {
        r["status"]["phase"] == "Successful"
    })
    .await;
    let metric = &run["status"]["metricResults"][0];
    assert_eq!(metric["count"], 3, "{metric:#}");
    assert_eq!(metric["measurements"].as_array().map(Vec::len), Some(3));
    assert_eq!(server.list(ANALYSIS_RUNS, Some("prod")).len(), 1, "one run");
    source
        .until("v2 stable", |s| {
            weight(s).is_some_and(|(stable, canary, _)| stable == v2 && canary.is_none())
        })
        .await;
    source.stop().await;
}

/// A step naming a `ClusterAnalysisTemplate` (`clusterScope: true`) reads the cluster-scoped
/// template (no namespaced one of that name exists) and runs it.
#[tokio::test]
async fn a_step_naming_a_cluster_analysis_template_runs_it() {
    let (server, _kubelet, source, run, _v1, v2) = release_with_template(
        r#"{"ok": 1}"#,
        |_| {},
        |url| {
            let mut template = ok_template(url);
            template["kind"] = json!("ClusterAnalysisTemplate");
            template["metadata"] = json!({"name": "ok"});
            (
                "clusteranalysistemplates",
                template,
                json!({"templateName": "ok", "clusterScope": true}),
            )
        },
    )
    .await;
    assert!(
        server
            .list("sluice.dev/v1alpha1/analysistemplates", None)
            .is_empty(),
        "only the cluster-scoped template exists"
    );
    assert_eq!(run["status"]["phase"], "Successful", "{:#}", run["status"]);
    assert_owned_and_labelled(&run, &v2);
    source.stop().await;
}

/// Argo Rollouts' own `argoproj.io/v1alpha1` AnalysisTemplate, as users have it, runs.
#[tokio::test]
async fn an_argoproj_analysis_template_runs() {
    let (server, _kubelet, source, run, _v1, v2) = release_with_template(
        r#"{"ok": 1}"#,
        |_| {},
        |url| {
            let mut template = ok_template(url);
            template["apiVersion"] = json!("argoproj.io/v1alpha1");
            ("analysistemplates", template, json!({"templateName": "ok"}))
        },
    )
    .await;
    assert!(
        server
            .list("sluice.dev/v1alpha1/analysistemplates", None)
            .is_empty(),
        "only the argoproj.io template exists"
    );
    assert_eq!(run["status"]["phase"], "Successful", "{:#}", run["status"]);
    assert_eq!(
        run["status"]["metricResults"][0]["measurements"][0]["value"],
        "1"
    );
    assert_owned_and_labelled(&run, &v2);
    source.stop().await;
}

/// The run's final status write is lost (the API server answers 500): the leader writes it
/// again, so the object ends Successful rather than Running for good.
#[tokio::test]
async fn a_lost_final_analysis_run_status_write_is_retried() {
    let (server, _kubelet, source, run, _v1, _v2) = release_with_template(
        r#"{"ok": 1}"#,
        |server| {
            server.shared().write(|s| {
                s.fail_status_patches(ANALYSIS_RUNS, r#""phase":"Successful""#, 1);
            });
        },
        |url| {
            (
                "analysistemplates",
                ok_template(url),
                json!({"templateName": "ok"}),
            )
        },
    )
    .await;
    assert_eq!(run["status"]["phase"], "Successful", "{:#}", run["status"]);
    assert_eq!(
        run["status"]["metricResults"][0]["measurements"][0]["value"],
        "1"
    );
    assert_eq!(
        server.shared().store().pending_faults(),
        0,
        "the final write was refused once"
    );
    source.stop().await;
}
