use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::Pod};
use serde_json::{Value, json};
use sluice_api::Rollout;

use super::*;

fn rollout() -> Rollout {
    serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "demo", "namespace": "shop", "uid": "uid-1", "generation": 3},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "demo"}},
            "template": {"metadata": {"labels": {"app": "demo"}},
                         "spec": {"containers": [{"name": "app", "image": "app:2"}]}},
            "strategy": {"canary": {"steps": [
                {"setWeight": 10},
                {"pause": {}},
                {"setWeight": 50},
                {"pause": {"duration": "30s"}},
                {"setHeaderRoute": {"name": "beta", "match": [
                    {"headerName": "x-beta", "headerValue": {"exact": "1"}}]}}
            ]}}
        },
        "status": {
            "phase": "Paused", "message": "CanaryPauseStep",
            "observedGeneration": "3",
            "stableRS": "aaa", "currentPodHash": "bbb", "currentStepIndex": 1,
            "canary": {"weights": {"canary": {"podTemplateHash": "bbb", "weight": 10},
                                   "stable": {"podTemplateHash": "aaa", "weight": 90}}},
            "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-11-30T09:00:00Z"}],
            "controllerPause": true,
            "replicas": 3, "updatedReplicas": 1, "readyReplicas": 3, "availableReplicas": 3,
            "dataPlane": {"generation": 4, "traffic": {"stable": "aaa", "canary": "bbb", "canaryWeight": 10},
                          "acknowledged": 1, "proxies": 2,
                          "message": "proxy gw-2 has not acknowledged generation 4 for 12s"},
            "conditions": [
                {"type": "Available", "status": "True", "reason": "AvailableReason",
                 "message": "Rollout has minimum availability"},
                {"type": "Paused", "status": "True", "reason": "CanaryPauseStep"}
            ]
        }
    }))
    .expect("rollout")
}

fn replica_set(
    hash: &str,
    revision: &str,
    image: &str,
    replicas: i32,
    available: i32,
) -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {"name": format!("demo-{hash}"),
                     "labels": {"app": "demo", "rollouts-pod-template-hash": hash},
                     "annotations": {"rollout.sluice.dev/revision": revision},
                     "ownerReferences": [{"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
                                          "name": "demo", "uid": "uid-1", "controller": true}]},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "demo"}},
                 "template": {"metadata": {"labels": {"app": "demo", "rollouts-pod-template-hash": hash}},
                              "spec": {"containers": [{"name": "app", "image": image}]}}},
        "status": {"replicas": replicas, "readyReplicas": available, "availableReplicas": available}
    }))
    .expect("replica set")
}

fn pod(name: &str, hash: &str, status: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "demo", "rollouts-pod-template-hash": hash}},
        "spec": {"containers": [{"name": "app"}]},
        "status": status
    }))
    .expect("pod")
}

fn running(restarts: i32) -> Value {
    json!({"phase": "Running", "containerStatuses": [{"name": "app", "ready": true, "image": "x",
           "imageID": "", "restartCount": restarts, "state": {"running": {}}}]})
}

