//! Blue/green promotion analysis through the Kubernetes driver, against the in-memory API server
//! and kubelet (`sluice_e2e::kube_api`, `sluice_e2e::kubelet`): the leader creates the
//! `<rollout>-<hash>-pre` / `-post` AnalysisRun objects, measures them (the `web` provider), writes
//! `status.blueGreen.{pre,post}PromotionAnalysisRunStatus`, and a failed post-promotion run puts
//! the active hosts back on the previous version, whose ReplicaSet kept its replicas.

#[path = "common/kube.rs"]
mod kube_common;

use kube_common::*;
use serde_json::{Value, json};
use sluice_e2e::{
    kube_api::{ApiServer, Key},
    kubelet::Kubelet,
};

/// Starts `sluice_k8s::run`, a blue/green rollout `demo` at v1 whose `analysis` field names the
/// template `ok` (the web provider asking an upstream that answers `answer`; `extra`: more fields
/// of the analysis), and changes the image to v2. Returns what the test needs; the upstream lives
/// as long as the returned guard.
async fn release(analysis: &str, answer: &str, extra: Value) -> Release {
    let upstream = sluice_e2e::upstream::Upstream::start(answer)
        .await
        .expect("upstream");
    let server = ApiServer::start().await.expect("api server");
    let kubelet = Kubelet::start(&server);
    for name in ["demo", "demo-preview"] {
        server.create("services", service(name)).expect("service");
    }
    server
        .create(
            "analysistemplates",
            ok_template(&format!("http://{}/", upstream.addr())),
        )
        .expect("template");
    let mut strategy = json!({"activeService": "demo", "previewService": "demo-preview",
                              "scaleDownDelaySeconds": 30, "abortScaleDownDelaySeconds": 0});
    strategy[analysis] = json!({"templates": [{"templateName": "ok"}]});
    if let (Some(fields), Some(extra)) = (strategy[analysis].as_object_mut(), extra.as_object()) {
        fields.extend(extra.clone());
    }
    server
        .create(
            "rollouts",
            json!({
                "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
                "metadata": {"name": "demo", "namespace": "prod"},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "demo"}},
                    "template": {"metadata": {"labels": {"app": "demo"}},
                                 "spec": {"containers": container("demo:v1")}},
                    "strategy": {"blueGreen": strategy}
                }
            }),
        )
        .expect("rollout");
    let source = start_source(&server);
    let v1 = until_object(&server, &rollout_key(), "v1 Healthy", |r| {
        r["status"]["phase"] == "Healthy" && r["status"]["stableRS"].is_string()
    })
    .await["status"]["stableRS"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    server
        .merge_patch(
            &rollout_key(),
            &json!({"spec": {"template": {"spec": {"containers": container("demo:v2")}}}}),
            false,
        )
        .expect("set image");
    let v2 = until_object(&server, &rollout_key(), "v2 created", |r| {
        r["status"]["currentPodHash"].is_string() && r["status"]["currentPodHash"] != v1.as_str()
    })
    .await["status"]["currentPodHash"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Release {
        server,
        _kubelet: kubelet,
        _upstream: upstream,
        source,
        v1,
        v2,
    }
}

struct Release {
    server: ApiServer,
    _kubelet: Kubelet,
    _upstream: sluice_e2e::upstream::Upstream,
    source: Source,
    v1: String,
    v2: String,
}

impl Release {
    /// The run `name`, once complete.
    async fn completed_run(&self, name: &str) -> Value {
        until_object(
            &self.server,
            &Key::new(ANALYSIS_RUNS, "prod", name),
            &format!("the AnalysisRun {name} complete"),
            |r| {
                matches!(
                    r["status"]["phase"].as_str(),
                    Some("Successful" | "Failed" | "Error" | "Inconclusive")
                )
            },
        )
        .await
    }

    async fn active_is(&mut self, hash: &str) {
        let found = tokio::time::timeout(
            WITHIN,
            self.source.rx.wait_for(|s| {
                s.rollouts
                    .get("prod/demo")
                    .is_some_and(|r| r.stable_hash == hash)
            }),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        assert!(
            found,
            "timed out waiting for the active hosts on {hash}: {:#?}",
            *self.source.rx.borrow()
        );
    }

    async fn stop(self) {
        self.source.stop().await;
    }
}

#[tokio::test]
async fn a_failed_post_promotion_run_switches_the_active_hosts_back() {
    let mut r = release("postPromotionAnalysis", r#"{"ok": 0}"#, json!({})).await;
    let name = format!("demo-{}-post", r.v2);
    let run = r.completed_run(&name).await;
    assert_eq!(run["status"]["phase"], "Failed", "{:#}", run["status"]);
    assert_eq!(run["metadata"]["ownerReferences"][0]["name"], "demo");
    assert_eq!(
        run["metadata"]["labels"]["rollouts-pod-template-hash"],
        r.v2
    );
    assert_eq!(run["metadata"]["labels"]["rollout-type"], "PostPromotion");
    let v1 = r.v1.clone();
    r.active_is(&v1).await;
    let rollout = until_object(&r.server, &rollout_key(), "aborted, back on v1", |o| {
        o["status"]["phase"] == "Degraded"
            && o["status"]["blueGreen"]["activeSelector"] == v1.as_str()
    })
    .await;
    let status = &rollout["status"];
    assert_eq!(status["abort"], true);
    assert_eq!(status["stableRS"], v1.as_str());
    assert_eq!(
        status["blueGreen"]["postPromotionAnalysisRunStatus"],
        json!({"name": name, "status": "Failed", "message": run["status"]["message"]}),
        "{status:#}"
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&name),
        "{status:#}"
    );
    // The previous version kept its replicas throughout.
    let v1_rs = r
        .server
        .get(&Key::new(REPLICA_SETS, "prod", &format!("demo-{v1}")))
        .expect("v1's ReplicaSet");
    assert_eq!(v1_rs["spec"]["replicas"], 2);
    assert_eq!(r.server.list(ANALYSIS_RUNS, Some("prod")).len(), 1);
    r.stop().await;
}

#[tokio::test]
async fn a_successful_pre_promotion_run_promotes() {
    // Argo's analysisRunMetadata lands on the run (a user's `rollout-type` does not replace
    // Sluice's), its dryRun rule in the run's spec.
    let extra = json!({
        "analysisRunMetadata": {"labels": {"team": "checkout", "rollout-type": "mine"},
                                "annotations": {"owner": "sre"}},
        "dryRun": [{"metricName": "ok"}]
    });
    let mut r = release("prePromotionAnalysis", r#"{"ok": 1}"#, extra).await;
    let name = format!("demo-{}-pre", r.v2);
    let run = r.completed_run(&name).await;
    assert_eq!(run["status"]["phase"], "Successful", "{:#}", run["status"]);
    assert_eq!(run["metadata"]["labels"]["rollout-type"], "PrePromotion");
    assert_eq!(run["metadata"]["labels"]["team"], "checkout", "{run:#}");
    assert_eq!(run["metadata"]["labels"]["sluice.dev/rollout"], "demo");
    assert_eq!(run["metadata"]["annotations"]["owner"], "sre", "{run:#}");
    assert_eq!(
        run["spec"]["dryRun"],
        json!([{"metricName": "ok"}]),
        "{run:#}"
    );
    assert_eq!(run["status"]["metricResults"][0]["dryRun"], true, "{run:#}");
    let v2 = r.v2.clone();
    r.active_is(&v2).await;
    let rollout = until_object(&r.server, &rollout_key(), "v2 Healthy", |o| {
        o["status"]["phase"] == "Healthy" && o["status"]["stableRS"] == v2.as_str()
    })
    .await;
    assert_eq!(
        rollout["status"]["blueGreen"]["prePromotionAnalysisRunStatus"]["status"],
        "Successful"
    );
    r.stop().await;
}