#[test]
fn get_shows_steps_weights_gate_revisions_pods_and_conditions() {
    let sets = vec![
        replica_set("aaa", "1", "app:1", 2, 2),
        replica_set("bbb", "2", "app:2", 1, 1),
        // Another owner's ReplicaSet with matching labels is not shown.
        {
            let mut rs = replica_set("zzz", "9", "other:1", 1, 1);
            rs.metadata.owner_references = None;
            rs
        },
    ];
    let pods = vec![
        pod("demo-aaa-1", "aaa", running(0)),
        pod("demo-aaa-2", "aaa", running(2)),
        pod("demo-bbb-1", "bbb", running(0)),
    ];
    let info = RolloutInfo::from_kubernetes(rollout(), &sets, &pods);
    let expected = "\
Name:            demo
Namespace:       shop
Status:          ॥ Paused
Message:         CanaryPauseStep
Strategy:        Canary
  Step:          1/5
  SetWeight:     10
  ActualWeight:  10
Steps:
  ✔  0  setWeight: 10
  ►  1  pause: {}
     2  setWeight: 50
     3  pause: {duration: 30s}
     4  setHeaderRoute: beta (x-beta)
Data plane:      generation 4: stable aaa, canary bbb at 10%
  Acknowledged:  ◌ 1 of 2 proxies
  Message:       ⚠ proxy gw-2 has not acknowledged generation 4 for 12s
Images:          app:2 (canary)
                 app:1 (stable)
Replicas:
  Desired:       2
  Current:       3
  Updated:       1
  Ready:         3
  Available:     3

NAME                   KIND        STATUS     INFO
⟳ demo                 Rollout     ॥ Paused
├──# revision:2
│  └──⧉ demo-bbb       ReplicaSet  ✔ Healthy  canary  desired:1 ready:1 available:1
│     └──□ demo-bbb-1  Pod         ✔ Running  ready:1/1
└──# revision:1
   └──⧉ demo-aaa       ReplicaSet  ✔ Healthy  stable  desired:2 ready:2 available:2
      ├──□ demo-aaa-1  Pod         ✔ Running  ready:1/1
      └──□ demo-aaa-2  Pod         ✔ Running  ready:1/1,restarts:2

Conditions:
  Available  True     AvailableReason: Rollout has minimum availability
  Paused     True     CanaryPauseStep
";
    let got = render(&info);
    assert_eq!(got, expected, "\n{got}");
}

#[test]
fn the_standalone_view_shows_versions_with_their_endpoints() {
    use sluice_proto::admin::v1::{RolloutView, VersionView};
    let mut doc = rollout();
    doc.spec.template = None;
    if let Some(status) = doc.status.as_mut() {
        status.data_plane = None;
        status.conditions.clear();
    }
    let view = RolloutView {
        rollout: "shop/demo".into(),
        rollout_json: serde_json::to_string(&doc).expect("json"),
        versions: vec![
            VersionView {
                hash: "aaa".into(),
                revision: 1,
                desired: 1,
                ready: 1,
                available: 1,
                endpoints: vec!["127.0.0.1:8001".into()],
            },
            VersionView {
                hash: "bbb".into(),
                revision: 2,
                desired: 1,
                ready: 0,
                available: 0,
                endpoints: vec!["127.0.0.1:8002".into(), "127.0.0.1:8003".into()],
            },
        ],
        analysis_runs_json: String::new(),
    };
    let info = RolloutInfo::from_admin(&view).expect("view");
    let got = render(&info);
    let tree = &got[got.find("NAME").expect("tree")..];
    let expected = "\
NAME                       KIND      STATUS         INFO
⟳ demo                     Rollout   ॥ Paused
├──# revision:2
│  └──⧉ bbb                Version   ◌ Progressing  canary  desired:1 ready:0 available:0
│     ├──◦ 127.0.0.1:8002  Endpoint
│     └──◦ 127.0.0.1:8003  Endpoint
└──# revision:1
   └──⧉ aaa                Version   ✔ Healthy      stable  desired:1 ready:1 available:1
      └──◦ 127.0.0.1:8001  Endpoint
";
    assert_eq!(tree, expected, "\n{got}");
    assert!(
        !got.contains("Images:"),
        "no images in standalone mode:\n{got}"
    );
}

#[test]
fn phase_is_read_as_argo_reads_it() {
    let mut ro = rollout();
    assert_eq!(phase(&ro), ("Paused", "CanaryPauseStep".to_owned()));
    // A promote cleared the pause conditions; the controller has not seen it yet.
    if let Some(s) = ro.status.as_mut() {
        s.pause_conditions.clear();
    }
    assert_eq!(
        phase(&ro),
        ("Progressing", "waiting for rollout to unpause".to_owned())
    );
    // A new spec the controller has not observed.
    ro.metadata.generation = Some(4);
    assert_eq!(
        phase(&ro).1,
        "waiting for rollout spec update to be observed"
    );
    let mut degraded = rollout();
    if let Some(s) = degraded.status.as_mut() {
        s.phase = None;
        s.conditions = vec![sluice_api::resource::RolloutCondition {
            type_: "InvalidSpec".into(),
            status: "True".into(),
            message: Some("spec.replicas: -1 is negative".into()),
            ..Default::default()
        }];
    }
    assert_eq!(
        phase(&degraded),
        (
            "Degraded",
            "InvalidSpec: spec.replicas: -1 is negative".to_owned()
        )
    );
}

#[test]
fn list_shows_one_line_per_rollout_with_its_group() {
    let mut argo = rollout();
    argo.metadata.name = Some("legacy".into());
    if let Some(s) = argo.status.as_mut() {
        s.current_step_index = Some(5);
        s.phase = Some("Healthy".into());
        s.controller_pause = false;
    }
    let table = list_table(&[
        ("sluice.dev".into(), rollout()),
        ("argoproj.io".into(), argo),
    ]);
    let expected = "\
NAME    API          STRATEGY  STATUS   STEP  SET-WEIGHT  READY  DESIRED  UP-TO-DATE  AVAILABLE
demo    sluice.dev   Canary    Paused   1/5   10          3      2        1           3
legacy  argoproj.io  Canary    Healthy  5/5   100         3      2        1           3
";
    assert_eq!(table, expected, "\n{table}");
}

#[test]
fn pods_show_waiting_reasons_and_termination() {
    let crash = pod(
        "p",
        "aaa",
        json!({"phase": "Running", "containerStatuses": [{"name": "app", "ready": false,
               "image": "x", "imageID": "", "restartCount": 4,
               "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
    );
    let info = pod_info(&crash);
    assert_eq!(
        (info.status.as_str(), info.ready_containers, info.restarts),
        ("CrashLoopBackOff", 0, 4)
    );
    let mut gone = pod("q", "aaa", running(0));
    gone.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-30T09:00:00Z".parse().expect("time"),
    ));
    assert_eq!(pod_info(&gone).status, "Terminating");
}

#[test]
fn the_standalone_view_shows_analysis_runs_with_their_last_values() {
    use sluice_proto::admin::v1::RolloutView;
    let runs = serde_json::json!([{
        "name": "demo-bbb-1",
        "status": {
            "phase": "Failed",
            "message": "Metric \"success-rate\" assessed Failed due to failed (1) > failureLimit (0)",
            "metricResults": [{
                "name": "success-rate",
                "phase": "Failed",
                "count": 2, "successful": 1, "failed": 1,
                "measurements": [
                    {"phase": "Successful", "value": "[0.99]"},
                    {"phase": "Failed", "value": "[0.8]"}
                ]
            }]
        }
    }]);
    let view = RolloutView {
        rollout: "shop/demo".into(),
        rollout_json: serde_json::to_string(&rollout()).expect("json"),
        versions: Vec::new(),
        analysis_runs_json: runs.to_string(),
    };
    let info = RolloutInfo::from_admin(&view).expect("view");
    assert_eq!(info.analysis_runs.len(), 1);
    let got = render(&info);
    assert!(
        got.contains(
            "AnalysisRuns:\n  ✖ demo-bbb-1  Failed  Metric \"success-rate\" assessed Failed"
        ),
        "\n{got}"
    );
    assert!(
        got.contains("      success-rate  Failed  ✔ 1 ✖ 1 ? 0 ⚠ 0  last: [0.99], [0.8]\n"),
        "\n{got}"
    );
    // Without runs, no section.
    let plain = RolloutView {
        analysis_runs_json: String::new(),
        ..view
    };
    let got = render(&RolloutInfo::from_admin(&plain).expect("view"));
    assert!(!got.contains("AnalysisRuns:"), "\n{got}");
}

#[test]
fn get_shows_blue_green_active_and_preview() {
    let mut doc = rollout();
    doc.spec.strategy = serde_json::from_value(json!({"blueGreen": {
        "activeService": "demo-active", "previewService": "demo-preview",
        "autoPromotionEnabled": false}}))
    .expect("strategy");
    let status = doc.status.as_mut().expect("status");
    status.message = Some("BlueGreenPause".into());
    status.current_step_index = None;
    status.canary = None;
    status.blue_green = Some(sluice_api::bluegreen::BlueGreenStatus {
        active_selector: Some("aaa".into()),
        preview_selector: Some("bbb".into()),
        ..Default::default()
    });
    let dp = status.data_plane.as_mut().expect("data plane");
    dp.traffic.canary = None;
    dp.traffic.canary_weight = 0;
    dp.traffic.preview = Some("bbb".into());
    let info = RolloutInfo::from_kubernetes(
        doc.clone(),
        &[
            replica_set("aaa", "1", "app:1", 2, 2),
            replica_set("bbb", "2", "app:2", 2, 2),
        ],
        &[],
    );
    let got = render(&info);
    for line in [
        "Strategy:        BlueGreen\n  Active:        aaa\n  Preview:       bbb\n",
        "Data plane:      generation 4: stable aaa, preview bbb\n",
        "Images:          app:2 (preview)\n                 app:1 (stable, active)\n",
        "demo-bbb  ReplicaSet  ✔ Healthy  preview  desired:2",
        "demo-aaa  ReplicaSet  ✔ Healthy  stable  active  desired:2",
    ] {
        assert!(got.contains(line), "missing {line:?} in\n{got}");
    }
    assert!(!got.contains("canary"), "{got}");
    assert!(!got.contains("  Step:"), "{got}");
    assert!(!got.contains("Promotion:"), "no runs, no lines: {got}");
    // The promotion analyses' runs, as status.blueGreen names them.
    let mut with_runs = info.clone();
    let bg = with_runs
        .rollout
        .status
        .as_mut()
        .and_then(|s| s.blue_green.as_mut())
        .expect("blueGreen status");
    bg.pre_promotion_analysis_run_status = Some(sluice_api::bluegreen::RolloutAnalysisRunStatus {
        name: "demo-bbb-pre".into(),
        status: "Successful".into(),
        message: String::new(),
    });
    bg.post_promotion_analysis_run_status = Some(sluice_api::bluegreen::RolloutAnalysisRunStatus {
        name: "demo-bbb-post".into(),
        status: "Running".into(),
        message: String::new(),
    });
    let got = render(&with_runs);
    for line in [
        "  Preview:       bbb\n  PrePromotion:  demo-bbb-pre  ✔ Successful\n",
        "  PostPromotion: demo-bbb-post  ✔ Running\n",
    ] {
        assert!(got.contains(line), "missing {line:?} in\n{got}");
    }
    let table = list_table(&[("sluice.dev".into(), doc)]);
    assert!(table.contains("BlueGreen"), "{table}");
}

#[test]
fn get_shows_the_rollouts_experiments_with_their_templates() {
    let mut info = RolloutInfo::from_kubernetes(rollout(), &[], &[]);
    let status: sluice_api::experiment_object::ExperimentStatus = serde_json::from_value(json!({
        "phase": "Failed", "message": "AnalysisRun demo-bbb-1-compare Failed",
        "templateStatuses": [{"name": "baseline", "podTemplateHash": "ccc", "replicas": 1,
                              "availableReplicas": 1}]
    }))
    .expect("status");
    info.experiments = vec![("demo-bbb-1".into(), status)];
    let got = render(&info);
    assert!(
        got.contains(
            "Experiments:\n  ✖ demo-bbb-1  Failed  AnalysisRun demo-bbb-1-compare Failed\n      baseline  ccc  1/1 available\n"
        ),
        "\n{got}"
    );
    info.experiments.clear();
    assert!(!render(&info).contains("Experiments:"));
}
